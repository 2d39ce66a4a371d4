"""upfirdn2d: the reference equals scipy.signal.upfirdn / a numpy construction, the naive
formulation and known values; gradients of every order; the CUDA path's autograd wiring."""
import itertools

import numpy as np
import pytest
import scipy.signal
import torch
from torch.autograd import gradcheck, gradgradcheck

import op
from op.upfirdn2d import (adjoint_params, out_size, upfirdn2d_ext, upfirdn2d_naive,
                          upfirdn2d_ref)

# Kept small on purpose (the whole suite runs on 2 CPU cores): every factor, pad sign and kernel
# size class is covered, not every combination of them at several image sizes.
PADS = [(0, 0), (2, 1), (-1, 2), (2, -2), (-1, 3, 2, -2)]
KERNELS_2D = [(1, 1), (2, 3), (4, 4), (5, 2)]
KERNELS_1D = [1, 2, 3, 4, 5]
UPS = [1, 2, 4, (2, 1)]
DOWNS = [1, 2, 4, (1, 2)]


def _xy(v):
    return (v, v) if isinstance(v, int) else v


def _full_pads(pad):
    return pad + pad if len(pad) == 2 else pad


def _valid(h, w, kh, kw, up, down, pad):
    (ux, uy), (px0, px1, py0, py1) = _xy(up), _full_pads(pad)
    return (h * uy + py0 + py1 >= kh) and (w * ux + px0 + px1 >= kw)


# ---- independent constructions (numpy / scipy, float64, one channel at a time) --------------

def _scipy_axis(a, h, up, down, p0, p1, axis):
    """upfirdn along one axis via scipy.signal.upfirdn (zero insertion + full convolution), then
    the pad/crop window and the subsampling of our definition."""
    n, k = a.shape[axis], len(h)
    full = scipy.signal.upfirdn(h, a, up=up, down=1, axis=axis)  # length (n - 1) * up + k
    # Our pre-subsampling sample i is full-convolution index i + k - 1 - p0 (zero outside).
    length = n * up + p0 + p1 - k + 1
    idx = np.arange(0, length, down) + k - 1 - p0
    inside = (idx >= 0) & (idx < full.shape[axis])
    out = np.take(full, np.clip(idx, 0, full.shape[axis] - 1), axis=axis)
    shape = [1] * a.ndim
    shape[axis] = -1
    return out * inside.reshape(shape)


def scipy_separable(x, kx, ky, up, down, pad):
    """Per-channel float64 upfirdn2d with kernel outer(ky, kx) via scipy.signal.upfirdn."""
    (ux, uy), (dx, dy), (px0, px1, py0, py1) = _xy(up), _xy(down), _full_pads(pad)
    a = x.detach().double().numpy()
    out = []
    for img in a.reshape(-1, *a.shape[2:]):
        img = _scipy_axis(img, kx, ux, dx, px0, px1, axis=1)
        out.append(_scipy_axis(img, ky, uy, dy, py0, py1, axis=0))
    out = np.stack(out)
    return torch.from_numpy(out.reshape(*a.shape[:2], *out.shape[1:]))


def numpy_2d(x, kernel, up, down, pad):
    """Per-channel float64 upfirdn2d for any 2-D kernel: zero insertion with numpy, np.pad plus
    slicing for negative pads, scipy.signal.convolve2d('valid'), subsampling."""
    (ux, uy), (dx, dy), (px0, px1, py0, py1) = _xy(up), _xy(down), _full_pads(pad)
    a, k = x.detach().double().numpy(), kernel.detach().double().numpy()
    out = []
    for img in a.reshape(-1, *a.shape[2:]):
        h, w = img.shape
        u = np.zeros((h * uy, w * ux))
        u[::uy, ::ux] = img
        u = np.pad(u, ((max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))))
        u = u[max(-py0, 0):u.shape[0] - max(-py1, 0), max(-px0, 0):u.shape[1] - max(-px1, 0)]
        out.append(scipy.signal.convolve2d(u, k, mode='valid')[::dy, ::dx])
    out = np.stack(out)
    return torch.from_numpy(out.reshape(*a.shape[:2], *out.shape[1:]))


# ---- forward equality ------------------------------------------------------------------------

@pytest.mark.parametrize('up,down', list(itertools.product(UPS, DOWNS)))
def test_ref_equals_numpy_scipy_2d_kernels(up, down):
    """Non-symmetric, non-separable kernels: a flipped kernel or a shifted window would fail."""
    g = torch.Generator().manual_seed(0)
    checked = 0
    h, w = 5, 7
    for (kh, kw), pad in itertools.product(KERNELS_2D, PADS):
        if not _valid(h, w, kh, kw, up, down, pad):
            continue
        x = torch.randn(1, 2, h, w, dtype=torch.float64, generator=g)
        k = torch.randn(kh, kw, dtype=torch.float64, generator=g)
        got = upfirdn2d_ref(x, k, up, down, pad)
        torch.testing.assert_close(got, numpy_2d(x, k, up, down, pad), rtol=1e-10, atol=1e-10)
        checked += 1
    assert checked >= 15


