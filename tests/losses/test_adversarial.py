"""Adversarial losses, R1 and path-length regularisation."""
import math

import pytest
import torch
from torch import nn

from losses.adversarial import (PathLengthRegularizer, d_logistic_loss, g_nonsaturating_loss,
                                r1_loss, r1_penalty)


def _softplus(v):
    return math.log1p(math.exp(v))


def test_logistic_and_nonsaturating_values():
    real = torch.tensor([[0.5], [-1.0]])
    fake = torch.tensor([[2.0], [0.0]])
    d = d_logistic_loss(real, fake).item()
    expected_d = (_softplus(-0.5) + _softplus(1.0)) / 2 + (_softplus(2.0) + _softplus(0.0)) / 2
    assert d == pytest.approx(expected_d, rel=1e-6)
    g = g_nonsaturating_loss(fake).item()
    assert g == pytest.approx((_softplus(-2.0) + _softplus(0.0)) / 2, rel=1e-6)
    assert d_logistic_loss(torch.zeros(3, 1), torch.zeros(3, 1)).item() == pytest.approx(
        2 * math.log(2))


class QuadraticD(nn.Module):
    """D(x) = <a, x> + c * sum(x^2) per sample: grad_x D = a + 2 c x, known in closed form."""

    def __init__(self, shape):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = nn.Parameter(torch.randn(shape, generator=g, dtype=torch.float64))
        self.c = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

    def forward(self, x):
        return ((x * self.a).flatten(1).sum(1) + self.c * x.pow(2).flatten(1).sum(1))[:, None]


def test_r1_equals_hand_computed_gradient_norm():
    D = QuadraticD((3, 4, 4))
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x.requires_grad_(True)
    r1 = r1_penalty(D(x), x)
    grad = D.a.detach() + 2 * D.c.detach() * x.detach()                 # [B, 3, 4, 4]
    expected = grad.pow(2).flatten(1).sum(1).mean()
    assert torch.allclose(r1, expected, rtol=1e-12)
    # The penalty back-propagates into D (double backward): d r1 / d a = mean_b 2 grad_b.
    r1.backward()
    assert torch.allclose(D.a.grad, 2 * grad.mean(0), rtol=1e-10)
    expected_dc = (2 * grad * 2 * x.detach()).flatten(1).sum(1).mean()
    assert torch.allclose(D.c.grad, expected_dc, rtol=1e-10)


def test_r1_linear_d_is_squared_weight_norm():
    D = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 1)).double()
    x = torch.randn(4, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    expected = D[1].weight.detach().pow(2).sum()
    assert torch.allclose(r1_penalty(D(x), x), expected, rtol=1e-12)


def test_r1_loss_is_lazily_weighted():
    D = QuadraticD((3, 4, 4))
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    pred = D(x)
    loss, r1 = r1_loss(pred, x, r1_gamma=10.0, d_reg_every=16)
    assert torch.allclose(loss.detach(), 10.0 / 2 * r1.detach() * 16)


def test_r1_needs_requires_grad():
    D = QuadraticD((3, 4, 4))
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match='requires_grad'):
        r1_penalty(D(x), x)


class LinearG(nn.Module):
    """img[b] = sum_{i,d} w[b, i, d] * A[i, d] — the Jacobian d img / d w is A itself."""

    def __init__(self, n_latent=3, dim=5, size=4):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.A = nn.Parameter(torch.randn(n_latent, dim, 3, size, size, generator=g,
                                          dtype=torch.float64))

    def forward(self, w):
        return torch.einsum('bid,idchw->bchw', w, self.A)


def _expected_lengths(A, noise):
    H, W = noise.shape[-2:]
    grad = torch.einsum('idchw,bchw->bid', A, noise / math.sqrt(H * W))
    return grad.pow(2).sum(2).mean(1).sqrt()


def test_path_length_running_mean_and_penalty():
    G = LinearG()
    reg = PathLengthRegularizer(decay=0.01).double()
    assert reg.mean_path_length.item() == 0
    gen = torch.Generator().manual_seed(4)
    mean = 0.0
    for _ in range(3):
        w = torch.randn(4, 3, 5, dtype=torch.float64, generator=gen, requires_grad=True)
        noise = torch.randn(4, 3, 4, 4, dtype=torch.float64, generator=gen)
        penalty, path_mean, lengths = reg(G(w), w, noise=noise)
        expected = _expected_lengths(G.A.detach(), noise)
        assert torch.allclose(lengths, expected, rtol=1e-12)
        mean = mean + 0.01 * (expected.mean().item() - mean)
        assert path_mean.item() == pytest.approx(mean, rel=1e-12)
        assert reg.mean_path_length.item() == pytest.approx(mean, rel=1e-12)
        assert penalty.item() == pytest.approx((expected - mean).pow(2).mean().item(), rel=1e-10)
    # The penalty reaches the generator's weights (double backward through the latent grad).
    G.zero_grad()
    PathLengthRegularizer.weighted(penalty, path_weight=2.0, g_reg_every=4).backward()
    assert G.A.grad is not None and G.A.grad.abs().sum() > 0


def test_path_length_mean_is_saved_and_restored():
    G = LinearG()
    reg = PathLengthRegularizer()
    w = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    reg(G(w), w)
    state = reg.state_dict()
    assert 'mean_path_length' in state and state['mean_path_length'].item() > 0
    restored = PathLengthRegularizer()
    restored.load_state_dict(state)
    assert restored.mean_path_length.item() == reg.mean_path_length.item()


def test_path_length_weighted_term():
    p = torch.tensor(0.25)
    assert PathLengthRegularizer.weighted(p, 2.0, 4).item() == pytest.approx(2.0)
