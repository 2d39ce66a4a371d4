"""Mask files: reading and fitting one file, the hole-ratio buckets of the irregular-mask protocol,
and the two file-backed generators (``files``: a folder such as the NVIDIA irregular mask test
set, optionally one bucket; ``paired``: one mask file per image, matched by name).

Mask files are read as grayscale, thresholded at half of their value range (8- or 16-bit),
centre-cropped to a square like the images, and resized with nearest neighbour. Which side of
the threshold is the hole is the explicit option ``hole_value``: ``1`` (default) = **white is
hole**, the NVIDIA irregular-mask convention; ``0`` = black is hole. A file that is not binary
(more than 25 % of its pixels in the middle half of the range) raises :class:`MaskError`.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from common.imagefile import mask_bits
from datasets.errors import MaskError
from datasets.imaging import DECODE_ERRORS, center_crop_box, scan_images
from datasets.mask_generators import MaskGenerator, SizeLike, _hw
from datasets.pairing import NamedFiles, NamePattern, pairing_key

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
# Reading one file and its bucket


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
# File-backed generators


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
        return pairing_key(name, self.image_pattern)

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
