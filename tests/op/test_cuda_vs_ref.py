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
    op.set_upfirdn2d_kernel(None)


# Both compiled upfirdn2d kernels, each forced: the general one and the tiled one (without its
# self-check; 'auto', the default, runs one of the two per case).
KERNELS = ('general', 'tiled')


def _grads_of_order_two(fn, inputs, seed, noise_dtype=None):
    """Output, first gradients and the gradients of an R1-like penalty on them. The incoming
    gradient is drawn in ``noise_dtype`` (default: the output's), so that a float64 run can use
    exactly the values of a float32 one."""
    g = torch.Generator().manual_seed(seed)
    inputs = [t.detach().requires_grad_() for t in inputs]
    y = fn(*inputs)
    gy = torch.randn(y.shape, dtype=noise_dtype or y.dtype, generator=g)
    gy = gy.to(device=y.device, dtype=y.dtype).requires_grad_()
    grads = torch.autograd.grad(y, inputs, gy, create_graph=True)
    penalty = sum((gr ** 2).sum() for gr in grads) + (grads[0] * inputs[0]).sum()
    second = torch.autograd.grad(penalty, inputs + [gy], allow_unused=True)
    return [y, *grads, *[s if s is not None else torch.zeros(()) for s in second]]


def _assert_all_close(got, want, **tol):
    for a, b in zip(got, want):
        torch.testing.assert_close(a.detach().cpu(), b.detach().cpu(), **tol)


def _assert_float32_close_to_float64(got, want64, taps):
    """float32 results against the float64 reference of the same inputs.

    A sum of ``taps`` float32 products carries a rounding error of up to about
    taps * eps * sum |terms|, whatever the summation order (the reference's two 1-D passes and the
    kernel's single 2-D pass round differently). The gradient of the gradient chains two such
    sums, hence the factor 2. The bound scales with the tensor's magnitude (largest |value|), so
    outputs of size 20 get 20 times the slack of outputs of size 1, and is never looser than
    that: a wrong tap or index is off by the size of a term, orders of magnitude more.
    """
    eps = torch.finfo(torch.float32).eps
    for a, b in zip(got, want64):
        a, b = a.detach().cpu().double(), b.detach().cpu()
        rel = 2 * taps * eps
        torch.testing.assert_close(a, b, rtol=rel, atol=rel * max(b.abs().max().item(), 1.0))


@pytest.mark.parametrize('up,down,pad,kshape', UPFIRDN_CASES)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('kernel', KERNELS)
def test_upfirdn2d_forward_grad_gradgrad(up, down, pad, kshape, dtype, kernel):
    op.set_upfirdn2d_kernel(kernel)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 8, dtype=dtype, generator=g)
    k = torch.randn(*kshape, dtype=dtype, generator=g)
    try:
        upfirdn2d_ref(x, k, up, down, pad)
    except ValueError:
        pytest.skip('empty output for this combination')
    got = _grads_of_order_two(lambda x: op.upfirdn2d(x, k.cuda(), up, down, pad), [x.cuda()], 1)
    if dtype == torch.float64:
        want = _grads_of_order_two(lambda x: upfirdn2d_ref(x, k, up, down, pad), [x], 1)
        _assert_all_close(got, want, rtol=1e-10, atol=1e-10)
        return
    # float32: both the kernel and the float32 reference are compared with a float64
    # reference on the very same values; a fixed absolute tolerance would not scale with the
    # outputs' magnitude or the number of taps (separable kernels round after each 1-D pass).
    k64 = k.double()
    want64 = _grads_of_order_two(lambda x: upfirdn2d_ref(x, k64, up, down, pad), [x.double()], 1,
                                 noise_dtype=torch.float32)
    taps = k.numel() ** 2 if k.ndim == 1 else k.numel()
    _assert_float32_close_to_float64(got, want64, taps)
    want32 = _grads_of_order_two(lambda x: upfirdn2d_ref(x, k, up, down, pad), [x], 1)
    _assert_float32_close_to_float64(want32, want64, taps)  # the bound holds for the reference


def test_upfirdn2d_gradcheck_on_gpu():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 4, 3, dtype=torch.float64, generator=g).cuda().requires_grad_()
    k = torch.randn(3, 4, dtype=torch.float64, generator=g).cuda()
    fn = lambda x: op.upfirdn2d(x, k, (2, 1), (1, 2), (2, 1, 1, -1))  # noqa: E731
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


@pytest.mark.parametrize('kernel', KERNELS)
def test_upfirdn2d_network_shapes_noncontiguous_and_half(kernel):
    op.set_upfirdn2d_kernel(kernel)
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


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16])
def test_tiled_kernel_equals_general_on_network_shapes(dtype):
    """The tiled kernel against the general one on the networks' cases and sizes (forward,
    gradient, gradient of gradient), multi-tile planes with partial tiles. Same taps in the same
    order, so equal up to the compiler's fused multiply-adds: within 1e-6 relative."""
    g = torch.Generator().manual_seed(11)
    k1 = torch.tensor([1.0, 3, 3, 1])
    k = ((k1[:, None] * k1[None, :]) / 64).to(dtype)
    x = torch.randn(4, 8, 67, 45, generator=g).to(dtype)
    for args in (dict(up=2, pad=(2, 1)), dict(pad=(1, 1)), dict(pad=(2, 2)),
                 dict(down=2, pad=(1, 1)), dict(up=2, pad=(-1, 3)), dict(down=2, pad=(0, -1))):
        kk = (k * 4 if args.get('up') else k).cuda()
        results = []
        for kernel in KERNELS:
            op.set_upfirdn2d_kernel(kernel)
            results.append(_grads_of_order_two(lambda x: op.upfirdn2d(x, kk, **args),
                                               [x.cuda()], 12))
        for a, b in zip(*results):
            tol = 1e-6 if dtype != torch.bfloat16 else 1e-2
            torch.testing.assert_close(a.float().cpu(), b.float().cpu(), rtol=tol, atol=tol)


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


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
def test_tiled_kernel_passes_its_self_check_on_this_gpu(dtype):
    """The self-check that decides, at first use, whether the tiled kernel serves a case
    (op/_selfcheck.py): on a correct GPU build every case passes, in float32 and in dtype."""
    from op import _loader, _selfcheck
    ext = _loader.load_extension()
    for case in _selfcheck.CASE_PARAMS:
        assert _selfcheck.check_case(ext, torch.device('cuda'), case, dtype) is None
