"""fused_bias_act: add a per-channel bias, apply an activation, multiply by a gain — one op.

StyleGAN2's equalized-lr layers (paper Sec. 3 builds EXE-GAN on them; docs/models.md) end in
"bias + leaky-ReLU(0.2) * sqrt(2)"; the sqrt(2) gain keeps the activations' second moment
unchanged through the ReLU-like nonlinearity. ``FusedLeakyReLU`` is that layer, with its
parameter named ``bias`` so the official state dicts (``...activate.bias``) load strictly.

The reference path is the plain formula in torch ops (autograd supplies every derivative). The
CUDA path runs one elementwise kernel (``op/csrc/fused_bias_act_kernel.cu``) in two modes:
forward, and "multiply a gradient by the activation's slope, read from the saved output".
For leaky-ReLU and linear the slope is piecewise constant, so the gradient of that gradient
is the same multiplication again: one kernel covers forward, backward and double backward.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from . import _impl, _library

ACTIVATIONS = {'linear': 0, 'lrelu': 1}  # the codes the CUDA kernel uses
DEFAULT_GAIN = {'linear': 1.0, 'lrelu': math.sqrt(2)}


def _check(x, b, act):
    if act not in ACTIVATIONS:
        raise ValueError(f"fused_bias_act: act must be one of {sorted(ACTIVATIONS)}, got {act!r}.")
    if x.ndim < 2:
        raise ValueError(f"fused_bias_act: input must be [B, C, ...], got shape {tuple(x.shape)}.")
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[1]):
        raise ValueError(f"fused_bias_act: bias must be [C] = [{x.shape[1]}] to match input "
                         f"{tuple(x.shape)}, got {tuple(b.shape)}.")


def fused_bias_act(x, b=None, act='lrelu', alpha=0.2, gain=None):
    """``act(x + b) * gain`` with b broadcast along dim 1; gain defaults to sqrt(2) for lrelu, 1
    for linear. ``alpha`` is the leaky-ReLU negative slope."""
    _check(x, b, act)
    gain = DEFAULT_GAIN[act] if gain is None else float(gain)
    ext = _impl.cuda_extension(x, b)
    if ext is None:
        return fused_bias_act_ref(x, b, act, alpha, gain)
    return fused_bias_act_ext(ext, x, b, act, alpha, gain)


def fused_bias_act_ref(x, b=None, act='lrelu', alpha=0.2, gain=None):
    """The pure-PyTorch reference (same signature as :func:`fused_bias_act`)."""
    _check(x, b, act)
    gain = DEFAULT_GAIN[act] if gain is None else float(gain)
    if b is not None:
        x = x + b.view([1, -1] + [1] * (x.ndim - 2))
    if act == 'lrelu':
        x = F.leaky_relu(x, alpha)
    return x * gain if gain != 1.0 else x


def fused_leaky_relu(input, bias=None, negative_slope=0.2, scale=2 ** 0.5):
    """Bias + leaky-ReLU + gain (StyleGAN2's activation)."""
    return fused_bias_act(input, bias, 'lrelu', negative_slope, scale)


class FusedLeakyReLU(nn.Module):
    """Per-channel bias (parameter ``bias``, zero-initialised) + leaky-ReLU(0.2) * sqrt(2)."""

    def __init__(self, channel, bias=True, negative_slope=0.2, scale=2 ** 0.5):
        super().__init__()
        if bias:
            self.bias = nn.Parameter(torch.zeros(channel))
        else:
            self.register_parameter('bias', None)
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, input):
        return fused_leaky_relu(input, self.bias, self.negative_slope, self.scale)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}, scale={self.scale:.4g}"


# ---------------------------------------------------------------------------------------------
# Compiled kernel, wrapped for autograd
# ---------------------------------------------------------------------------------------------
# ext.fused_bias_act(x, b, ref, act, grad, alpha, gain):
#   grad = 0: act(x + b) * gain                       (b may be empty = no bias)
#   grad = 1: x * slope(ref) * gain, slope read from the sign of the forward output `ref`
# The extension module is passed in (not a global) so that tests can drive this wiring on CPU.

class _FusedBiasActCuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, ext, act, alpha, gain):
        empty = x.new_empty(0)
        y = _kernel(ext, x, empty if b is None else b, empty, ACTIVATIONS[act], 0, alpha, gain)
        # The output is enough to recover the slope (its sign is the pre-activation's sign
        # times the gain's), so the pre-activation x + b is never stored.
        ctx.save_for_backward(y if act == 'lrelu' else empty)
        ctx.cfg = (ext, act, alpha, gain)
        ctx.has_bias = b is not None
        return y

    @staticmethod
    def backward(ctx, grad_y):
        (ref,) = ctx.saved_tensors
        grad_x = _FusedBiasActGradCuda.apply(grad_y, ref, *ctx.cfg)
        grad_b = None
        if ctx.has_bias and ctx.needs_input_grad[1]:
            grad_b = grad_x.sum([d for d in range(grad_x.ndim) if d != 1])
        return grad_x, grad_b, None, None, None, None


class _FusedBiasActGradCuda(torch.autograd.Function):
    """grad_x = grad_y * slope(ref) * gain. Linear in grad_y with a slope that is piecewise
    constant in the forward input, so its own gradient is the same map (and zero w.r.t. ref)."""

    @staticmethod
    def forward(ctx, grad_y, ref, ext, act, alpha, gain):
        empty = grad_y.new_empty(0)
        grad_x = _kernel(ext, grad_y.contiguous(), empty, ref, ACTIVATIONS[act], 1, alpha, gain)
        ctx.save_for_backward(ref)
        ctx.cfg = (ext, act, alpha, gain)
        return grad_x

    @staticmethod
    def backward(ctx, grad_grad_x):
        (ref,) = ctx.saved_tensors
        return (_FusedBiasActGradCuda.apply(grad_grad_x, ref, *ctx.cfg),
                None, None, None, None, None)


def fused_bias_act_ext(ext, x, b, act, alpha, gain):
    """Run fused_bias_act through extension ``ext`` (validated arguments)."""
    if b is not None:
        b = b.to(dtype=x.dtype)
    return _FusedBiasActCuda.apply(x.contiguous(), b, ext, act, float(alpha), float(gain))


def _kernel(ext, x, b, ref, act, grad, alpha, gain):
    """One compiled fused_bias_act call, directly or (while torch.compile traces) through the
    custom op."""
    if _library.tracing():
        return torch.ops.exegan.fused_bias_act(x, b, ref, act, grad, alpha, gain,
                                               _library.key_of(ext))
    return ext.fused_bias_act(x, b, ref, act, grad, alpha, gain)


@torch.library.custom_op('exegan::fused_bias_act', mutates_args=())
def _fused_bias_act_op(x: torch.Tensor, b: torch.Tensor, ref: torch.Tensor, act: int, grad: int,
                       alpha: float, gain: float, key: int) -> torch.Tensor:
    return _library.ext_of(key).fused_bias_act(x, b, ref, act, grad, alpha, gain)


@_fused_bias_act_op.register_fake
def _(x, b, ref, act, grad, alpha, gain, key):
    return torch.empty_like(x, memory_format=torch.contiguous_format)
