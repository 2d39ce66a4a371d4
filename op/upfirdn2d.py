"""upfirdn2d: upsample, FIR-filter, downsample a batch of images (StyleGAN2's resampling op).

EXE-GAN's generator and discriminator are StyleGAN2 networks (paper Sec. 3; docs/models.md):
every blur, every upsampled ToRGB skip and every downsampling block goes through this op, and the
R1 and path-length regularizers differentiate through it twice.

Semantics, per axis (x = width, y = height): insert ``up - 1`` zeros after every input sample,
pad with ``pad0`` / ``pad1`` zeros (negative values crop), convolve with the kernel (a true
convolution, i.e. correlation with the flipped kernel, "valid" region only), keep every
``down``-th sample. Output length ``(n * up + pad0 + pad1 - k) // down + 1``.

Three formulations live here:

* :func:`upfirdn2d_ref` — the reference every CPU tensor runs. It is a depthwise (groups = C)
  convolution: ``conv_transpose2d`` with stride ``up`` does zero insertion and filtering in one
  pass without multiplying the inserted zeros; ``conv2d`` with stride ``down`` filters only
  the samples that are kept. Built from differentiable torch ops, so autograd gives every order
  of derivative (also with respect to the kernel).
* :func:`upfirdn2d_naive` — the well-known "native" formulation (fold batch and channels into
  one single-channel image, zero-insert by reshaping, convolve everything, then subsample). Kept
  as an independent cross-check and as the baseline of ``scripts/benchmark_ops.py``.
* the compiled kernels (``op/csrc/``), wrapped in :class:`_UpFirDn2dCuda`, whose backward is
  again upfirdn2d (flipped kernel, up and down swapped, adjusted pads), so gradients of any order
  reuse the same kernels. Each call runs the general kernel or, where it is specialised and has
  passed its self-check on the device (``op/_selfcheck.py``), the tiled one.

One call, in order (docs/ops.md): :func:`upfirdn2d` -> :func:`_parse` -> :func:`choose` (ref |
general | tiled; the self-check runs inside it at a case's first use) -> :func:`_ref`, or
:func:`upfirdn2d_ext` -> :class:`_UpFirDn2dCuda` -> :func:`_kernel` -> ``ext.upfirdn2d`` (C++,
``op/csrc/ops.cpp``; while torch.compile traces, through the custom op ``exegan::upfirdn2d``).
The output size is computed in one Python function, :func:`out_size`.
"""
from typing import List

import torch
import torch.nn.functional as F

from . import _impl, _library, _selfcheck


def _pair(value, name):
    """int or (x, y) -> (x, y) of positive ints."""
    if isinstance(value, int):
        value = (value, value)
    if len(value) != 2 or not all(isinstance(v, int) and v >= 1 for v in value):
        raise ValueError(f"upfirdn2d: {name} must be a positive int or an (x, y) pair of them, "
                         f"got {value!r}.")
    return int(value[0]), int(value[1])


def _pads(pad):
    """(p0, p1) for both axes, or (x0, x1, y0, y1) -> (x0, x1, y0, y1)."""
    pad = tuple(int(p) for p in pad)
    if len(pad) == 2:
        return pad[0], pad[1], pad[0], pad[1]
    if len(pad) == 4:
        return pad
    raise ValueError(f"upfirdn2d: pad must be (p0, p1) or (x0, x1, y0, y1), got {pad!r}.")


def out_size(n, k, up, down, pad0, pad1):
    """Output length along one axis: the one place (in Python) that computes it."""
    return (n * up + pad0 + pad1 - k) // down + 1


def _parse(input, kernel, up, down, pad):
    """Checked arguments -> (ux, uy, dx, dy, px0, px1, py0, py1)."""
    if input.ndim != 4:
        raise ValueError(f"upfirdn2d: input must be [B, C, H, W], got shape {tuple(input.shape)}.")
    if kernel.ndim not in (1, 2):
        raise ValueError(f"upfirdn2d: kernel must be 2-D [kh, kw] or 1-D (separable), got shape "
                         f"{tuple(kernel.shape)}.")
    (ux, uy), (dx, dy) = _pair(up, 'up'), _pair(down, 'down')
    px0, px1, py0, py1 = _pads(pad)
    kh, kw = (kernel.shape[0], kernel.shape[0]) if kernel.ndim == 1 else kernel.shape
    h, w = input.shape[2], input.shape[3]
    if out_size(h, kh, uy, dy, py0, py1) < 1 or out_size(w, kw, ux, dx, px0, px1) < 1:
        raise ValueError(f"upfirdn2d: input {h}x{w} with up {(ux, uy)}, pad {(px0, px1, py0, py1)} "
                         f"and a {kh}x{kw} kernel leaves no output; pad more or crop less.")
    return ux, uy, dx, dy, px0, px1, py0, py1


# ---------------------------------------------------------------------------------------------
# Public entry point and the one choice of implementation
# ---------------------------------------------------------------------------------------------