@pytest.mark.parametrize('up,down', list(itertools.product(UPS, DOWNS)))
def test_ref_separable_1d_kernel_equals_scipy_upfirdn(up, down):
    """A 1-D kernel is applied along x and along y; compare with scipy.signal.upfirdn per axis."""
    g = torch.Generator().manual_seed(1)
    checked = 0
    h, w = 4, 9
    for k, pad in itertools.product(KERNELS_1D, PADS):
        if not _valid(h, w, k, k, up, down, pad):
            continue
        x = torch.randn(1, 2, h, w, dtype=torch.float64, generator=g)
        k1 = torch.randn(k, dtype=torch.float64, generator=g)
        want = scipy_separable(x, k1.numpy(), k1.numpy(), up, down, pad)
        torch.testing.assert_close(upfirdn2d_ref(x, k1, up, down, pad), want,
                                   rtol=1e-10, atol=1e-10)
        checked += 1
    assert checked >= 15


@pytest.mark.parametrize('up,down,pad', [(1, 1, (1, 2)), (2, 1, (2, 1)), (1, 2, (-1, 2, 1, 0)),
                                         ((2, 1), (1, 2), (0, 1, 2, -1)), (4, 2, (3, 2))])
def test_ref_2d_outer_product_kernel_equals_scipy_per_axis(up, down, pad):
    """kernel[i, j] = ky[i] * kx[j] (rows = y): different kx and ky catch swapped axes."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 2, 5, 7, dtype=torch.float64, generator=g)
    kx = torch.randn(4, dtype=torch.float64, generator=g)
    ky = torch.randn(3, dtype=torch.float64, generator=g)
    got = upfirdn2d_ref(x, ky[:, None] * kx[None, :], up, down, pad)
    torch.testing.assert_close(got, scipy_separable(x, kx.numpy(), ky.numpy(), up, down, pad),
                               rtol=1e-10, atol=1e-10)


def test_ref_equals_naive_formulation():
    g = torch.Generator().manual_seed(3)
    for up, down, pad, kshape in itertools.product([1, 2, (3, 1)], [1, (1, 3)], PADS,
                                                   [(4, 4), (3, 2), (5,)]):
        x = torch.randn(1, 2, 6, 5, dtype=torch.float64, generator=g)
        k = torch.randn(*kshape, dtype=torch.float64, generator=g)
        if not _valid(6, 5, kshape[0], kshape[-1], up, down, pad):
            continue
        torch.testing.assert_close(upfirdn2d_ref(x, k, up, down, pad),
                                   upfirdn2d_naive(x, k, up, down, pad), rtol=1e-10, atol=1e-10)


def test_impulse_response_is_the_kernel_unflipped():
    """A true convolution maps a unit impulse to the kernel itself (correlation would flip it)."""
    k = torch.arange(1.0, 13.0, dtype=torch.float64).reshape(3, 4)
    x = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    x[0, 0, 0, 0] = 1
    out = upfirdn2d_ref(x, k, pad=(3, 3, 2, 2))  # full convolution
    torch.testing.assert_close(out[0, 0], k)


def test_stylegan2_blur_and_upsample_known_values():
    """The [1,3,3,1] blur of a constant image stays constant away from borders; the ToRGB
    upsampler (kernel x4, up 2, pad (2, 1)) doubles the size and keeps constants constant."""
    k1 = torch.tensor([1.0, 3, 3, 1], dtype=torch.float64)
    k = k1[:, None] * k1[None, :]
    k = k / k.sum()
    x = torch.full((2, 3, 8, 8), 0.5, dtype=torch.float64)
    blur = op.upfirdn2d(x, k, pad=(2, 1))
    assert blur.shape == (2, 3, 8, 8)
    torch.testing.assert_close(blur[..., 2:-2, 2:-2], torch.full_like(blur[..., 2:-2, 2:-2], 0.5))
    upx = op.upfirdn2d(x, k * 4, up=2, pad=(2, 1))
    assert upx.shape == (2, 3, 16, 16)
    torch.testing.assert_close(upx[..., 2:-2, 2:-2], torch.full_like(upx[..., 2:-2, 2:-2], 0.5))
    down = op.upfirdn2d(x, k, down=2, pad=(1, 1))
    assert down.shape == (2, 3, 4, 4)
    assert out_size(8, 4, 1, 2, 1, 1) == 4


def test_dtype_device_and_channels_independent():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 9, 9, generator=g)
    k = torch.randn(3, 3, generator=g)
    out = op.upfirdn2d(x, k.double(), up=2, down=1, pad=(1, 1))
    assert out.dtype == torch.float32  # the kernel follows the input's dtype
    # Channel c of the output depends on channel c of the input only (groups = C).
    single = op.upfirdn2d(x[:, 2:3], k, up=2, pad=(1, 1))
    torch.testing.assert_close(out[:, 2:3], single)


@pytest.mark.parametrize('kwargs', [dict(pad=(1, 2, 3)), dict(up=0), dict(down=(1, 2, 3)),
                                    dict(pad=(-5, -5))])
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        op.upfirdn2d(torch.zeros(1, 1, 4, 4), torch.ones(3, 3), **kwargs)


def test_input_must_be_4d():
    with pytest.raises(ValueError, match=r'\[B, C, H, W\]'):
        op.upfirdn2d(torch.zeros(4, 4), torch.ones(3, 3))


# ---- gradients -------------------------------------------------------------------------------

# Tiny tensors: gradgradcheck's cost grows with (inputs + outputs) x outputs.
GRAD_CASES = [(1, 1, (1, 2), (3, 2)), (2, 1, (2, 1), (2, 2)), (1, 2, (-1, 2, 1, 0), (3, 2)),
              ((2, 1), (1, 2), (0, 1, 2, -1), (2, 3)), (2, 2, (1, 1), (3,)), (4, 1, (1, 0), (2,))]


@pytest.mark.parametrize('up,down,pad,kshape', GRAD_CASES)
def test_ref_gradcheck_and_gradgradcheck(up, down, pad, kshape):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 3, 2, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(*kshape, dtype=torch.float64, generator=g, requires_grad=True)
    fn = lambda x, k: op.upfirdn2d(x, k, up, down, pad)  # noqa: E731
    # fast_mode checks random projections of the Jacobians instead of every column: each
    # convolution call on CPU has a fixed cost of milliseconds, and full mode needs thousands.
    assert gradcheck(fn, (x, k), fast_mode=True)
    assert gradgradcheck(fn, (x, k), fast_mode=True)


def test_ref_full_gradcheck_smallest_case():
    """One case in full mode (every Jacobian column), upsampling and negative padding."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(1, 1, 2, 2, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(2, 2, dtype=torch.float64, generator=g, requires_grad=True)
    fn = lambda x, k: op.upfirdn2d(x, k, 2, 1, (1, 0, 0, -1))  # noqa: E731
    assert gradcheck(fn, (x, k))
    assert gradgradcheck(fn, (x, k))


