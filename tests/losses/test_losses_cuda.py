"""CUDA checks for the loss helpers (skipped without a GPU): same results as on the CPU."""
import pytest
import torch

from losses.adversarial import PathLengthRegularizer
from losses.svgl import svgl
from losses.weight_maps import ConfidenceMap, reverse_weight_map

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


def test_confidence_map_on_cuda_matches_cpu():
    mask = torch.zeros(2, 1, 128, 128)
    mask[0, :, 30:100, 20:90] = 1
    mask[1, :, 10:120, 60:70] = 1
    cm = ConfidenceMap()
    cpu = cm(mask)
    gpu = cm.to('cuda')(mask.cuda())
    assert gpu.device.type == 'cuda' and cm.kernel_1d.device.type == 'cuda'
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-5)
    assert torch.allclose(reverse_weight_map(mask.cuda(), gpu).cpu(),
                          reverse_weight_map(mask, cpu), atol=1e-4)


def test_svgl_and_path_length_on_cuda():
    x = torch.randn(2, 3, 8, 8, device='cuda', requires_grad=True)
    M = torch.rand(2, 1, 8, 8, device='cuda')
    g = torch.randn(2, 3, 8, 8, device='cuda')
    svgl(x, M).backward(g)
    assert torch.equal(x.grad, g * M)

    reg = PathLengthRegularizer().cuda()
    A = torch.randn(3, 5, 3, 4, 4, device='cuda')
    w = torch.randn(2, 3, 5, device='cuda', requires_grad=True)
    penalty, mean, lengths = reg(torch.einsum('bid,idchw->bchw', w, A), w)
    assert reg.mean_path_length.device.type == 'cuda'
    assert torch.allclose(mean, 0.01 * lengths.mean())
