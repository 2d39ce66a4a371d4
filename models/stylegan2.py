"""StyleGAN2 building blocks used by the EXE-GAN generator and discriminator.

EXE-GAN (Lu et al., Neurocomputing 2025, Sec. 3) builds its multi-style generator and its
discriminator from the standard StyleGAN2 layers (Karras et al., CVPR 2020). This file holds those
layers, written from the StyleGAN2 paper's definitions (docs/models.md), with the module and
parameter names the authors' checkpoints use (see ``tests/data/*.keys.txt``), so that their state
dicts load with ``strict=True`` and the arithmetic matches theirs:

- equalized learning rate: weights are stored as N(0, 1) / lr_mul and scaled at run time by
  lr_mul / sqrt(fan_in); biases are scaled by lr_mul;
- the activation is a fused bias + leaky ReLU(0.2) multiplied by sqrt(2) (``op.fused_leaky_relu``);
- modulated convolutions demodulate with eps 1e-8 and run as one grouped convolution per batch;
- up/down sampling uses the [1, 3, 3, 1] FIR filter through ``op.upfirdn2d``; the filter kernels are
  registered buffers, because the authors' state dicts contain them.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from op import FusedLeakyReLU, conv2d_gradfix, fused_leaky_relu, upfirdn2d

SQRT2 = math.sqrt(2.0)


def make_kernel(k: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """2-D FIR kernel from a 1-D (separable) or 2-D list, normalised to sum 1."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


class PixelNorm(nn.Module):
    """Normalises each latent vector to unit root-mean-square (first layer of the mapping net)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class Blur(nn.Module):
    """FIR low-pass filter (pads then filters). ``upsample_factor`` scales the kernel by factor**2
    so that the energy lost by zero-insertion upsampling (in the transposed conv before it) is
    restored."""

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * (upsample_factor ** 2)
        self.register_buffer("kernel", k)
        self.pad = tuple(pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling (zero insertion + filter), used on the RGB skip path of ``ToRGB``."""

    def __init__(self, kernel: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        k = make_kernel(kernel) * (factor ** 2)
        self.register_buffer("kernel", k)
        p = k.shape[0] - factor
        # For the 4-tap kernel and factor 2 this is (2, 1): output is exactly factor x input.
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, down=1, pad=self.pad)


