"""Drawn hole masks: the generator interface and the generators that draw at random or by rule
(``free_form``, ``center``, ``large``); :mod:`datasets.masks` describes every kind, builds them
from a config and samples batches.

Every mask is a float tensor ``[1, H, W]`` with **1 = hole, 0 = known**, exactly binary, from
``generator(size, rng)`` (size: int S or (H, W); rng: numpy Generator or seed). All lengths are
given at a reference size and scale with the image.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageDraw

from common.seeding import RngLike, as_rng

SizeLike = Union[int, Tuple[int, int], Sequence[int]]


# ----------------------------------------------------------------------------------------------
# Size and conversion


def _hw(size: SizeLike) -> Tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    else:
        try:
            h, w = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ValueError(f"mask size must be an int or (height, width), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"mask size must be positive, got {size!r}")
    return h, w



def to_mask_tensor(hole: np.ndarray) -> torch.Tensor:
    """Boolean array [H, W] (True = hole) -> float tensor [1, H, W]."""
    return torch.from_numpy(np.ascontiguousarray(hole, dtype=np.float32))[None]


def hole_ratio(mask: Union[torch.Tensor, np.ndarray]) -> float:
    return float(mask.float().mean()) if isinstance(mask, torch.Tensor) else float(np.mean(mask))


# ----------------------------------------------------------------------------------------------
# Generators


class MaskGenerator:
    """Base class: ``generator(size, rng) -> float tensor [1, H, W]``, 1 = hole."""

    kind: str = "base"
    #: Hole-ratio range every mask satisfies (inclusive); used by tests and docs.
    hole_range: Tuple[float, float] = (0.0, 1.0)
    #: False for generators that draw nothing at random (rng may then be None).
    random: bool = True

    def draw(self, height: int, width: int, rng: Optional[np.random.Generator], *,
             index: Optional[int] = None, name: Optional[str] = None) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, size: SizeLike, rng: Optional[RngLike] = None, *,
                 index: Optional[int] = None, name: Optional[str] = None) -> torch.Tensor:
        h, w = _hw(size)
        if rng is not None or (self.random and index is None and name is None):
            rng = as_rng(rng, f"the '{self.kind}' mask generator")
        hole = self.draw(h, w, rng, index=index, name=name)
        return to_mask_tensor(hole)


def _check_range(hole_range) -> Tuple[float, float]:
    lo, hi = (float(v) for v in hole_range)
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"hole_range must satisfy 0 <= low < high <= 1, got {hole_range!r}")
    return lo, hi


def _draw_strokes(draw: ImageDraw.ImageDraw, rng: np.random.Generator, n_strokes: int,
                  height: int, width: int, n_vertex: Tuple[int, int], widths: Tuple[float, float],
                  mean_angle: float = 2 * math.pi / 5, angle_range: float = 2 * math.pi / 15):
    """Free-form brush strokes: polylines with random turns and lengths, round joints."""
    mean_len = math.hypot(height, width) / 8
    for _ in range(n_strokes):
        nv = int(rng.integers(n_vertex[0], n_vertex[1] + 1))
        brush = max(1, int(round(rng.uniform(widths[0], widths[1]))))
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        turns = mean_angle + rng.uniform(-angle_range, angle_range, size=nv)
        lengths = np.clip(rng.normal(mean_len, mean_len / 2, size=nv), 0, 2 * mean_len)
        points = [(x, y)]
        for i in range(nv):
            # Alternate the turning direction so a stroke zig-zags instead of circling.
            angle = 2 * math.pi - turns[i] if i % 2 == 0 else turns[i]
            x = min(max(x + lengths[i] * math.cos(angle), 0.0), width - 1.0)
            y = min(max(y + lengths[i] * math.sin(angle), 0.0), height - 1.0)
            points.append((x, y))
        draw.line(points, fill=255, width=brush)
        r = brush / 2
        for px, py in points:
            draw.ellipse([px - r, py - r, px + r, py + r], fill=255)


class FreeFormMasks(MaskGenerator):
    """Rectangles + free-form strokes: the training masks of the 256 setting.

    Lengths are in pixels at ``ref_size`` (256) and scale with the mask size.
    """

    kind = "free_form"

    def __init__(self, hole_range=(0.05, 0.6), strokes=(1, 4), vertices=(4, 12),
                 stroke_width=(12, 40), rects=(0, 3), rect_side=(0.1, 0.4), ref_size=256,
                 max_tries=100):
        self.hole_range = _check_range(hole_range)
        self.strokes, self.vertices = tuple(strokes), tuple(vertices)
        self.stroke_width, self.rects = tuple(stroke_width), tuple(rects)
        self.rect_side, self.ref_size, self.max_tries = tuple(rect_side), ref_size, max_tries

    def _once(self, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        scale = math.sqrt(h * w) / self.ref_size
        img = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(img)
        _draw_strokes(draw, rng, int(rng.integers(self.strokes[0], self.strokes[1] + 1)), h, w,
                      self.vertices, (self.stroke_width[0] * scale, self.stroke_width[1] * scale))
        hole = np.asarray(img) > 127
        for _ in range(int(rng.integers(self.rects[0], self.rects[1] + 1))):
            rh = max(1, int(rng.uniform(*self.rect_side) * h))
            rw = max(1, int(rng.uniform(*self.rect_side) * w))
            top = int(rng.integers(0, h - rh + 1))
            left = int(rng.integers(0, w - rw + 1))
            hole[top:top + rh, left:left + rw] = True
        return hole

    def draw(self, height, width, rng, *, index=None, name=None):
        return _rejection(self, lambda: self._once(height, width, rng))


def _rejection(gen: MaskGenerator, once) -> np.ndarray:
    lo, hi = gen.hole_range
    for _ in range(gen.max_tries):
        hole = once()
        r = hole.mean()
        if lo <= r <= hi and r > 0:
            return hole
    raise RuntimeError(f"the '{gen.kind}' mask generator found no mask with a hole ratio in "
                       f"{gen.hole_range} after {gen.max_tries} tries; widen hole_range.")


class CenterMask(MaskGenerator):
    """Centred square hole of side S/2 (rounded down): the centre-mask evaluation protocol."""

    kind = "center"
    random = False

    def __init__(self, fraction: float = 0.5):
        self.fraction = float(fraction)
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        self.hole_range = (self.fraction ** 2 * 0.9, min(1.0, self.fraction ** 2 * 1.1))

    def draw(self, height, width, rng, *, index=None, name=None):
        hole = np.zeros((height, width), dtype=bool)
        mh, mw = max(1, int(height * self.fraction)), max(1, int(width * self.fraction))
        top, left = (height - mh) // 2, (width - mw) // 2
        hole[top:top + mh, left:left + mw] = True
        return hole


class LargeMasks(MaskGenerator):
    """CoModGAN-style large masks (boxes + many wide strokes): the 512 training setting.

    Lengths are in pixels at ``ref_size`` (512) and scale with the mask size. ``hole_range``
    also sets how much is drawn (``coef = min(low + high, 1)``), as in CoModGAN.
    """

    kind = "large"

    def __init__(self, hole_range=(0.0, 1.0), ref_size=512, stroke_width=(12, 48),
                 vertices=(4, 18), max_tries=200):
        self.hole_range = _check_range(hole_range)
        self.ref_size, self.stroke_width = ref_size, tuple(stroke_width)
        self.vertices, self.max_tries = tuple(vertices), max_tries

    def _once(self, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        coef = min(self.hole_range[0] + self.hole_range[1], 1.0)
        hole = np.zeros((h, w), dtype=bool)

        def boxes(max_count: int, max_h: int, max_w: int):
            for _ in range(int(rng.integers(max_count)) if max_count > 0 else 0):
                bh, bw = int(rng.integers(max_h)), int(rng.integers(max_w))
                # A box may hang over the border by up to half its size.
                top = int(rng.integers(-(bh // 2), h - bh + bh // 2 + 1))
                left = int(rng.integers(-(bw // 2), w - bw + bw // 2 + 1))
                hole[max(top, 0):max(top + bh, 0), max(left, 0):max(left + bw, 0)] = True

        boxes(int(10 * coef), h // 2, w // 2)
        boxes(int(5 * coef), h, w)
        scale = math.sqrt(h * w) / self.ref_size
        img = Image.new("L", (w, h), 0)
        max_strokes = int(20 * coef ** 2)
        n = int(rng.integers(max_strokes)) if max_strokes > 0 else 0
        _draw_strokes(ImageDraw.Draw(img), rng, n, h, w, self.vertices,
                      (self.stroke_width[0] * scale, self.stroke_width[1] * scale))
        strokes = np.asarray(img) > 127
        if rng.random() < 0.5:
            strokes = strokes[:, ::-1]
        if rng.random() < 0.5:
            strokes = strokes[::-1, :]
        return hole | strokes

    def draw(self, height, width, rng, *, index=None, name=None):
        return _rejection(self, lambda: self._once(height, width, rng))
