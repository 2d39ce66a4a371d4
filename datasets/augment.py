"""DiffAugment-style augmentation applied identically to images and their hole masks.

Differentiable augmentation (Zhao et al., 2020) for the discriminator's inputs, optional in
EXE-GAN training (docs/datasets.md, Augmentation) and off by default. Two policies, with DiffAugment's numbers
for images in [-1, 1]:

- ``color``: brightness ``x + U(-0.5, 0.5)``; saturation: each pixel's deviation from its
  channel mean scaled by ``U(0, 2)``; contrast: deviation from the image mean scaled by
  ``U(0.5, 1.5)``. Only the image changes; the mask is returned untouched. No clamping (as in
  DiffAugment), so the image may leave [-1, 1].
- ``translation``: an integer shift of up to ``ratio * size`` pixels (default 1/8) in x and y,
  the **same shift for the image and its mask**, so the hole stays on the same content. Pixels
  shifted in from outside are 0 in the image (mid-grey) and ``mask_fill`` (default 0 = known)
  in the mask: they carry no content to fill.

Each sample of the batch draws its own parameters from the caller's numpy Generator, so the
augmentation is reproducible and its state can be checkpointed (:mod:`common.seeding`). All ops
are differentiable with respect to the image.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from common.seeding import RngLike, as_rng

POLICIES = ("color", "translation")


def _uniform(rng: np.random.Generator, lo: float, hi: float, n: int, like: torch.Tensor):
    v = torch.from_numpy(rng.uniform(lo, hi, size=n).astype(np.float32))
    return v.to(device=like.device, dtype=like.dtype).view(n, 1, 1, 1)


def color(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Brightness, saturation, contrast (in that order), per-sample factors."""
    n = image.shape[0]
    image = image + _uniform(rng, -0.5, 0.5, n, image)
    mean = image.mean(dim=1, keepdim=True)
    image = (image - mean) * _uniform(rng, 0.0, 2.0, n, image) + mean
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    image = (image - mean) * _uniform(rng, 0.5, 1.5, n, image) + mean
    return image


def shift(x: torch.Tensor, dy: int, dx: int, fill: float = 0.0) -> torch.Tensor:
    """Shift a [C, H, W] tensor by (dy, dx) pixels (content moves down/right for positive
    values); uncovered pixels take ``fill``."""
    _, h, w = x.shape
    out = torch.full_like(x, fill)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_y = slice(max(0, -dy), h - max(0, dy))
    dst_y = slice(max(0, dy), h - max(0, -dy))
    src_x = slice(max(0, -dx), w - max(0, dx))
    dst_x = slice(max(0, dx), w - max(0, -dx))
    out[:, dst_y, dst_x] = x[:, src_y, src_x]
    return out


def translation_offsets(n: int, height: int, width: int, ratio: float,
                        rng: np.random.Generator) -> np.ndarray:
    """Per-sample integer (dy, dx) in [-ratio*size, ratio*size], shape [n, 2]."""
    sy, sx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = rng.integers(-sy, sy + 1, size=n)
    dx = rng.integers(-sx, sx + 1, size=n)
    return np.stack([dy, dx], axis=1)


def translate(image: torch.Tensor, mask: Optional[torch.Tensor], rng: np.random.Generator,
              ratio: float = 0.125, mask_fill: float = 0.0):
    """Same random shift for each image and its mask; returns (image, mask)."""
    n, _, h, w = image.shape
    offsets = translation_offsets(n, h, w, ratio, rng)
    image = torch.stack([shift(image[i], int(dy), int(dx)) for i, (dy, dx) in enumerate(offsets)])
    if mask is not None:
        mask = torch.stack([shift(mask[i], int(dy), int(dx), mask_fill)
                            for i, (dy, dx) in enumerate(offsets)])
    return image, mask


class DiffAugment:
    """``augment(image, mask, rng) -> (image, mask)``; the identity when ``policy`` is empty.

    Args:
        policy: comma-separated subset of ``color,translation`` (``''`` = off, the default).
        translation_ratio: maximum shift as a fraction of the image size.
        mask_fill: mask value of pixels shifted in from outside (0 = known, 1 = hole).
    """

    def __init__(self, policy: Union[str, Sequence[str]] = "", translation_ratio: float = 0.125,
                 mask_fill: float = 0.0):
        if isinstance(policy, str):
            policy = [p.strip() for p in policy.split(",") if p.strip()]
        unknown = [p for p in policy if p not in POLICIES]
        if unknown:
            raise ValueError(f"unknown DiffAugment policy {unknown}; choose from {POLICIES}")
        if mask_fill not in (0, 1):
            raise ValueError(f"mask_fill must be 0 or 1, got {mask_fill!r}")
        self.policy: Tuple[str, ...] = tuple(policy)
        self.translation_ratio = float(translation_ratio)
        self.mask_fill = float(mask_fill)

    @property
    def enabled(self) -> bool:
        return bool(self.policy)

    def __call__(self, image: torch.Tensor, mask: Optional[torch.Tensor] = None,
                 rng: Optional[RngLike] = None):
        if image.dim() != 4:
            raise ValueError(f"image must be [B, C, H, W], got {list(image.shape)}")
        if mask is not None and (mask.dim() != 4 or mask.shape[0] != image.shape[0]
                                 or mask.shape[-2:] != image.shape[-2:]):
            raise ValueError(f"mask {list(mask.shape)} does not match image {list(image.shape)}")
        if not self.policy:
            return image, mask
        rng = as_rng(rng, "DiffAugment")
        for p in self.policy:
            if p == "color":
                image = color(image, rng)
            elif p == "translation":
                image, mask = translate(image, mask, rng, self.translation_ratio, self.mask_fill)
        return image, mask

    def __repr__(self) -> str:
        return f"DiffAugment(policy={','.join(self.policy)!r})"
