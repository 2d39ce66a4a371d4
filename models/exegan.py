"""Inference wrapper for EXE-GAN: exemplar-guided face inpainting and exemplar style mixing
(Lu et al., Neurocomputing 2025, Sec. 3 and the style-mixing results of Sec. 4).

``EXEGAN`` pairs the multi-style generator with the frozen pSp style encoder:

    codes = E(exemplar)                                  # [B, n_exemplar, 512]
    gin   = cat(image * (1 - mask), mask - 0.5)          # [B, 4, S, S]
    pred  = G(gin, codes, [z])                           # G in eval mode, no grad
    out   = image * (1 - mask) + pred * mask             # known pixels returned untouched

Inputs are validated at this boundary (docs/architecture.md, Conventions): images in [-1, 1] at the generator's
size, binary masks [B, 1, S, S] with 1 = hole, matching batch sizes; a single image [3, S, S] with a
mask [1, S, S] is accepted and gives a single image back.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import torch
from torch import nn

from common.errors import UserError
from models.checkpoint import load_generator
from models.generator import Generator
from models.psp import load_style_encoder


class InputError(UserError, ValueError):
    """Inputs of ``EXEGAN.inpaint`` / ``style_mix`` the caller has to fix."""


def make_gin(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The generator input ``cat(image * (1 - mask), mask - 0.5)`` [B, 4, S, S]: the known
    pixels, holes zeroed, and the mask shifted to {-0.5, 0.5}.

    images [B, 3, S, S] in [-1, 1]; masks [B, 1, S, S], 1 = hole. The one definition used by
    inference (``EXEGAN``), the training loop, the sample grids and the sketch input
    (``models.sketch.sketch_gin`` appends its channel to this).
    """
    return torch.cat([images * (1 - masks), masks - 0.5], 1)


