"""CUDA kernels against the reference: forward, gradient and gradient of gradient.

Needs a GPU (skipped otherwise). Inputs are built on the CPU, the reference runs there, the
compiled path runs on the GPU with impl='cuda' (a build failure is an error, not a silent
fallback), and the results are compared on the CPU.
"""
import itertools

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import op
from op.fused_act import fused_bias_act_ref
from op.upfirdn2d import upfirdn2d_ref

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')

UPFIRDN_CASES = list(itertools.product(
    [1, 2, 4, (2, 1)], [1, 2, (1, 2)], [(0, 0), (2, 1), (-1, 2), (1, -2, 3, 0)],
    [(4, 4), (3, 2), (1, 1), (4,)]))


@pytest.fixture(autouse=True)
def _force_cuda():
    op.set_impl('cuda')
    yield
    op.set_impl(None)


def _grads_of_order_two(fn, inputs, seed):
    """Output, first gradients and the gradients of an R1-like penalty on them."""
    g = torch.Generator().manual_seed(seed)
    inputs = [t.detach().requires_grad_() for t in inputs]
    y = fn(*inputs)
    gy = torch.randn(y.shape, dtype=y.dtype, generator=g).to(y.device).requires_grad_()
    grads = torch.autograd.grad(y, inputs, gy, create_graph=True)
    penalty = sum((gr ** 2).sum() for gr in grads) + (grads[0] * inputs[0]).sum()
    second = torch.autograd.grad(penalty, inputs + [gy], allow_unused=True)
    return [y, *grads, *[s if s is not None else torch.zeros(()) for s in second]]


def _assert_all_close(got, want, **tol):
    for a, b in zip(got, want):
        torch.testing.assert_close(a.detach().cpu(), b.detach().cpu(), **tol)


@pytest.mark.parametrize('up,down,pad,kshape', UPFIRDN_CASES)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_upfirdn2d_forward_grad_gradgrad(up, down, pad, kshape, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 8, dtype=dtype, generator=g)
    k = torch.randn(*kshape, dtype=dtype, generator=g)
    try:
        upfirdn2d_ref(x, k, up, down, pad)
    except ValueError:
        pytest.skip('empty output for this combination')
    want = _grads_of_order_two(lambda x: upfirdn2d_ref(x, k, up, down, pad), [x], 1)
    got = _grads_of_order_two(lambda x: op.upfirdn2d(x, k.cuda(), up, down, pad), [x.cuda()], 1)
    tol = {} if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    _assert_all_close(got, want, **tol)


def test_upfirdn2d_gradcheck_on_gpu():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 4, 3, dtype=torch.float64, generator=g).cuda().requires_grad_()
    k = torch.randn(3, 4, dtype=torch.float64, generator=g).cuda()
    fn = lambda x: op.upfirdn2d(x, k, (2, 1), (1, 2), (2, 1, 1, -1))  # noqa: E731
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


def test_upfirdn2d_network_shapes_noncontiguous_and_half():
    g = torch.Generator().manual_seed(3)
    k1 = torch.tensor([1.0, 3, 3, 1])
    k = (k1[:, None] * k1[None, :]) / 64
    x = torch.randn(4, 16, 32, 32, generator=g)
    xc = x.cuda().contiguous(memory_format=torch.channels_last)  # non-contiguous NCHW view
    for args in (dict(up=2, pad=(2, 1)), dict(pad=(2, 1)), dict(down=2, pad=(1, 1))):
        kk = k * 4 if args.get('up') else k
        want = upfirdn2d_ref(x, kk, **args)
        torch.testing.assert_close(op.upfirdn2d(xc, kk.cuda(), **args).cpu(), want)
        torch.testing.assert_close(op.upfirdn2d(xc.half(), kk.cuda(), **args).float().cpu(),
                                   want, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize('act,gain', [('lrelu', None), ('lrelu', 0.7), ('linear', None),
                                      ('linear', 2.0)])
@pytest.mark.parametrize('shape,with_bias', [((8, 5), True), ((2, 6, 5, 7), True),
                                             ((2, 6, 5, 7), False), ((3, 4, 9), True)])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_fused_bias_act_forward_grad_gradgrad(act, gain, shape, with_bias, dtype):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(shape, dtype=dtype, generator=g)
    b = torch.randn(shape[1], dtype=dtype, generator=g)
    inputs = [x, b] if with_bias else [x]
    want = _grads_of_order_two(
        lambda x, b=None: fused_bias_act_ref(x, b, act, 0.2, gain), inputs, 5)
    got = _grads_of_order_two(
        lambda x, b=None: op.fused_bias_act(x, b, act, 0.2, gain), [t.cuda() for t in inputs], 5)
    tol = {} if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    _assert_all_close(got, want, **tol)


def test_fused_bias_act_gradcheck_and_module_on_gpu():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=g)
    x = (x + 0.1 * x.sign()).cuda().requires_grad_()
    b = torch.zeros(3, dtype=torch.float64).cuda().requires_grad_()
    assert gradcheck(lambda x, b: op.fused_leaky_relu(x, b), (x, b))
    assert gradgradcheck(lambda x, b: op.fused_leaky_relu(x, b), (x, b))
    m = op.FusedLeakyReLU(3).cuda()
    y = m(x.float())
    torch.testing.assert_close(y.cpu(), fused_bias_act_ref(x.float().cpu(), m.bias.detach().cpu()))
    y.sum().backward()
    assert m.bias.grad is not None and m.bias.grad.device.type == 'cuda'