class EqualConv2d(nn.Module):
    """Conv2d with equalized learning rate (weight ~ N(0,1), scaled by 1/sqrt(fan_in) at run time)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.stride = stride
        self.padding = padding
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d_gradfix.conv2d(x, self.weight * self.scale, bias=self.bias,
                                     stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, stride={self.stride}, padding={self.padding}"


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate and an optional fused leaky ReLU.

    ``lr_mul`` < 1 (0.01 in the mapping network) slows the layer down: weights are stored divided by
    lr_mul and multiplied back at run time, biases are multiplied by lr_mul.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: str | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.zeros(out_dim).fill_(bias_init)) if bias else None
        if activation not in (None, "fused_lrelu"):
            raise ValueError(f"EqualLinear activation must be None or 'fused_lrelu', got {activation!r}.")
        self.activation = activation
        self.scale = (1.0 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            return fused_leaky_relu(out, bias)
        return F.linear(x, self.weight * self.scale, bias=bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


# How ModulatedConv2d runs (see its forward methods). "grouped" folds the batch into one grouped
# convolution with per-sample weights (the authors' code); "batched" modulates the activations and
# convolves the whole batch with one shared weight; "auto" picks, per layer and call, the form whose
# extra tensors are smaller: per-sample weights [B, out, in, k, k] (grouped) or the modulated input
# and pre-demodulation output, activation-sized (batched). At 256 px that is "batched" for the
# 512-channel layers up to 32x32 and "grouped" above. All three compute the same map
# (tests/models/test_modconv_impl.py); docs/benchmarks.md has the timings that chose the default.
MODCONV_IMPLS = ("auto", "grouped", "batched")
_MODCONV_IMPL = "grouped"


def set_modconv_impl(impl: str) -> None:
    """Select the modulated-convolution form of every ModulatedConv2d: 'auto' | 'grouped' | 'batched'."""
    global _MODCONV_IMPL
    if impl not in MODCONV_IMPLS:
        raise ValueError(f"modconv implementation must be one of {MODCONV_IMPLS}, got {impl!r}.")
    _MODCONV_IMPL = impl


def get_modconv_impl() -> str:
    return _MODCONV_IMPL


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution (StyleGAN2 Sec. 2.2).

    The per-sample weight is ``scale * weight * s`` with s = modulation(style) (bias initialised to 1,
    so styles start near identity); with ``demodulate`` each output filter is divided by its L2 norm
    (eps 1e-8). The batch is folded into the channel axis and run as a single grouped convolution.
    Upsampling: stride-2 transposed conv then a blur; downsampling: blur then stride-2 conv.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, downsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.eps = 1e-8
        self.kernel_size = kernel_size
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.upsample = upsample
        self.downsample = downsample
        self.demodulate = demodulate

        # Registration order (weight, blur, modulation) matches the authors' state-dict order.
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1),
                             upsample_factor=factor)
        if downsample:
            factor = 2
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))

        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)

    def extra_repr(self) -> str:
        return (f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, "
                f"upsample={self.upsample}, downsample={self.downsample}, demodulate={self.demodulate}")

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        s = self.modulation(style)  # [B, in]
        impl = _MODCONV_IMPL
        if impl == "auto":
            impl = "batched" if self._weights_outweigh_activations(x) else "grouped"
        if impl == "batched":
            return self._forward_batched(x, s)
        return self._forward_grouped(x, s)

    def _weights_outweigh_activations(self, x: torch.Tensor) -> bool:
        """True when per-sample weights (out * in * k^2 per sample) are larger than the input plus
        output activations the batched form adds (in * H * W + out * H' * W' per sample)."""
        hw = x.shape[2] * x.shape[3]
        hw_out = hw * 4 if self.upsample else hw // 4 if self.downsample else hw
        return (self.out_channel * self.in_channel * self.kernel_size ** 2
                >= self.in_channel * hw + self.out_channel * hw_out)

    def _forward_grouped(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Per-sample weights ``scale * weight * s`` (demodulated), one grouped convolution."""
        batch, in_channel, height, width = x.shape
        weight = self.scale * self.weight * s.view(batch, 1, in_channel, 1, 1)  # [B, out, in, k, k]
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + self.eps)
            weight = weight * demod.view(batch, self.out_channel, 1, 1, 1)
        k = self.kernel_size
        weight = weight.view(batch * self.out_channel, in_channel, k, k)

        if self.upsample:
            x = x.reshape(1, batch * in_channel, height, width)
            # conv_transpose2d wants [in, out/groups, k, k] per group.
            weight = weight.view(batch, self.out_channel, in_channel, k, k)
            weight = weight.transpose(1, 2).reshape(batch * in_channel, self.out_channel, k, k)
            out = conv2d_gradfix.conv_transpose2d(x, weight, padding=0, stride=2, groups=batch)
            out = out.view(batch, self.out_channel, out.shape[2], out.shape[3])
            return self.blur(out)
        if self.downsample:
            x = self.blur(x)
            _, _, height, width = x.shape
            x = x.reshape(1, batch * in_channel, height, width)
            out = conv2d_gradfix.conv2d(x, weight, padding=0, stride=2, groups=batch)
            return out.view(batch, self.out_channel, out.shape[2], out.shape[3])
        x = x.reshape(1, batch * in_channel, height, width)
        out = conv2d_gradfix.conv2d(x, weight, padding=self.padding, groups=batch)
        return out.view(batch, self.out_channel, out.shape[2], out.shape[3])

    def _forward_batched(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The same map with one shared weight: modulate the input channels, convolve the whole
        batch with ``scale * weight``, then demodulate the output channels.

        Equal to the grouped form because conv is linear: conv(x * s, W) = conv(x, W * s), and the
        demodulation factor d[b, o] = rsqrt(sum_{i,k} (scale W[o,i,k] s[b,i])^2 + eps) is one scalar
        per output channel, which commutes with the blur after an upsampling conv. (StyleGAN2's
        "non-fused" modulated convolution.)
        """
        batch, in_channel = x.shape[0], x.shape[1]
        weight = self.scale * self.weight[0]  # [out, in, k, k]
        x = x * s.reshape(batch, in_channel, 1, 1).to(x.dtype)
        if self.upsample:
            out = conv2d_gradfix.conv_transpose2d(x, weight.transpose(0, 1), padding=0, stride=2)
        elif self.downsample:
            out = conv2d_gradfix.conv2d(self.blur(x), weight, padding=0, stride=2)
        else:
            out = conv2d_gradfix.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # sum_{i,k} (W[o,i,k] s[b,i])^2 = (s^2 @ sum_k W^2 .T)[b, o]: no [B, out, in, k, k] tensor.
            w2 = weight.pow(2).sum([2, 3])                 # [out, in]
            demod = torch.rsqrt(s.pow(2) @ w2.t() + self.eps)  # [B, out]
            out = out * demod.reshape(batch, self.out_channel, 1, 1).to(out.dtype)
        if self.upsample:
            out = self.blur(out)
        return out


class NoiseInjection(nn.Module):
    """Adds per-pixel Gaussian noise scaled by one learned scalar (initialised to 0)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            batch, _, height, width = image.shape
            noise = image.new_empty(batch, 1, height, width).normal_()
        return image + self.weight * noise


class StyledConv(nn.Module):
    """Modulated conv -> noise -> fused bias + leaky ReLU (the authors' order)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 demodulate: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim,
                                    upsample=upsample, blur_kernel=blur_kernel, demodulate=demodulate)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, style: torch.Tensor,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style)
        out = self.noise(out, noise=noise)
        return self.activate(out)


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB + bias, plus the upsampled RGB skip."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor,
                skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d -> [fused bias + leaky ReLU], as an ``nn.Sequential``.

    With ``downsample`` the input is blurred (pads ((p+1)//2, p//2), p = 2 + (k-1)) and convolved
    with stride 2 and no padding; otherwise the conv pads k//2. When activated, the bias lives in the
    fused activation (key ``<i>.bias``), not in the conv.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), bias: bool = True, activate: bool = True):
        layers: list[nn.Module] = []
        if downsample:
            factor = 2
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, stride=stride, padding=padding,
                                  bias=bias and not activate))
        if activate:
            if not bias:
                # Never needed by EXE-GAN's networks; refusing keeps the layer list exact.
                raise ValueError("ConvLayer with activate=True requires bias=True.")
            layers.append(FusedLeakyReLU(out_channel))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Discriminator residual block: (conv3x3 -> down-conv3x3  +  down-conv1x1 skip) / sqrt(2)."""

    def __init__(self, in_channel: int, out_channel: int, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, blur_kernel=blur_kernel,
                              activate=False, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return (out + self.skip(x)) / SQRT2


def channel_table(size: int, channel_multiplier: float = 2, channel_max: int = 512) -> dict[int, int]:
    """Feature channels per resolution 4..size: 512 up to 32x32, then 256*cm at 64, 128*cm at 128,
    64*cm at 256, 32*cm at 512, 16*cm at 1024 (StyleGAN2's table), each capped at ``channel_max``.
    A fractional multiplier is allowed (tiny test models)."""
    table = {}
    r = 4
    while r <= size:
        base = 512 if r <= 32 else int(16384 // r * channel_multiplier)
        table[r] = max(1, min(int(channel_max), base))
        r *= 2
    return table
