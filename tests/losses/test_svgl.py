"""SVGL: identity forward, gradient scaled by the weight map."""
import pytest
import torch

from losses.svgl import svgl


def _inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=dtype)
    M = torch.rand(2, 1, 8, 8, generator=g, dtype=dtype)
    upstream = torch.randn(2, 3, 8, 8, generator=g, dtype=dtype)
    return x, M, upstream


def test_forward_returns_input_exactly():
    x, M, _ = _inputs()
    x.requires_grad_(True)
    y = svgl(x, M)
    assert torch.equal(y, x) and y.dtype == x.dtype and y.shape == x.shape
    assert y.grad_fn is not None  # recorded in the graph, not short-circuited


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_input_gradient_is_upstream_times_map(dtype):
    x, M, upstream = _inputs(dtype)
    x.requires_grad_(True)
    M.requires_grad_(True)  # the map must still get no gradient
    svgl(x, M).backward(upstream)
    assert torch.equal(x.grad, upstream * M)  # broadcast over the 3 channels
    assert M.grad is None


def test_gradient_through_a_downstream_loss():
    x, M, _ = _inputs(torch.float64)
    x.requires_grad_(True)
    (svgl(x, M) ** 3).sum().backward()
    assert torch.allclose(x.grad, 3 * x.detach() ** 2 * M)


def test_double_backward_treats_svgl_as_diag_map():
    # L = sum(y^2), y = svgl(x): dL/dx = 2 y M; d/dx sum(2 y M) = 2 M * M (documented behaviour).
    x, M, _ = _inputs(torch.float64)
    x.requires_grad_(True)
    y = svgl(x, M)
    (g,) = torch.autograd.grad((y ** 2).sum(), x, create_graph=True)
    assert torch.allclose(g, 2 * x.detach() * M)
    g.sum().backward()
    assert torch.allclose(x.grad, 2 * M * M)


def test_rejects_a_map_that_does_not_broadcast():
    x, _, _ = _inputs()
    with pytest.raises(ValueError, match='does not broadcast'):
        svgl(x, torch.ones(2, 1, 4, 4))
