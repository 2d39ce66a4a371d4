"""conv2d_gradfix: same values as torch.nn.functional, double backward for R1-style penalties,
and the no_weight_gradients flag."""
import torch
import torch.nn.functional as F

from op import conv2d_gradfix


def test_same_as_functional():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 7, 7, generator=g)
    w = torch.randn(6, 2, 3, 3, generator=g)
    b = torch.randn(6, generator=g)
    torch.testing.assert_close(conv2d_gradfix.conv2d(x, w, b, stride=2, padding=1, groups=2),
                               F.conv2d(x, w, b, stride=2, padding=1, groups=2))
    wt = torch.randn(4, 3, 3, 3, generator=g)
    torch.testing.assert_close(
        conv2d_gradfix.conv_transpose2d(x, wt, None, stride=2, padding=0, output_padding=1),
        F.conv_transpose2d(x, wt, None, stride=2, padding=0, output_padding=1))


def _r1_weight_grads(use_context):
    """Weight gradient of an R1 penalty |d D(x) / dx|^2 through a two-layer conv 'D'."""
    g = torch.Generator().manual_seed(1)
    w1 = torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    w2 = torch.randn(1, 3, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64, generator=g, requires_grad=True)
    h = F.leaky_relu(conv2d_gradfix.conv2d(x, w1, padding=1), 0.2)
    out = conv2d_gradfix.conv_transpose2d(h, w2.transpose(0, 1), stride=1, padding=1).sum()
    if use_context:
        with conv2d_gradfix.no_weight_gradients():
            (gx,) = torch.autograd.grad(out, x, create_graph=True)
    else:
        (gx,) = torch.autograd.grad(out, x, create_graph=True)
    penalty = gx.pow(2).sum()
    return torch.autograd.grad(penalty, (w1, w2))


def test_no_weight_gradients_keeps_r1_weight_gradients_exact():
    """The penalty's own weight gradient (second order) must not be affected by the context."""
    with_ctx, without = _r1_weight_grads(True), _r1_weight_grads(False)
    for a, b in zip(with_ctx, without):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b)


def test_no_weight_gradients_flag_nests_and_restores():
    assert not conv2d_gradfix.weight_gradients_disabled()
    with conv2d_gradfix.no_weight_gradients():
        assert conv2d_gradfix.weight_gradients_disabled()
        with conv2d_gradfix.no_weight_gradients(False):
            assert conv2d_gradfix.weight_gradients_disabled()  # an outer True wins
        assert conv2d_gradfix.weight_gradients_disabled()
    assert not conv2d_gradfix.weight_gradients_disabled()
    try:
        with conv2d_gradfix.no_weight_gradients():
            raise RuntimeError('boom')
    except RuntimeError:
        pass
    assert not conv2d_gradfix.weight_gradients_disabled()