@pytest.mark.parametrize('up,down,pad,kshape', GRAD_CASES + [(3, 2, (0, 2, 4, -1), (5, 2))])
def test_adjoint_params_give_the_gradient(up, down, pad, kshape):
    """The CUDA backward computes grad = upfirdn2d(grad_out, flipped kernel, adjoint params);
    check that formula against the reference's autograd."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(*kshape, dtype=torch.float64, generator=g)
    k2 = k if k.ndim == 2 else k[:, None] * k[None, :]
    (ux, uy), (dx, dy), pads = _xy(up), _xy(down), _full_pads(pad)
    y = upfirdn2d_ref(x, k2, up, down, pad)
    grad_out = torch.randn(y.shape, dtype=torch.float64, generator=g)
    (want,) = torch.autograd.grad(y, x, grad_out)
    aux, auy, adx, ady, *apads = adjoint_params(7, 6, *k2.shape, ux, uy, dx, dy, *pads)
    got = upfirdn2d_ref(grad_out, k2.flip([0, 1]), (aux, auy), (adx, ady), tuple(apads))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('up,down,pad,kshape', GRAD_CASES)
def test_cuda_autograd_wiring_with_emulated_kernel(emulated_ext, up, down, pad, kshape):
    """The Function the CUDA path uses (kernel-only forward, backward = the same Function with
    adjoint parameters) matches the reference and passes gradcheck / gradgradcheck."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 2, 3, 2, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(*kshape, dtype=torch.float64, generator=g)
    (ux, uy), (dx, dy), pads = _xy(up), _xy(down), _full_pads(pad)
    fn = lambda x: upfirdn2d_ext(emulated_ext, x, k, ux, uy, dx, dy, *pads)  # noqa: E731
    torch.testing.assert_close(fn(x), upfirdn2d_ref(x, k, up, down, pad))
    assert gradcheck(fn, (x,), fast_mode=True)
    assert gradgradcheck(fn, (x,), fast_mode=True)
    # And second-order values equal the reference's, not only finite differences.
    gy0 = torch.randn(fn(x).shape, dtype=torch.float64, generator=g)

    def second_order(f):
        gy = gy0.clone().requires_grad_()
        (gx,) = torch.autograd.grad(f(x), x, gy, create_graph=True)
        (ggy,) = torch.autograd.grad((gx ** 2).sum(), gy)
        return gx, ggy

    for got, want in zip(second_order(fn), second_order(lambda x: upfirdn2d_ref(x, k, up, down,
                                                                                  pad))):
        torch.testing.assert_close(got, want)


def test_trainable_kernel_takes_reference_path(monkeypatch):
    """A kernel that requires grad never reaches the compiled path (which has no kernel grad)."""
    from op import _impl
    calls = []
    monkeypatch.setattr(_impl, 'cuda_extension', lambda *a: calls.append(a))
    k = torch.ones(3, 3, requires_grad=True)
    op.upfirdn2d(torch.zeros(1, 1, 4, 4), k, pad=(1, 1))
    assert calls == []
    op.upfirdn2d(torch.zeros(1, 1, 4, 4), k.detach(), pad=(1, 1))
    assert len(calls) == 1
