"""EXE-GAN multi-style generator (Lu et al., Neurocomputing 2025, Sec. 3.1 and Fig. 2).

The generator reads the masked image and fills the hole, steered by three sources of style:

1. an **image encoder** on ``gin = cat(image * (1 - mask), mask - 0.5)`` gives skip features at every
   resolution and a 1024-d **global code** (the input's overall look);
2. the **mapping network** turns random z's into w's (StyleGAN2 style, with truncation and mixing);
3. the **exemplar codes** (pSp codes of the exemplar face) replace the w's of a fixed range of
   layers, so the filled region takes on the exemplar's attributes.

Each decoder layer is modulated by ``cat(w_i, global)`` (3 x style_dim wide); the decoder starts from
the encoder's 4x4 feature (no constant input) and adds the encoder feature of each resolution after
its upsampling conv. Layout, names and arithmetic follow the authors' networks (docs/models.md) so their
released checkpoints load strictly and reproduce their outputs.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from models.stylegan2 import (ConvLayer, EqualLinear, PixelNorm, StyledConv, ToRGB,
                              channel_table)


def default_exemplar_slots(size: int) -> tuple[int, int]:
    """(start, n) of the w slots that exemplar codes replace.

    The authors use start 4 with n = 10 / 12 / 14 at 256 / 512 / 1024, i.e. every slot from 4 to
    the last one (n_latent = 2*log2(size) - 2). The same rule, start = min(4, n_latent - 2) and
    n = n_latent - start, gives the small test and demo sizes: 8 -> (2, 2), 16 -> (4, 2),
    32 -> (4, 4), 64 -> (4, 6), 128 -> (4, 8).
    """
    n_latent = 2 * int(math.log2(size)) - 2
    start = min(4, n_latent - 2)
    return start, n_latent - start


class Generator(nn.Module):
    """Multi-style inpainting generator.

    Args:
        size: output resolution S (a power of two, >= 8).
        style_dim: width of z, w and each exemplar code (512 in the paper). The global code is
            2 * style_dim wide, so every modulation takes 3 * style_dim inputs.
        n_mlp: depth of the mapping network.
        channel_multiplier: cm in StyleGAN2's channel table (2 in the paper; may be fractional for
            tiny test models).
        channel_max: cap on every layer's channels (512 in the paper; small for tests / demo).
        lr_mlp: learning-rate multiplier of the mapping network.
        blur_kernel: the FIR filter for resampling.
        exemplar_slots: (start, n) — the w slots that exemplar codes replace; ``None`` takes
            :func:`default_exemplar_slots` (the authors' (4, 10/12/14) at 256/512/1024).
    """

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: float = 2,
                 channel_max: int = 512, lr_mlp: float = 0.01,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 exemplar_slots: tuple[int, int] | None = None):
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"Generator size must be a power of two >= 8, got {size}.")
        self.size = size
        self.style_dim = style_dim
        self.log_size = int(math.log2(size))
        self.n_latent = self.log_size * 2 - 2
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.global_dim = 2 * style_dim
        mod_dim = style_dim + self.global_dim  # cat(w_i, global code)

        if exemplar_slots is None:
            exemplar_slots = default_exemplar_slots(size)
        start, n = (int(v) for v in exemplar_slots)
        if start < 0 or n < 1 or start + n > self.n_latent:
            raise ValueError(f"exemplar_slots {exemplar_slots} must satisfy 0 <= start, n >= 1 and "
                             f"start + n <= n_latent = {self.n_latent} at size {size}.")
        self.exemplar_start, self.n_exemplar = start, n

        # Constructor arguments, plain Python values: stored in our checkpoints as the architecture.
        self.kwargs = dict(size=size, style_dim=style_dim, n_mlp=n_mlp,
                           channel_multiplier=channel_multiplier, channel_max=channel_max,
                           lr_mlp=lr_mlp, blur_kernel=list(blur_kernel), exemplar_slots=[start, n])

        self.channels = channel_table(size, channel_multiplier, channel_max)
        ch = self.channels
        blur_kernel = list(blur_kernel)

        # ---- decoder (registered first: the authors' state-dict order) ----
        self.conv1 = StyledConv(ch[4], ch[4], 3, mod_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(ch[4], mod_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = ch[4]
        for i in range(3, self.log_size + 1):
            out_ch = ch[2 ** i]
            self.convs.append(StyledConv(in_ch, out_ch, 3, mod_dim, upsample=True, blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_ch, out_ch, 3, mod_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_ch, mod_dim))
            in_ch = out_ch

        # Fixed per-layer noise maps, used with randomize_noise=False.
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = (layer_idx + 5) // 2
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, 2 ** res, 2 ** res))

        # ---- mapping network: z -> w ----
        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu")
            for _ in range(n_mlp)])

        # ---- image encoder on gin (4 channels) ----
        self.down_from_big = ConvLayer(4, ch[size], 1)
        self.encoder_convs = nn.ModuleList()
        for i in range(self.log_size, 2, -1):
            r = 2 ** i
            self.encoder_convs.append(ConvLayer(ch[r], ch[r], 3))  # skip feature at r
            self.encoder_convs.append(ConvLayer(ch[r], ch[r // 2], 3, downsample=True,
                                                blur_kernel=blur_kernel))
        self.final_layer = ConvLayer(ch[4], ch[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(ch[4] * 16, self.global_dim, activation="fused_lrelu"),
            nn.Dropout(0.5))
        self.final_transfer = EqualLinear(self.global_dim, ch[4] * 16, activation="fused_lrelu")

    # ------------------------------------------------------------------ helpers
    def make_noise(self, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """A fresh list of per-layer noise maps (the shapes of the ``noises`` buffers)."""
        device = self.noises.noise_0.device
        out = []
        for layer_idx in range(self.num_layers):
            res = (layer_idx + 5) // 2
            out.append(torch.randn(1, 1, 2 ** res, 2 ** res, generator=generator).to(device))
        return out

    @torch.no_grad()
    def mean_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """w_avg estimated from ``n`` random z's: [1, style_dim]."""
        device = self.conv1.conv.weight.device
        z = torch.randn(n, self.style_dim, generator=generator).to(device)
        return self.style(z).mean(0, keepdim=True)

    def get_latent(self, z: torch.Tensor) -> torch.Tensor:
        """The mapping network: z [B, style_dim] -> w [B, style_dim]."""
        return self.style(z)

    def encode(self, gin: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor], torch.Tensor]:
        """Image encoder: gin [B,4,S,S] -> (4x4 feature, {resolution: skip feature}, global code).

        The 4x4 feature already has ``final_transfer(global)`` added; the global code is the
        dropped-out output of ``final_linear`` (dropout acts only in training mode).
        """
        batch = gin.shape[0]
        x = self.down_from_big(gin)
        feats: dict[int, torch.Tensor] = {}
        for k in range(0, len(self.encoder_convs), 2):
            x = self.encoder_convs[k](x)
            feats[x.shape[-1]] = x
            x = self.encoder_convs[k + 1](x)
        x = self.final_layer(x)  # [B, ch4, 4, 4]
        global_code = self.final_linear(x.reshape(batch, -1))  # [B, 2*style_dim]
        x = x + self.final_transfer(global_code).view_as(x)
        return x, feats, global_code

    def _check_inputs(self, gin: torch.Tensor, codes: torch.Tensor, styles) -> None:
        s = self.size
        if gin.ndim != 4 or gin.shape[1] != 4 or gin.shape[2] != s or gin.shape[3] != s:
            raise ValueError(f"gin must be [B, 4, {s}, {s}] (cat(image * (1 - mask), mask - 0.5)), "
                             f"got {list(gin.shape)}.")
        want = (gin.shape[0], self.n_exemplar, self.style_dim)
        if codes is None or tuple(codes.shape) != want:
            got = None if codes is None else list(codes.shape)
            raise ValueError(f"codes must be [B, n_exemplar, style_dim] = {list(want)}, got {got}.")
        if not isinstance(styles, (list, tuple)) or len(styles) not in (1, 2):
            raise ValueError("styles must be a list of one or two latent tensors.")

    # ------------------------------------------------------------------ forward
    def forward(self, gin: torch.Tensor, codes: torch.Tensor, styles: Sequence[torch.Tensor], *,
                input_is_latent: bool = False, inject_index: int | None = None,
                truncation: float = 1.0, truncation_latent: torch.Tensor | None = None,
                noise: Sequence[torch.Tensor | None] | None = None, randomize_noise: bool = True,
                random_lambda: float | torch.Tensor = 0.0, return_latents: bool = False):
        """Complete the image.

        Args:
            gin: [B, 4, S, S] = cat(image * (1 - mask), mask - 0.5).
            codes: [B, n_exemplar, style_dim] exemplar codes (from the style encoder).
            styles: list of one or two z's [B, style_dim] (w's with ``input_is_latent``; a single
                w+ [B, n_latent, style_dim] is accepted too).
            inject_index: first slot that takes the second style; drawn from 1..n_latent-1 with
                ``torch.randint`` (seedable with ``torch.manual_seed``) when not given.
            truncation, truncation_latent: w' = w_avg + psi (w - w_avg) when psi < 1.
            noise: per-layer noise maps (overrides ``randomize_noise``); ``randomize_noise=False``
                uses the stored ``noises`` buffers.
            random_lambda: lambda in w[:, start:start+n] = lambda w + (1 - lambda) codes (float or
                a per-sample [B] tensor).
            return_latents: also return w [B, n_latent, style_dim] after the exemplar step.

        Returns:
            image [B, 3, S, S] (RGB skip output, no tanh), or ``(image, w)``.
        """
        self._check_inputs(gin, codes, styles)
        batch = gin.shape[0]

        # (1) mapping
        if not input_is_latent:
            styles = [self.style(z) for z in styles]
        # (2) truncation (per w; exemplar codes are not truncated)
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (e.g. G.mean_latent(4096)).")
            styles = [truncation_latent + truncation * (w - truncation_latent) for w in styles]
        # (3) broadcast to n_latent slots / style mixing
        if len(styles) == 1:
            w = styles[0]
            if w.ndim == 2:
                w = w.unsqueeze(1).repeat(1, self.n_latent, 1)
            elif w.shape[1] != self.n_latent:
                raise ValueError(f"a w+ style must be [B, {self.n_latent}, {self.style_dim}], got {list(w.shape)}.")
        else:
            if inject_index is None:
                # DEVIATION: drawn with torch's RNG instead of Python's `random`, so that
                # torch.manual_seed alone makes mixing reproducible; same uniform 1..n_latent-1.
                # It stays a tensor: no host synchronisation, nothing for torch.compile to
                # specialise on.
                inject_index = torch.randint(1, self.n_latent, ())
            elif not 0 <= inject_index <= self.n_latent:
                raise ValueError(f"inject_index must be in [0, {self.n_latent}], got {inject_index}.")
            # Slots [0, inject_index) take the first style, the rest the second (the authors'
            # cat of repeats, as a select: the same values).
            first = torch.arange(self.n_latent, device=styles[0].device) < inject_index
            w = torch.where(first[None, :, None], styles[0].unsqueeze(1), styles[1].unsqueeze(1))
        # (4) exemplar codes replace slots [start, start + n)
        s0, s1 = self.exemplar_start, self.exemplar_start + self.n_exemplar
        lam = random_lambda
        if torch.is_tensor(lam) and lam.ndim > 0:
            lam = lam.to(w).reshape(-1, 1, 1)
        mixed = lam * w[:, s0:s1] + (1 - lam) * codes.to(w)
        w = torch.cat([w[:, :s0], mixed, w[:, s1:]], 1)  # [B, n_latent, style_dim]

        # image encoder
        feat4, feats, global_code = self.encode(gin)

        if noise is None:
            if randomize_noise:
                noise = [None] * self.num_layers
            else:
                noise = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        elif len(noise) != self.num_layers:
            raise ValueError(f"noise must be a list of {self.num_layers} tensors, got {len(noise)}.")

        # (5) every layer is modulated by cat(w_i, global): all n_latent of them at once, one
        # tensor per slot (no per-layer indexing by a Python int for torch.compile to guard on).
        mod = torch.cat([w, global_code.unsqueeze(1).expand(-1, self.n_latent, -1)], 2).unbind(1)

        out = self.conv1(feat4, mod[0], noise=noise[0])
        skip = self.to_rgb1(out, mod[1])
        for k, to_rgb in enumerate(self.to_rgbs):
            up_conv, conv = self.convs[2 * k], self.convs[2 * k + 1]
            out = up_conv(out, mod[2 * k + 1], noise=noise[2 * k + 1])
            out = out + feats[out.shape[-1]]
            out = conv(out, mod[2 * k + 2], noise=noise[2 * k + 2])
            skip = to_rgb(out, mod[2 * k + 3], skip)
        image = skip
        assert image.shape[0] == batch
        if return_latents:
            return image, w
        return image