def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):
    """Upsample by ``up``, pad by ``pad``, convolve with ``kernel``, downsample by ``down``.

    input [B, C, H, W]; kernel [kh, kw] or 1-D [k] (separable: applied along x, then y);
    ``up``/``down`` int or (x, y); ``pad`` (p0, p1) for both axes or (x0, x1, y0, y1).
    Returns [B, C, out_h, out_w].
    """
    if _impl.get_upfirdn2d_naive():  # op.set_upfirdn2d_naive(True): a benchmark baseline
        return upfirdn2d_naive(input, kernel, up, down, pad)
    params = _parse(input, kernel, up, down, pad)
    path, ext, _ = choose(input, kernel, params)
    if path == 'ref':
        return _ref(input, kernel, *params)
    return upfirdn2d_ext(ext, input, kernel, *params)


def choose(x, kernel, params, ext=None):
    """Which implementation runs this call: ``('ref', None, -1)``, ``('general', ext, -1)`` or
    ``('tiled', ext, case)``.

    Without ``ext`` (a public call): the reference for CPU tensors, for ``op.set_impl('ref')``,
    for a kernel that requires grad (only the reference differentiates with respect to it) and
    when the extension cannot be built under ``auto``; else the extension. With ``ext`` (a call
    inside the compiled path: one pass of a separable kernel, a backward) only the kernel is
    chosen: the tiled one where it is specialised for these parameters and its case passed the
    self-check on this device and dtype (run here at the case's first use, then cached for the
    process), else the general one. ``op.set_upfirdn2d_kernel`` overrides that for debugging.
    """
    if ext is None:
        ext = None if kernel.requires_grad else _impl.cuda_extension(x)
        if ext is None:
            return 'ref', None, -1
    if kernel.ndim != 2:  # separable: each 1-D pass chooses its own kernel
        return 'general', ext, -1
    tile = _selfcheck.tile_for(ext, x.device, x.dtype, kernel.shape[0], kernel.shape[1],
                               *params[:4])
    return ('tiled', ext, tile) if tile >= 0 else ('general', ext, -1)


# ---------------------------------------------------------------------------------------------
# Reference: depthwise (grouped) convolutions
# ---------------------------------------------------------------------------------------------

def upfirdn2d_ref(input, kernel, up=1, down=1, pad=(0, 0)):
    """The pure-PyTorch reference (same signature as :func:`upfirdn2d`), any device."""
    return _ref(input, kernel, *_parse(input, kernel, up, down, pad))


def _ref(x, kernel, ux, uy, dx, dy, px0, px1, py0, py1):
    kernel = kernel.to(device=x.device, dtype=x.dtype)
    if kernel.ndim == 1:
        # Separable: two 1-D passes cost 2k multiplies per sample instead of k^2.
        x = _ref_2d(x, kernel[None, :], ux, 1, dx, 1, px0, px1, 0, 0)
        return _ref_2d(x, kernel[:, None], 1, uy, 1, dy, 0, 0, py0, py1)
    return _ref_2d(x, kernel, ux, uy, dx, dy, px0, px1, py0, py1)


def _ref_2d(x, kernel, ux, uy, dx, dy, px0, px1, py0, py1):
    c = x.shape[1]
    kh, kw = kernel.shape
    if ux == 1 and uy == 1:
        # Pad (negative = crop), then a strided depthwise correlation with the flipped kernel:
        # the stride does the downsampling, so dropped samples are never computed.
        if any((px0, px1, py0, py1)):
            x = F.pad(x, (px0, px1, py0, py1))
        weight = kernel.flip([0, 1]).expand(c, 1, kh, kw)
        return F.conv2d(x, weight, stride=(dy, dx), groups=c)

    # Up: a strided transposed convolution is exactly "insert zeros, then convolve fully with
    # the (unflipped) kernel", without touching the inserted zeros. Its output along y covers
    # full-convolution indices [0, (h - 1) * uy + kh); the "valid" window after padding starts at
    # index kh - 1 - py0 and ends uy + py1 - kh past that range, so the rest is a crop or pad.
    front_y, back_y = py0 - (kh - 1), uy + py1 - kh
    front_x, back_x = px0 - (kw - 1), ux + px1 - kw
    # The symmetric part of a crop is the transposed conv's own `padding` argument (free).
    cy = max(0, min(-front_y, -back_y))
    cx = max(0, min(-front_x, -back_x))
    weight = kernel.expand(c, 1, kh, kw)
    x = F.conv_transpose2d(x, weight, stride=(uy, ux), padding=(cy, cx), groups=c)
    rest = (front_x + cx, back_x + cx, front_y + cy, back_y + cy)
    if any(rest):
        x = F.pad(x, rest)
    if dx > 1 or dy > 1:
        x = x[:, :, ::dy, ::dx]
    return x


# ---------------------------------------------------------------------------------------------
# Naive single-channel formulation (baseline and cross-check)
# ---------------------------------------------------------------------------------------------

