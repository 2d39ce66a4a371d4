"""fused_bias_act / fused_leaky_relu / FusedLeakyReLU: the plain formula, gradients of every
order, and the CUDA path's autograd wiring (driven on CPU by an emulated kernel)."""
import math

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import op
from op.fused_act import fused_bias_act_ext, fused_bias_act_ref


def _formula(x, b, act, alpha, gain):
    """The textbook definition, written independently of op/: act(x + b) * gain."""
    v = x if b is None else x + b.reshape(1, -1, *([1] * (x.ndim - 2)))
    if act == 'lrelu':
        v = torch.where(v > 0, v, alpha * v)
    return v * gain


@pytest.mark.parametrize('shape', [(3, 5), (2, 4, 3), (2, 3, 4, 5)])
@pytest.mark.parametrize('act,alpha,gain,want_gain', [('lrelu', 0.2, None, math.sqrt(2)),
                                                      ('lrelu', 0.1, 1.5, 1.5),
                                                      ('linear', 0.2, None, 1.0),
                                                      ('linear', 0.2, 0.5, 0.5)])
@pytest.mark.parametrize('with_bias', [True, False])
def test_equals_plain_formula(shape, act, alpha, gain, want_gain, with_bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, generator=g)
    b = torch.randn(shape[1], dtype=torch.float64, generator=g) if with_bias else None
    got = op.fused_bias_act(x, b, act=act, alpha=alpha, gain=gain)
    torch.testing.assert_close(got, _formula(x, b, act, alpha, want_gain), rtol=0, atol=1e-12)


def test_known_values():
    x = torch.tensor([[-1.0, 2.0]])
    b = torch.tensor([0.5, -1.0])
    # lrelu(-0.5) = -0.1, lrelu(1.0) = 1.0, both times sqrt(2).
    want = torch.tensor([[-0.1, 1.0]]) * math.sqrt(2)
    torch.testing.assert_close(op.fused_leaky_relu(x, b), want)


def test_fused_leaky_relu_module_state_dict_and_forward():
    m = op.FusedLeakyReLU(4)
    assert list(m.state_dict()) == ['bias']
    assert m.bias.shape == (4,) and torch.all(m.bias == 0)
    with torch.no_grad():
        m.bias.copy_(torch.tensor([0.1, -0.2, 0.3, -0.4]))
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(m(x), _formula(x, m.bias.detach(), 'lrelu', 0.2, 2 ** 0.5))
    no_bias = op.FusedLeakyReLU(4, bias=False)
    assert no_bias.bias is None and list(no_bias.state_dict()) == []
    torch.testing.assert_close(no_bias(x), _formula(x, None, 'lrelu', 0.2, 2 ** 0.5))


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match='act'):
        op.fused_bias_act(torch.zeros(2, 3), act='relu6')
    with pytest.raises(ValueError, match='bias'):
        op.fused_bias_act(torch.zeros(2, 3), torch.zeros(4))
    with pytest.raises(ValueError, match=r'\[B, C'):
        op.fused_bias_act(torch.zeros(3))


@pytest.mark.parametrize('act', ['lrelu', 'linear'])
def test_ref_gradcheck_and_gradgradcheck(act):
    g = torch.Generator().manual_seed(1)
    # Values away from the kink at 0, where finite differences are not defined.
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64, generator=g)
    x = (x + 0.1 * x.sign()).requires_grad_()
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: op.fused_bias_act(x, b, act=act, alpha=0.2, gain=1.3)  # noqa: E731
    assert gradcheck(fn, (x, b))
    assert gradgradcheck(fn, (x, b))


@pytest.mark.parametrize('act,gain', [('lrelu', None), ('lrelu', -0.7), ('linear', 2.0)])
@pytest.mark.parametrize('with_bias', [True, False])
def test_cuda_autograd_wiring_with_emulated_kernel(emulated_ext, act, gain, with_bias):
    """The Functions the CUDA path uses (forward kernel; backward = slope kernel on the saved
    output, itself differentiable by the same kernel) against the reference's autograd."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64, generator=g)
    x = (x + 0.1 * x.sign()).requires_grad_()
    b = (0.05 * torch.randn(3, dtype=torch.float64, generator=g)).requires_grad_() \
        if with_bias else None
    gain = op.fused_act.DEFAULT_GAIN[act] if gain is None else gain
    ext_fn = lambda x, b=None: fused_bias_act_ext(emulated_ext, x, b, act, 0.2, gain)  # noqa
    ref_fn = lambda x, b=None: fused_bias_act_ref(x, b, act, 0.2, gain)  # noqa: E731
    inputs = (x, b) if with_bias else (x,)
    torch.testing.assert_close(ext_fn(*inputs), ref_fn(*inputs))
    assert gradcheck(ext_fn, inputs)
    assert gradgradcheck(ext_fn, inputs)
    # Exact second-order values: d/d(grad_y) and d/dx of a function of the first gradient.
    gy0 = torch.randn(x.shape, dtype=torch.float64, generator=g)

    def second_order(fn):
        gy = gy0.clone().requires_grad_()
        grads = torch.autograd.grad(fn(*inputs), inputs, gy, create_graph=True)
        penalty = sum((gr ** 2).sum() for gr in grads)  # an R1-like penalty
        return grads + torch.autograd.grad(penalty, (gy,))

    for got, want in zip(second_order(ext_fn), second_order(ref_fn)):
        torch.testing.assert_close(got, want)


def test_emulated_kernel_treats_zero_like_torch(emulated_ext):
    """At exactly x + b = 0 torch's leaky_relu uses the negative slope; the kernel's rule
    (slope from the sign of the saved output) must agree."""
    x = torch.tensor([[0.0, 1.0, -1.0]], dtype=torch.float64).reshape(1, 3).requires_grad_()
    for fn in (lambda x: fused_bias_act_ext(emulated_ext, x, None, 'lrelu', 0.2, 1.0),
               lambda x: fused_bias_act_ref(x, None, 'lrelu', 0.2, 1.0)):
        (gx,) = torch.autograd.grad(fn(x).sum(), x)
        torch.testing.assert_close(gx, torch.tensor([[0.2, 1.0, 0.2]], dtype=torch.float64))
