"""Hole masks: the paper's training masks, the evaluation masks, and mask files.

Every mask is a float tensor ``[1, H, W]`` with **1 = hole, 0 = known**, exactly binary. All
generators share one call signature::

    mask = generator(size, rng)              # size: int S or (H, W); rng: numpy Generator or seed
    mask = generator(size, rng, index=i)     # mask files: the i-th file (fixed evaluation lists)
    mask = generator(size, name="a/01.png")  # paired files: the mask of that image

and :func:`make_mask_generator` builds one from a config (``kind: free_form | center | large |
files | paired``). :class:`MaskSampler` draws a batch ``[B, 1, H, W]`` for the training loop
from a generator it owns, with a serialisable RNG state for resuming.

Kinds (hole ratio = fraction of hole pixels; ranges measured over 1000 masks, see
``docs/datasets.md``):

- ``free_form`` (alias ``mixed``): the 256 setting's training masks —
  1–4 free-form brush strokes plus 0–3 axis-aligned rectangles. Strokes follow the usual
  free-form generator: 4–12 vertices, each segment turning by ``2π/5 ± 2π/15`` (alternating
  direction), segment length ~ N(d/8, d/16) clipped to [0, d/4] with d the image diagonal,
  width U[12, 40] px, round joints. Rectangles have sides U[S/10, S/2.5]. All lengths are given
  at 256 px and scale with the image. Masks outside ``hole_range`` (default 5–60 %) are redrawn;
  the result has median ~26 %, 5th–95th percentile ~9–44 %.
- ``center``: a centred square of side S/2 (evaluation; ratio 25 %).
- ``large``: CoModGAN-style large masks for the 512 setting — up to 9 boxes of side
  < S/2 and up to 4 of side < S (each may hang half over the border), plus up to 19 brush strokes
  of 4–18 vertices and width U[12, 48] px at 512 (scaled with the image), randomly mirrored.
  Redrawn until the ratio is inside ``hole_range`` (default (0, 1]: CoModGAN's training
  setting); the result is heavy: median ~68 %, 5th–95th percentile ~31–90 %.
- ``files`` (alias ``irregular``): mask files such as the NVIDIA irregular mask test set,
  grouped by hole ratio into the buckets 0–10 %, 10–20 %, …, 50–60 % (:data:`BUCKETS`).
- ``paired``: one mask file per image, matched by file name (relative path without extension).

Mask files are read as grayscale, thresholded at half of their value range (8- or 16-bit),
centre-cropped to a square like the images, and resized with nearest neighbour. Which side of
the threshold is the hole is the explicit option ``hole_value``: ``1`` (default) = **white is
hole**, the NVIDIA irregular-mask convention; ``0`` = black is hole. A file that is not binary
(more than 25 % of its pixels in the middle half of the range) raises :class:`MaskError`.

DEVIATION: the authors draw one mask per iteration and share it across the batch; we draw one
per sample by default (``MaskSampler(per_sample=True)``); ``per_sample=False`` is theirs.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from common.imagefile import mask_bits
from datasets.errors import MaskError
from datasets.imaging import DECODE_ERRORS, center_crop_box, rel_stem, scan_images
from datasets.pairing import NamedFiles, NamePattern
from common.seeding import RngLike, as_rng, rng_from_state, rng_state

SizeLike = Union[int, Tuple[int, int], Sequence[int]]

#: Hole-ratio buckets of the irregular-mask protocol, as (low, high]: bucket 0 also takes 0.
BUCKETS: Tuple[Tuple[float, float], ...] = tuple((k / 10, (k + 1) / 10) for k in range(6))
BUCKET_LABELS: Tuple[str, ...] = tuple(f"{10 * k}-{10 * (k + 1)}" for k in range(6))
#: Name of the hole-ratio index a mask folder may carry (see scripts/make_mask_buckets.py).
INDEX_FILE = "mask_ratios.json"
#: File that scripts/make_mask_buckets.py --copy-into leaves in its copy folder: a mask folder
#: scan skips every folder holding it, so copies made inside the root are not counted twice.
COPIES_MARKER = ".mask_bucket_copies"
#: A mask file may have at most this fraction of pixels in the middle half of its range.
MAX_GREY_FRACTION = 0.25


# ----------------------------------------------------------------------------------------------
# Validation and conversion


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


def validate_mask(mask: torch.Tensor, size: Optional[SizeLike] = None,
                  batch: Optional[int] = None, what: str = "mask") -> torch.Tensor:
    """Check a mask tensor ``[1, H, W]`` or ``[B, 1, H, W]``: floating, exactly 0/1, right size.

    Raises :class:`MaskError` with one sentence naming ``what`` otherwise; returns ``mask``.
    """
    if not isinstance(mask, torch.Tensor):
        raise MaskError(f"{what} must be a torch tensor, got {type(mask).__name__}.")
    if mask.dim() not in (3, 4) or mask.shape[-3] != 1:
        raise MaskError(f"{what} must have shape [1, H, W] or [B, 1, H, W], "
                        f"got {list(mask.shape)}.")
    if not mask.is_floating_point():
        raise MaskError(f"{what} must be a float tensor (1 = hole, 0 = known), got {mask.dtype}.")
    if size is not None and tuple(mask.shape[-2:]) != _hw(size):
        raise MaskError(f"{what} is {mask.shape[-2]}x{mask.shape[-1]} but the images are "
                        f"{_hw(size)[0]}x{_hw(size)[1]}; give masks of the image size.")
    if batch is not None and (mask.dim() != 4 or mask.shape[0] != batch):
        raise MaskError(f"{what} has shape {list(mask.shape)}, expected a batch of {batch}.")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise MaskError(f"{what} must be binary (0 = known, 1 = hole); it holds values in "
                        f"[{mask.min().item():.3g}, {mask.max().item():.3g}].")
    return mask


def to_mask_tensor(hole: np.ndarray) -> torch.Tensor:
    """Boolean array [H, W] (True = hole) -> float tensor [1, H, W]."""
    return torch.from_numpy(np.ascontiguousarray(hole, dtype=np.float32))[None]


def hole_ratio(mask: Union[torch.Tensor, np.ndarray]) -> float:
    return float(mask.float().mean()) if isinstance(mask, torch.Tensor) else float(np.mean(mask))


def bucket_index(hole_pixels: int, total_pixels: int) -> int:
    """Bucket of a hole ratio: k such that ratio is in (k/10, (k+1)/10] (0 for ratio 0).

    Integer arithmetic, so ratios exactly on a boundary (e.g. 10 %) land in the lower bucket
    regardless of float rounding. Ratios above 60 % give 6 and more (outside :data:`BUCKETS`).
    """
    return max(0, -(-hole_pixels * 10 // total_pixels) - 1)


def bucket_label(index: int) -> str:
    return BUCKET_LABELS[index] if index < len(BUCKET_LABELS) else "60-100"


def read_mask_file(path: str, hole_value: int = 1) -> np.ndarray:
    """Read a mask file at its own resolution: boolean [H, W], True = hole.

    Grayscale after conversion (8- or 16-bit, RGB is turned to luma, alpha is ignored),
    thresholded at half of the value range; ``hole_value`` says which side is the hole.
    """
    if hole_value not in (0, 1):
        raise ValueError(f"hole_value must be 1 (white = hole) or 0 (black = hole), "
                         f"got {hole_value!r}")
    try:
        bright, grey = mask_bits(path)
    except DECODE_ERRORS as e:
        raise MaskError(f"Cannot read mask file '{path}' ({type(e).__name__}: {e}); "
                        "remove or replace it.") from None
    if grey > MAX_GREY_FRACTION:
        raise MaskError(f"Mask file '{path}' is not a binary mask ({100 * grey:.0f}% of its "
                        "pixels are mid-grey); give black-and-white mask images.")
    return bright if hole_value == 1 else ~bright


def fit_mask(hole: np.ndarray, size: SizeLike) -> np.ndarray:
    """Centre-crop a boolean mask to a square (like the images) and resize it with nearest."""
    h, w = _hw(size)
    if hole.shape != (h, w):
        H, W = hole.shape
        if h == w and H != W:
            left, top, right, bottom = center_crop_box(W, H)
            hole = hole[top:bottom, left:right]
        if hole.shape != (h, w):
            img = Image.fromarray(hole.astype(np.uint8) * 255, "L")
            hole = np.asarray(img.resize((w, h), Image.NEAREST)) > 127
    return hole


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


def _scan_mask_folder(root: str, hole_value: int) -> List[str]:
    """Validate ``hole_value`` and list the image files of a mask folder (one clear error if none)."""
    if hole_value not in (0, 1):
        raise ValueError(f"hole_value must be 1 (white = hole) or 0 (black = hole), "
                         f"got {hole_value!r}")
    try:
        names = scan_images(root)
    except Exception as e:
        raise MaskError(str(e).replace("Image folder", "Mask folder")) from None
    names = without_bucket_copies(root, names)
    if not names:
        raise MaskError(f"Mask folder '{root}' contains no image files; check the path.")
    return names


def without_bucket_copies(root: str, names: Sequence[str]) -> List[str]:
    """``names`` (relative to ``root``) less those under a folder that holds
    :data:`COPIES_MARKER` (the copies of ``make_mask_buckets.py --copy-into``)."""
    marked: Dict[str, bool] = {}

    def copies(folder: str) -> bool:
        if folder not in marked:
            parent = os.path.dirname(folder)
            marked[folder] = bool(folder) and (
                os.path.isfile(os.path.join(root, folder, COPIES_MARKER)) or copies(parent))
        return marked[folder]
    return [n for n in names if not copies(os.path.dirname(n.replace(os.sep, "/")))]


class MaskFiles(MaskGenerator):
    """A folder of mask files (e.g. the NVIDIA irregular mask test set), optionally one bucket.

    Args:
        root: folder scanned recursively for image files (sorted order).
        hole_value: 1 = white is hole (default, NVIDIA convention), 0 = black is hole.
        bucket: restrict to one hole-ratio bucket: an index 0..5, a label ``"10-20"``, or a
            ``(low, high)`` ratio interval (low exclusive except at 0, high inclusive).
        index_file: JSON of precomputed hole ratios (``scripts/make_mask_buckets.py``);
            default ``<root>/mask_ratios.json`` when present. Ratios are computed at each file's
            own resolution (before resizing), as the NVIDIA buckets are defined.

    ``generator(size, rng)`` picks a random file; ``generator(size, index=i)`` gives file
    ``i % len`` (fixed evaluation lists).
    """

    kind = "files"

    def __init__(self, root: str, hole_value: int = 1, bucket=None,
                 index_file: Optional[str] = None, progress: bool = False):
        names = _scan_mask_folder(root, hole_value)
        self.root, self.hole_value, self.progress = root, hole_value, progress
        self.all_names: List[str] = names
        self._index_file = index_file
        self._stats: Optional[Dict[str, dict]] = None
        self.bucket = bucket
        if bucket is None:
            self.names = list(names)
        else:
            lo, hi = self._bucket_range(bucket)
            self.hole_range = (lo, hi)
            if isinstance(bucket, str) or (isinstance(bucket, (int, np.integer))
                                           and not isinstance(bucket, bool)):
                # Standard buckets: exact integer test on the pixel counts.
                k = BUCKETS.index((lo, hi))
                self.names = [n for n in names if bucket_index(self.stats[n]["holes"],
                                                               self.stats[n]["pixels"]) == k]
            else:
                self.names = [n for n in names if _in_interval(self.stats[n]["ratio"], lo, hi)]
            if not self.names:
                raise MaskError(f"Mask folder '{root}' has no mask with a hole ratio in "
                                f"({lo:.2f}, {hi:.2f}] (hole_value={hole_value}); check the "
                                "folder and hole_value.")
        self.paths = [os.path.join(root, n) for n in self.names]

    @staticmethod
    def _bucket_range(bucket) -> Tuple[float, float]:
        if isinstance(bucket, str):
            if bucket not in BUCKET_LABELS:
                raise ValueError(f"bucket must be one of {BUCKET_LABELS}, got {bucket!r}")
            return BUCKETS[BUCKET_LABELS.index(bucket)]
        if isinstance(bucket, (int, np.integer)) and not isinstance(bucket, bool):
            if not 0 <= bucket < len(BUCKETS):
                raise ValueError(f"bucket index must be 0..{len(BUCKETS) - 1}, got {bucket}")
            return BUCKETS[int(bucket)]
        lo, hi = (float(v) for v in bucket)
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"bucket interval must satisfy 0 <= low < high <= 1, got {bucket!r}")
        return lo, hi

    @property
    def stats(self) -> Dict[str, dict]:
        """Per file of the folder: ``ratio``, ``holes`` (pixel count), ``pixels``, ``height``,
        ``width``, ``bucket`` label — at the file's own resolution, computed once."""
        if self._stats is None:
            self._stats = self._load_or_compute_stats()
        return self._stats

    @property
    def ratios(self) -> Dict[str, float]:
        """Hole ratio of every file in the folder (name -> ratio)."""
        return {n: s["ratio"] for n, s in self.stats.items()}

    def _load_or_compute_stats(self) -> Dict[str, dict]:
        path = self._index_file or os.path.join(self.root, INDEX_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                index = json.load(f)
            files = index.get("files", {})
            if index.get("hole_value") == self.hole_value and set(files) == set(self.all_names):
                return {n: files[n] for n in self.all_names}
            warnings.warn(f"Ignoring mask index '{path}': it was made for other files or another "
                          "hole_value; recomputing the hole ratios.", stacklevel=3)
        stats = compute_ratios(self.root, self.all_names, self.hole_value, self.progress)
        median = float(np.median([s["ratio"] for s in stats.values()]))
        if median > 0.5:
            warnings.warn(f"Half of the masks in '{self.root}' are more than 50% hole with "
                          f"hole_value={self.hole_value}; if white marks the known region, "
                          f"use hole_value={1 - self.hole_value}.", stacklevel=3)
        return stats

    def buckets(self) -> Dict[str, List[str]]:
        """All files of the folder grouped by bucket label (``'0-10'`` ... ``'50-60'``, plus
        ``'60-100'`` when some masks are larger)."""
        out: Dict[str, List[str]] = {label: [] for label in BUCKET_LABELS}
        for name in self.all_names:
            out.setdefault(self.stats[name]["bucket"], []).append(name)
        return out

    def __len__(self) -> int:
        return len(self.names)

    def draw(self, height, width, rng, *, index=None, name=None):
        n = len(self.names)
        i = int(index) % n if index is not None else int(rng.integers(n))
        return fit_mask(read_mask_file(self.paths[i], self.hole_value), (height, width))


def _in_interval(r: float, lo: float, hi: float) -> bool:
    return (lo < r or (lo == 0 and r == 0)) and r <= hi


def compute_ratios(root: str, names: Sequence[str], hole_value: int = 1,
                   progress: bool = False) -> Dict[str, dict]:
    """Hole ratio, hole pixel count and size of each mask file, at its own resolution."""
    out = {}
    for name in tqdm(names, desc="mask ratios", unit="file", disable=not progress):
        hole = read_mask_file(os.path.join(root, name), hole_value)
        count, total = int(hole.sum()), int(hole.size)
        out[name] = {"ratio": count / total, "holes": count, "pixels": total,
                     "height": hole.shape[0], "width": hole.shape[1],
                     "bucket": bucket_label(bucket_index(count, total))}
    return out


class PairedMasks(MaskGenerator):
    """One mask file per image, paired by name (:mod:`datasets.pairing`): by default ``a/01.png``
    takes ``a/01.*`` (or ``01.*`` when that is unique in the folder); ``pattern`` (e.g.
    ``{name}_mask``) and ``image_pattern`` (e.g. ``{name}_real``) say how the names differ."""

    kind = "paired"
    random = False

    def __init__(self, root: str, hole_value: int = 1, pattern=None, image_pattern=None):
        names = _scan_mask_folder(root, hole_value)
        self.root, self.hole_value = root, hole_value
        self.image_pattern = image_pattern or NamePattern()
        self.files = NamedFiles(root, pattern, "mask", "Mask folder", error=MaskError,
                                names=names)

    def key_of(self, name: str) -> str:
        """The pairing key of an image file name."""
        stem = rel_stem(name.replace(os.sep, "/"))
        key = self.image_pattern.key(stem)
        return stem if key is None else key

    def path_for(self, name: str) -> str:
        return self.files.path_for(self.key_of(name), self.image_pattern)

    def check(self, names: Sequence[str]) -> None:
        """Fail early (one sentence listing the first few) if any image lacks its mask."""
        keys = [self.key_of(n) for n in names]
        missing = self.files.missing(keys)
        if missing:
            raise MaskError(self.files.missing_message(missing, self.image_pattern,
                                                       all_keys=keys))

    def draw(self, height, width, rng, *, index=None, name=None):
        if name is None:
            raise ValueError("paired masks need the image's file name: generator(size, name=...)")
        return fit_mask(read_mask_file(self.path_for(name), self.hole_value), (height, width))


# ----------------------------------------------------------------------------------------------
# Factory and batch sampling

_KINDS = {"free_form": FreeFormMasks, "mixed": FreeFormMasks, "center": CenterMask,
          "large": LargeMasks, "files": MaskFiles, "irregular": MaskFiles,
          "paired": PairedMasks}
MASK_GENERATORS = _KINDS  # kind name -> generator class ("mixed": the old name of free_form)


def make_mask_generator(cfg) -> MaskGenerator:
    """Build a generator from a kind name, a dict ``{'kind': ..., **options}`` or a generator.

    Kinds: ``free_form`` (alias ``mixed``), ``center``, ``large``, ``files`` (alias
    ``irregular``; needs ``root``), ``paired`` (needs ``root``). Other keys are passed to the
    class (e.g. ``hole_range``, ``hole_value``, ``bucket``).
    """
    if isinstance(cfg, MaskGenerator):
        return cfg
    if isinstance(cfg, str):
        cfg = {"kind": cfg}
    cfg = dict(cfg)
    kind = cfg.pop("kind", None)
    if kind not in _KINDS:
        raise ValueError(f"mask kind must be one of {sorted(_KINDS)}, got {kind!r}")
    if kind == "mixed":
        warnings.warn("mask kind 'mixed' is the old name of 'free_form' (the same masks); write "
                      "'free_form'.", FutureWarning, stacklevel=2)
    for key in ("per_sample",):  # sampler options, not generator options
        cfg.pop(key, None)
    return _KINDS[kind](**cfg)


def batch_masks(generator: MaskGenerator, batch_size: int, size: SizeLike,
                rng: Optional[np.random.Generator] = None, *, per_sample: bool = True,
                indices: Optional[Sequence[int]] = None,
                names: Optional[Sequence[str]] = None) -> torch.Tensor:
    """Masks for a batch, float ``[B, 1, H, W]``.

    ``per_sample=False`` draws one mask and repeats it (the authors' behaviour). ``indices`` /
    ``names`` pass each sample's file index / image name to file-based generators.
    """
    if per_sample or indices is not None or names is not None:
        masks = [generator(size, rng,
                           index=None if indices is None else indices[b],
                           name=None if names is None else names[b])
                 for b in range(batch_size)]
        return torch.stack(masks)
    return generator(size, rng)[None].expand(batch_size, -1, -1, -1).contiguous()


class MaskSampler:
    """Training-loop helper: ``sampler(batch_size) -> [B, 1, S, S]`` from its own RNG.

    ``state_dict()`` / ``load_state_dict()`` hold the RNG state (plain ints/strings, fine for
    ``torch.save`` + ``weights_only=True``), so a resumed run draws the same masks as an
    uninterrupted one. In multi-process training give each rank its own seed, e.g.
    ``seed = base_seed * 1000 + rank`` or :func:`common.seeding.derive_rng`.
    """

    def __init__(self, generator, size: int, seed: Union[int, np.random.Generator] = 0,
                 per_sample: bool = True):
        self.generator = make_mask_generator(generator)
        self.size = size
        self.per_sample = per_sample
        self.rng = as_rng(seed, "MaskSampler")

    def __call__(self, batch_size: int) -> torch.Tensor:
        return batch_masks(self.generator, batch_size, self.size, self.rng,
                           per_sample=self.per_sample)

    def state_dict(self) -> dict:
        return {"rng": rng_state(self.rng)}

    def load_state_dict(self, state: dict) -> None:
        self.rng = rng_from_state(state["rng"])