def composite(images: torch.Tensor, masks: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """The completed image ``image * (1 - mask) + pred * mask`` for a binary mask (1 = hole).

    Written as a selection, so known pixels are ``images`` bit for bit (whatever ``pred`` holds
    there, even inf / NaN) and hole pixels are ``pred``; for finite values it equals the
    arithmetic form (``torch.equal``: only the sign of an exact zero can differ), and its gradient
    is the upstream gradient on holes and 0 on known pixels, as the arithmetic form's. Shapes
    broadcast (masks [B, 1, S, S] against [B, 3, S, S]); the result has the promoted dtype.
    """
    return torch.where(masks.bool(), pred, images)


class EXEGAN(nn.Module):
    """Generator + style encoder, ready for inference.

    Args:
        generator: a :class:`models.Generator` (usually G_ema); it is run in ``eval()`` mode.
        style_encoder: any module mapping exemplars [B, 3, H, W] in [-1, 1] to codes
            [B, generator.n_exemplar, generator.style_dim] (``models.StyleEncoder`` for the
            released networks).
        mean_latent_samples: number of z's for w_avg when ``truncation < 1`` (drawn from a fixed
            seed, so truncated results are reproducible).
    """

    def __init__(self, generator: Generator, style_encoder: nn.Module, *,
                 mean_latent_samples: int = 4096):
        super().__init__()
        self.generator = generator
        self.style_encoder = style_encoder
        self.mean_latent_samples = mean_latent_samples
        self._w_avg: torch.Tensor | None = None
        self.eval()

    @classmethod
    def from_checkpoints(cls, exe_ckpt: str | os.PathLike, psp_ckpt: str | os.PathLike,
                         device: torch.device | str = "cpu", *, which: str = "g_ema") -> "EXEGAN":
        """Load G (entry ``which`` of an EXE-GAN checkpoint, ours or the authors') and the pSp
        encoder whose heads cover G's exemplar slots."""
        generator = load_generator(exe_ckpt, device, which=which)
        # Mapped from the file: an exemplar reads only the heads of G's slots (see load_style_encoder).
        encoder = load_style_encoder(psp_ckpt, generator.exemplar_start, generator.n_exemplar, device,
                                     mapped=True)
        return cls(generator, encoder).to(device)

    def compile(self, **kwargs) -> "EXEGAN":
        """Compile the generator's and the style encoder's forward passes with ``torch.compile``
        (in place, as ``nn.Module.compile``; state-dict keys and attributes are unchanged) and
        return ``self``. ``kwargs`` go to ``torch.compile``.

        Worth it for many images: the first call per input shape compiles (51 s for the full-size
        256-px networks on a 2-core CPU), later calls were x1.12-1.17 faster there
        (docs/benchmarks.md). Each network traces into one graph, the compiled CUDA ops included
        (torch.library custom ops, docs/ops.md), and new inputs of the same shape reuse it without recompiling
        (tests/models/test_compile.py). Results equal the eager ones up to float rounding; known pixels are
        still the input's, bit for bit (the final merge runs outside the compiled networks).
        """
        self.generator.compile(**kwargs)
        self.style_encoder.compile(**kwargs)
        return self

    @property
    def size(self) -> int:
        return self.generator.size

    @property
    def device(self) -> torch.device:
        return self.generator.conv1.conv.weight.device

    # ------------------------------------------------------------------------------ validation
    def _image(self, x: torch.Tensor, name: str, single: bool, *, any_size: bool = False) -> torch.Tensor:
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise InputError(f"{name} must be a float tensor in [-1, 1], got {type(x).__name__}"
                             f"{'' if not torch.is_tensor(x) else ' of dtype ' + str(x.dtype)}.")
        if single:
            x = x.unsqueeze(0)
        s = self.size
        if x.ndim != 4 or x.shape[1] != 3 or (not any_size and tuple(x.shape[2:]) != (s, s)):
            want = "[B, 3, H, W]" if any_size else f"[B, 3, {s}, {s}] (or [3, {s}, {s}])"
            raise InputError(f"{name} must be {want} for this {s}x{s} model, got "
                             f"{list(x.shape[1:] if single else x.shape)}.")
        if not torch.isfinite(x).all() or x.min() < -1.0 - 1e-4 or x.max() > 1.0 + 1e-4:
            raise InputError(f"{name} must hold finite values in [-1, 1] (got range "
                             f"[{x.min().item():.3g}, {x.max().item():.3g}]); map [0, 1] images with x * 2 - 1.")
        return x

    def _prepare(self, images, masks, exemplars: Sequence[torch.Tensor]):
        single = torch.is_tensor(images) and images.ndim == 3
        images = self._image(images, "images", single)
        if not torch.is_tensor(masks) or not masks.is_floating_point():
            raise InputError("masks must be a float tensor with 1 = hole, 0 = known.")
        if single:
            masks = masks.unsqueeze(0)
        s, b = self.size, images.shape[0]
        if tuple(masks.shape) != (b, 1, s, s):
            raise InputError(f"masks must be [{b}, 1, {s}, {s}] (1 = hole, 0 = known) to match the "
                             f"images, got {list(masks.shape[1:] if single else masks.shape)}.")
        if not ((masks == 0) | (masks == 1)).all():
            raise InputError("masks must be binary (1 = hole, 0 = known); threshold them at 0.5 first.")
        out = []
        for i, ex in enumerate(exemplars):
            name = "exemplars" if len(exemplars) == 1 else f"exemplar_{'ab'[i]}"
            ex = self._image(ex, name, torch.is_tensor(ex) and ex.ndim == 3, any_size=True)
            if ex.shape[0] not in (1, b):
                raise InputError(f"{name} has batch size {ex.shape[0]} but images have {b}; "
                                 f"pass one exemplar per image or a single exemplar for all.")
            out.append(ex.expand(b, -1, -1, -1))
        device = self.device
        return images.to(device), masks.to(device), [e.to(device) for e in out], single

    # ------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def encode_exemplars(self, exemplars: torch.Tensor) -> torch.Tensor:
        """Exemplar codes [B, n_exemplar, style_dim] from the style encoder."""
        g = self.generator
        was_training = self.style_encoder.training
        self.style_encoder.eval()
        try:
            codes = self.style_encoder(exemplars.to(self.device))
        finally:
            self.style_encoder.train(was_training)
        want = (exemplars.shape[0], g.n_exemplar, g.style_dim)
        if tuple(codes.shape) != want:
            raise InputError(f"the style encoder gives codes {list(codes.shape)} but the generator needs "
                             f"{list(want)}; load an encoder for exemplar slots [{g.exemplar_start}, "
                             f"{g.exemplar_start + g.n_exemplar}).")
        return codes

    @torch.no_grad()
    def mean_latent(self) -> torch.Tensor:
        """w_avg [1, style_dim] from ``mean_latent_samples`` z's of a fixed seed (cached)."""
        if self._w_avg is None or self._w_avg.device != self.device:
            gen = torch.Generator().manual_seed(0)
            self._w_avg = self.generator.mean_latent(self.mean_latent_samples, generator=gen)
        return self._w_avg

    @torch.no_grad()
    def complete(self, images: torch.Tensor, masks: torch.Tensor, codes: torch.Tensor, *,
                 truncation: float = 1.0, seed: int | None = None,
                 noise: Sequence[torch.Tensor] | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        """Run G on already validated [B, ...] tensors with given codes; returns completed images.

        z: [B, style_dim] (or [style_dim], shared); drawn from ``seed`` (or the global RNG) if None.
        noise: per-layer noise list; with a ``seed`` and no list, noise maps are drawn from the seed
        too, otherwise fresh random noise is used.
        """
        g = self.generator
        b = images.shape[0]
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        if z is None:
            z = torch.randn(b, g.style_dim, generator=gen)
        else:
            if z.ndim == 1:
                z = z.unsqueeze(0).expand(b, -1)
            if tuple(z.shape) != (b, g.style_dim):
                raise InputError(f"z must be [{b}, {g.style_dim}] or [{g.style_dim}], got {list(z.shape)}.")
        z = z.to(self.device, images.dtype)
        if noise is None and gen is not None:
            noise = g.make_noise(generator=gen)
        if noise is not None:
            noise = [n.to(self.device) for n in noise]
        w_avg = self.mean_latent() if truncation < 1 else None

        gin = make_gin(images, masks)
        was_training = g.training
        g.eval()  # dropout off: inference always runs G as G_ema runs in the authors' test code
        try:
            pred = g(gin, codes, [z], truncation=truncation, truncation_latent=w_avg, noise=noise)
        finally:
            g.train(was_training)
        # The generator has no output nonlinearity; images are [-1, 1] by convention.
        pred = pred.clamp(-1, 1)
        return composite(images, masks, pred)  # known pixels bit-exact

    def inpaint(self, images: torch.Tensor, masks: torch.Tensor, exemplars: torch.Tensor, *,
                truncation: float = 1.0, seed: int | None = None,
                noise: Sequence[torch.Tensor] | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        """Fill the holes of ``images`` guided by ``exemplars``.

        Args:
            images: [B, 3, S, S] (or [3, S, S]) in [-1, 1].
            masks: [B, 1, S, S] (or [1, S, S]), 1 = hole, 0 = known.
            exemplars: [B, 3, H, W] (or [3, H, W], or batch 1 for all images) in [-1, 1]; the style
                encoder resizes them.
            truncation: psi; < 1 pulls the random style towards w_avg.
            seed: makes z and the noise maps reproducible.
            noise, z: explicit noise maps / latent (override the seed for that part).

        Returns:
            completed images on the input's device, shaped like ``images``; known pixels are the
            input's, bit for bit.
        """
        out_device = images.device if torch.is_tensor(images) else self.device
        images, masks, (exemplars,), single = self._prepare(images, masks, [exemplars])
        codes = self.encode_exemplars(exemplars)
        out = self.complete(images, masks, codes, truncation=truncation, seed=seed, noise=noise, z=z)
        out = out.to(out_device)
        return out[0] if single else out

    def style_mix(self, images: torch.Tensor, masks: torch.Tensor, exemplar_a: torch.Tensor,
                  exemplar_b: torch.Tensor, layers: Iterable[int], *, truncation: float = 1.0,
                  seed: int | None = None, noise: Sequence[torch.Tensor] | None = None,
                  z: torch.Tensor | None = None) -> torch.Tensor:
        """Inpaint with exemplar codes mixed per layer: the w slots listed in ``layers`` take B's
        codes, the other exemplar slots take A's.

        ``layers`` are generator layer (w slot) indices and must lie in the exemplar range
        [exemplar_start, exemplar_start + n_exemplar) — e.g. 4..13 at 256 px, where low indices
        drive coarse structure and high ones colour and texture. Other arguments as in
        :meth:`inpaint`; use the same ``seed`` to compare mixes.
        """
        g = self.generator
        lo, hi = g.exemplar_start, g.exemplar_start + g.n_exemplar
        layers = [int(i) for i in layers]
        bad = [i for i in layers if not lo <= i < hi]
        if bad:
            raise InputError(f"style_mix layers {bad} are outside the exemplar slots [{lo}, {hi}) of this "
                             f"{g.size}x{g.size} generator.")
        out_device = images.device if torch.is_tensor(images) else self.device
        images, masks, (ex_a, ex_b), single = self._prepare(images, masks, [exemplar_a, exemplar_b])
        codes = self.encode_exemplars(ex_a).clone()
        codes_b = self.encode_exemplars(ex_b)
        idx = [i - lo for i in layers]
        codes[:, idx] = codes_b[:, idx]
        out = self.complete(images, masks, codes, truncation=truncation, seed=seed, noise=noise, z=z)
        out = out.to(out_device)
        return out[0] if single else out