def upfirdn2d_naive(input, kernel, up=1, down=1, pad=(0, 0)):
    """Straightforward formulation: one single-channel image per (sample, channel).

    Zero insertion by reshaping, explicit padding/cropping, a full 2-D convolution at the
    upsampled resolution, then subsampling. Correct but wasteful; see module docstring.
    """
    ux, uy, dx, dy, px0, px1, py0, py1 = _parse(input, kernel, up, down, pad)
    kernel = kernel.to(device=input.device, dtype=input.dtype)
    if kernel.ndim == 1:
        kernel = kernel[:, None] * kernel[None, :]
    b, c, h, w = input.shape
    kh, kw = kernel.shape
    x = input.reshape(b * c, h, 1, w, 1)
    x = F.pad(x, (0, ux - 1, 0, 0, 0, uy - 1))  # the zeros after every sample
    x = x.reshape(b * c, 1, h * uy, w * ux)
    x = F.pad(x, (max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)))
    x = x[:, :, max(-py0, 0):x.shape[2] - max(-py1, 0), max(-px0, 0):x.shape[3] - max(-px1, 0)]
    x = F.conv2d(x, kernel.flip([0, 1]).reshape(1, 1, kh, kw))
    x = x[:, :, ::dy, ::dx]
    return x.reshape(b, c, x.shape[2], x.shape[3])


# ---------------------------------------------------------------------------------------------
# Compiled kernel, wrapped for autograd
# ---------------------------------------------------------------------------------------------

def adjoint_params(in_h, in_w, kh, kw, ux, uy, dx, dy, px0, px1, py0, py1):
    """Parameters (up, down, pads) of the upfirdn2d that is the adjoint (gradient) of a forward.

    The forward is linear in its input, so its gradient is the transposed linear map, which is
    again an upfirdn2d: kernel flipped, up and down swapped, pads chosen so that the output has
    exactly the input's shape. Returned as (ux', uy', dx', dy', px0', px1', py0', py1').
    """
    out_h = out_size(in_h, kh, uy, dy, py0, py1)
    out_w = out_size(in_w, kw, ux, dx, px0, px1)
    return (dx, dy, ux, uy,
            kw - px0 - 1, in_w * ux - out_w * dx + px0 - ux + 1,
            kh - py0 - 1, in_h * uy - out_h * dy + py0 - uy + 1)


def upfirdn2d_ext(ext, x, kernel, ux, uy, dx, dy, px0, px1, py0, py1):
    """Run upfirdn2d through extension ``ext`` (parsed arguments); 1-D kernels as two passes."""
    kernel = kernel.to(device=x.device, dtype=x.dtype)
    if kernel.ndim == 1:
        x = _UpFirDn2dCuda.apply(x, kernel[None, :].contiguous(), ext,
                                 (ux, 1, dx, 1, px0, px1, 0, 0))
        return _UpFirDn2dCuda.apply(x, kernel[:, None].contiguous(), ext,
                                    (1, uy, 1, dy, 0, 0, py0, py1))
    return _UpFirDn2dCuda.apply(x, kernel.contiguous(), ext,
                                (ux, uy, dx, dy, px0, px1, py0, py1))


class _UpFirDn2dCuda(torch.autograd.Function):
    """upfirdn2d through an extension module ``ext`` (2-D kernel), differentiable to any order.

    The module is an argument (not a global) so that tests can drive this exact wiring on CPU
    with a stand-in for the kernel, or with the compiled kernels' CPU emulation.
    """

    @staticmethod
    def forward(ctx, x, kernel, ext, params):
        b, c, h, w = x.shape
        out = _kernel(ext, x.reshape(b * c, h, w).contiguous(), kernel, params)
        ctx.save_for_backward(kernel)
        ctx.ext, ctx.params, ctx.in_hw = ext, params, (h, w)
        return out.reshape(b, c, out.shape[1], out.shape[2])

    @staticmethod
    def backward(ctx, grad):
        (kernel,) = ctx.saved_tensors
        adj = adjoint_params(*ctx.in_hw, kernel.shape[0], kernel.shape[1], *ctx.params)
        # Calling the Function again (not the raw kernel) makes this backward differentiable:
        # the gradient of the gradient is again an upfirdn2d, and so on.
        grad_x = _UpFirDn2dCuda.apply(grad, kernel.flip([0, 1]), ctx.ext, adj)
        return grad_x, None, None, None


def _kernel(ext, x, kernel, params):
    """One compiled upfirdn2d call on x [N, H, W]: the kernel ``choose`` picks for it, called
    directly, or through the custom op while torch.compile traces."""
    tile = choose(x, kernel, params, ext)[2]
    if _library.tracing():
        return torch.ops.exegan.upfirdn2d(x, kernel, list(params), tile, _library.key_of(ext))
    return ext.upfirdn2d(x, kernel, *params, tile)


@torch.library.custom_op('exegan::upfirdn2d', mutates_args=())
def _upfirdn2d_op(x: torch.Tensor, kernel: torch.Tensor, params: List[int], tile: int,
                  key: int) -> torch.Tensor:
    return _library.ext_of(key).upfirdn2d(x, kernel, *params, tile)


@_upfirdn2d_op.register_fake
def _(x, kernel, params, tile, key):
    ux, uy, dx, dy, px0, px1, py0, py1 = params
    return x.new_empty(x.shape[0], out_size(x.shape[1], kernel.shape[0], uy, dy, py0, py1),
                       out_size(x.shape[2], kernel.shape[1], ux, dx, px0, px1))
