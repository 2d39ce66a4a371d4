"""EXE-GAN discriminator (Lu et al., Neurocomputing 2025, Sec. 3.3): a StyleGAN2 residual
discriminator on RGB images.

1x1 input conv, residual blocks down to 4x4, minibatch standard deviation (one extra channel), a
3x3 conv, and two equalized linear layers to one real/fake logit. Names follow the authors'
state dicts (``encoder_input_convs``, ``encoder_convs``, ``final_conv``, ``final_linear``) so their
checkpoints load strictly (docs/models.md).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from models.stylegan2 import ConvLayer, EqualLinear, ResBlock, channel_table


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, eps: float = 1e-8) -> torch.Tensor:
    """Append StyleGAN2's minibatch standard-deviation channel.

    G = min(B, group_size); the batch is viewed as [G, B/G, ...], so sample b is grouped with the
    samples whose index has the same b mod (B/G). Per group: std over the G members (biased
    variance, eps inside the sqrt), averaged over C, H, W, broadcast as one extra channel.
    """
    batch, channel, height, width = x.shape
    group = min(batch, group_size)
    if batch % group:
        raise ValueError(f"Discriminator batch size {batch} must be divisible by the minibatch-stddev "
                         f"group size {group}; use a batch size that is a multiple of {group} (or < {group_size}).")
    y = x.view(group, -1, 1, channel, height, width)
    y = torch.sqrt(y.var(0, unbiased=False) + eps)  # [B/G, 1, C, H, W]
    y = y.mean([2, 3, 4], keepdim=True).squeeze(2)  # [B/G, 1, 1, 1]
    y = y.repeat(group, 1, height, width)  # [B, 1, H, W]
    return torch.cat([x, y], 1)


class Discriminator(nn.Module):
    """Residual discriminator: image [B, 3, S, S] -> logits [B, 1]."""

    def __init__(self, size: int, channel_multiplier: float = 2, channel_max: int = 512,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), stddev_group: int = 4):
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"Discriminator size must be a power of two >= 8, got {size}.")
        self.size = size
        self.stddev_group = stddev_group
        self.kwargs = dict(size=size, channel_multiplier=channel_multiplier, channel_max=channel_max,
                           blur_kernel=list(blur_kernel), stddev_group=stddev_group)
        ch = channel_table(size, channel_multiplier, channel_max)
        self.channels = ch
        log_size = int(math.log2(size))

        self.encoder_input_convs = ConvLayer(3, ch[size], 1)
        blocks = []
        in_ch = ch[size]
        for i in range(log_size, 2, -1):
            out_ch = ch[2 ** (i - 1)]
            blocks.append(ResBlock(in_ch, out_ch, blur_kernel))
            in_ch = out_ch
        self.encoder_convs = nn.Sequential(*blocks)
        self.final_conv = ConvLayer(in_ch + 1, ch[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(ch[4] * 4 * 4, ch[4], activation="fused_lrelu"),
            EqualLinear(ch[4], 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        s = self.size
        if image.ndim != 4 or image.shape[1] != 3 or image.shape[2] != s or image.shape[3] != s:
            raise ValueError(f"Discriminator input must be [B, 3, {s}, {s}], got {list(image.shape)}.")
        out = self.encoder_input_convs(image)
        out = self.encoder_convs(out)
        out = minibatch_stddev(out, self.stddev_group)
        out = self.final_conv(out)
        out = out.reshape(out.shape[0], -1)  # reshape: also right for channels_last storage
        return self.final_linear(out)
