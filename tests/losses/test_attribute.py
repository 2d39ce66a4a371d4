"""Attribute loss: MSE of style codes, optional slot subset phi."""
import pytest
import torch
import torch.nn.functional as F

from losses.attribute import AttributeLoss


def _pair(seed=0, B=3, S=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, S, S, generator=g) * 2 - 1, torch.rand(B, 3, S, S, generator=g) * 2 - 1


def test_zero_for_identical_images_and_equals_mse(tiny_style_encoder):
    x, y = _pair()
    loss = AttributeLoss(tiny_style_encoder)
    assert loss(x, x).item() == 0
    expected = F.mse_loss(tiny_style_encoder(x), tiny_style_encoder(y))
    assert torch.allclose(loss(x, y), expected, rtol=1e-6)


def test_slot_subset_normalisation(tiny_style_encoder):
    x, y = _pair(1)
    w, w_hat = tiny_style_encoder(x), tiny_style_encoder(y)     # [B, 4, 8]
    B, n, D = w.shape
    phi = [1, 0, 1, 1]
    # 1 / (B * |phi|_0 * D) * sum_b sum_i phi_i ||w_bi - w^_bi||^2, written out with loops.
    total = 0.0
    for b in range(B):
        for i in range(n):
            total += phi[i] * (w[b, i] - w_hat[b, i]).pow(2).sum().item()
    expected = total / (B * sum(phi) * D)
    by_index = AttributeLoss(tiny_style_encoder, slots=[0, 2, 3])(x, y)
    by_mask = AttributeLoss(tiny_style_encoder, slots=[bool(p) for p in phi])(x, y)
    assert by_index.item() == pytest.approx(expected, rel=1e-5)
    assert by_mask.item() == pytest.approx(expected, rel=1e-5)
    per_sample = AttributeLoss(tiny_style_encoder, slots=[0, 2, 3])(x, y, reduction='none')
    assert per_sample.shape == (B,)
    assert per_sample.mean().item() == pytest.approx(expected, rel=1e-5)


def test_bad_slots(tiny_style_encoder):
    x, y = _pair(2)
    with pytest.raises(ValueError, match='out of range'):
        AttributeLoss(tiny_style_encoder, slots=[0, 4])(x, y)
    with pytest.raises(ValueError, match='length 3'):
        AttributeLoss(tiny_style_encoder, slots=[True, False, True])(x, y)


def test_precomputed_codes_and_reverse_map_gradient(tiny_style_encoder):
    x, y = _pair(3)
    loss = AttributeLoss(tiny_style_encoder)
    codes = loss.exemplar_codes(y)
    assert not codes.requires_grad
    assert torch.equal(loss(x, exemplar_codes=codes), loss(x, y))
    M = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    a = x.clone().requires_grad_(True)
    loss(a, exemplar_codes=codes).backward()
    b = x.clone().requires_grad_(True)
    loss(b, exemplar_codes=codes, weight_map=M).backward()
    assert torch.allclose(b.grad, a.grad * M, atol=1e-9)


def test_keeps_the_encoder_in_eval_mode(tiny_style_encoder):
    AttributeLoss(tiny_style_encoder).train()
    assert not tiny_style_encoder.training and not tiny_style_encoder.bn.training


def test_with_the_real_style_encoder_loaded_from_a_file(tmp_path):
    psp = pytest.importorskip('models.psp')
    torch.manual_seed(0)
    enc = psp.StyleEncoder(start=1, n=3, n_styles=8, style_dim=16, width=16, units=(1, 1, 1, 1),
                           input_size=32)
    ckpt = {'opts': {}, 'latent_avg': torch.randn(8, 16),
            'state_dict': {f'encoder.{k}': v for k, v in enc.state_dict().items()}}
    path = tmp_path / 'psp_ffhq_encode.pt'
    torch.save(ckpt, path)
    loaded = psp.load_style_encoder(str(path), start=1, n=3)
    x, y = _pair(4, B=2, S=64)
    loss = AttributeLoss(loaded, slots=[0, 2])
    codes_x, codes_y = loaded(x), loaded(y)
    assert codes_x.shape == (2, 3, 16)
    assert loss(x, x).item() == 0
    expected = F.mse_loss(codes_x[:, [0, 2]], codes_y[:, [0, 2]])
    assert expected > 0 and torch.allclose(loss(x, y), expected, rtol=1e-5)
