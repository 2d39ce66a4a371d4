"""The data side of the evaluation protocol (paper section 4): which hole mask and which exemplar
each test image gets. ``metrics.eval_loop.evaluate`` (test.py and the training loop's periodic
evaluation) runs a model under these protocols.

Masks (:func:`make_mask_protocol`):

* ``center``: the centred square of side S/2 (25 % hole) for every image;
* ``free_form`` / ``large``: the training mask generators of the 256 / 512 settings, drawn
  per image from the mask seed — image ``i`` of repeat ``r`` gets the mask of
  ``(mask_seed + r, i)`` whatever the batch size;
* ``irregular DIR``: mask files (e.g. the NVIDIA irregular mask test set) grouped by hole ratio
  into the buckets 0-10 %, ..., 50-60 %; **each bucket is evaluated separately** on all test
  images. In repeat ``r`` the masks of a bucket are dealt to the images in a random order drawn
  from ``(mask_seed + r, bucket)``, without repetition while the bucket has enough files; files
  are centre-cropped to a square and resized (nearest) to S; ratios are measured at the file's
  own resolution. Masks above 60 % are not part of the protocol;
* ``paired DIR``: one mask file per image, matched by file name; it must be S x S or the size
  of its own image file.

Every evaluated mask must have a hole: a mask without one is refused (:class:`ProtocolError`).

Exemplars (:func:`as_pairing`): ``reverse`` (image ``b`` of a batch is guided by image
``B-1-b``: the pairing depends on the batch size, which is recorded), ``self``, or ``folder DIR``
(paired by file name) — :class:`datasets.exemplars.EvalPairing`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from common.seeding import EVAL_DEAL_KEY, EVAL_MASK_KEY, derive_rng
from datasets.errors import MaskError, ProtocolError
from datasets.exemplars import EvalPairing
from datasets.mask_files import BUCKET_LABELS, MaskFiles, PairedMasks, fit_mask, read_mask_file
from datasets.mask_generators import to_mask_tensor
from datasets.masks import make_mask_generator

log = logging.getLogger("exegan.test")

MASK_KINDS = ("center", "free_form", "large", "irregular", "paired")
#: Label of the whole evaluated set (the only bucket of non-bucketed mask protocols).
ALL_BUCKET = "all"


class MaskProtocol:
    """Which mask each image gets, per bucket and repeat.

    ``buckets``: labels evaluated separately (``("all",)`` unless the protocol is bucketed).
    ``masks(bucket, indices, names, size, mask_seed)`` -> (float [B,1,S,S] with 1 = hole,
    list of B source strings for the record).
    """

    kind: str = "base"
    bucketed: bool = False
    buckets: Tuple[str, ...] = (ALL_BUCKET,)

    def masks(self, bucket: str, indices: Sequence[int], names: Sequence[str], size: int,
              mask_seed: int) -> Tuple[torch.Tensor, List[str]]:
        raise NotImplementedError

    def check(self, names: Sequence[str], size: int,
              image_paths: Optional[Sequence[str]] = None) -> None:
        """Fail early (before a long evaluation) when the masks cannot serve these images."""

    def describe(self) -> dict:
        return {"kind": self.kind, "buckets": list(self.buckets)}


class GeneratedMasks(MaskProtocol):
    """``center`` / ``free_form`` / ``large``: datasets.masks generators, seeded per image."""

    def __init__(self, kind: str, **options):
        self.kind = kind
        self.options = dict(options)
        self.generator = make_mask_generator({"kind": kind, **self.options})

    def masks(self, bucket, indices, names, size, mask_seed):
        out, sources = [], []
        for i in indices:
            if self.generator.random:
                rng = derive_rng(int(mask_seed), EVAL_MASK_KEY, int(i))
                out.append(self.generator(size, rng))
                sources.append(f"{self.kind}:seed={int(mask_seed)}:image={int(i)}")
            else:
                out.append(self.generator(size))
                sources.append(self.kind)
        return torch.stack(out), sources

    def describe(self):
        g = self.generator
        d = {"kind": self.kind, "buckets": list(self.buckets), "options": self.options,
             "generator": type(g).__name__}
        if self.kind == "center":
            d["hole"] = f"centred square of side {g.fraction} * S"
        else:
            d["seeding"] = f"numpy Generator of (mask_seed + repeat, 0x{EVAL_MASK_KEY:X}, image index)"
            d["hole_range"] = list(g.hole_range)
        return d


class IrregularMasks(MaskProtocol):
    """Mask files grouped by hole ratio; each bucket is evaluated separately (see module doc)."""

    kind = "irregular"
    bucketed = True

    def __init__(self, root: str, hole_value: int = 1, buckets: Optional[Sequence[str]] = None):
        if not root or not os.path.isdir(root):
            raise ProtocolError(f"Irregular mask folder {root!r} does not exist; give the folder "
                                f"of mask files (e.g. the NVIDIA irregular mask test set).")
        self.root, self.hole_value = root, int(hole_value)
        self.files = MaskFiles(root, hole_value=self.hole_value)   # MaskError when empty
        if not os.path.isfile(os.path.join(root, "mask_ratios.json")):
            log.info("measuring the hole ratio of %d mask files in %s (scripts/"
                     "make_mask_buckets.py stores them once in mask_ratios.json)",
                     len(self.files.all_names), root)
        groups = self.files.buckets()
        wanted = list(BUCKET_LABELS) if buckets is None else [str(b) for b in buckets]
        bad = [b for b in wanted if b not in BUCKET_LABELS]
        if bad:
            raise ProtocolError(f"Unknown mask bucket(s) {bad}; choose from "
                                f"{', '.join(BUCKET_LABELS)}.")
        self.empty = [b for b in wanted if not groups.get(b)]
        self.buckets = tuple(b for b in wanted if groups.get(b))
        if not self.buckets:
            counts = {k: len(v) for k, v in groups.items() if v}
            raise ProtocolError(f"Mask folder '{root}' has no mask in the bucket(s) "
                                f"{', '.join(wanted)} (hole ratios found: {counts}, "
                                f"hole_value={self.hole_value}); check the folder and "
                                f"--hole-value.")
        if self.empty and buckets is not None:
            raise ProtocolError(f"Mask folder '{root}' has no mask in the requested bucket(s) "
                                f"{', '.join(self.empty)}; drop them from --buckets.")
        if self.empty:
            log.warning("mask folder %s has no masks in bucket(s) %s: they are left out.",
                        root, ", ".join(self.empty))
        self.names = {b: list(groups[b]) for b in self.buckets}
        self.requested_buckets = buckets is not None
        self.skipped_above = len(groups.get("60-100", []))
        self._deal_cache: Dict[Tuple[str, int], np.ndarray] = {}
        self.no_hole_at_size: List[str] = []
        self._pruned_for: Optional[int] = None

    def _prune(self, size: int) -> None:
        """Leave out the files whose few hole pixels vanish in the nearest resize to S (they would
        be masks without a hole). Only files with under 256 expected hole pixels at S are read."""
        if self._pruned_for == size:
            return
        if self._pruned_for is not None:
            raise ProtocolError("An irregular mask protocol serves one image size; build a new "
                                "one for another size.")
        stats = self.files.stats
        for b in self.buckets:
            keep = []
            for name in self.names[b]:
                st = stats.get(name)
                if st and st["holes"] * size * size >= 256 * st["pixels"]:
                    keep.append(name)
                    continue
                hole = read_mask_file(os.path.join(self.root, name), self.hole_value)
                if fit_mask(hole, size).any():
                    keep.append(name)
                else:
                    self.no_hole_at_size.append(name)
            self.names[b] = keep
        lost = [b for b in self.buckets if not self.names[b]]
        if lost:
            if len(lost) == len(self.buckets) or self.requested_buckets:
                raise ProtocolError(f"No mask of bucket(s) {', '.join(lost)} in '{self.root}' "
                                    f"keeps a hole pixel at {size}x{size}; check the folder and "
                                    f"--hole-value, or drop them from --buckets.")
            log.warning("bucket(s) %s of %s have no mask with a hole at %dx%d: left out.",
                        ", ".join(lost), self.root, size, size)
            self.empty += lost
            self.buckets = tuple(b for b in self.buckets if self.names[b])
        if self.no_hole_at_size:
            log.warning("%d mask file(s) of %s lose their hole in the resize to %dx%d and are "
                        "left out (e.g. %s).", len(self.no_hole_at_size), self.root, size, size,
                        self.no_hole_at_size[0])
        self._deal_cache.clear()
        self._pruned_for = size

    def check(self, names, size, image_paths=None):
        self._prune(size)

    def bucket_key(self, bucket: str) -> int:
        return BUCKET_LABELS.index(bucket)

    def deal(self, bucket: str, mask_seed: int, n: int) -> np.ndarray:
        """File index (into ``names[bucket]``) of each of the first ``n`` images."""
        key = (bucket, int(mask_seed))
        order = self._deal_cache.get(key)
        if order is None or len(order) < n:
            m = len(self.names[bucket])
            rng = np.random.default_rng(
                [int(mask_seed), EVAL_DEAL_KEY, self.bucket_key(bucket)])
            # Shuffled passes over the bucket: no file repeats before all were used.
            order = np.concatenate([rng.permutation(m) for _ in range(max(1, -(-n // m)))])
            self._deal_cache[key] = order
        return order[:n]

    def masks(self, bucket, indices, names, size, mask_seed):
        self._prune(size)
        order = self.deal(bucket, mask_seed, max(indices) + 1)
        out, sources = [], []
        for i in indices:
            name = self.names[bucket][int(order[i])]
            hole = read_mask_file(os.path.join(self.root, name), self.hole_value)
            out.append(to_mask_tensor(fit_mask(hole, size)))
            sources.append(name)
        return torch.stack(out), sources

    def describe(self):
        stats = self.files.stats
        h = hashlib.sha256()
        for name in sorted(stats):
            s = stats[name]
            h.update(f"{name}\t{s['holes']}\t{s['pixels']}\n".encode())
        return {
            "kind": self.kind, "root": os.path.abspath(self.root), "hole_value": self.hole_value,
            "buckets": list(self.buckets),
            "files_per_bucket": {b: len(v) for b, v in self.names.items()},
            "empty_buckets_left_out": list(self.empty),
            "files_above_60_percent_left_out": self.skipped_above,
            "files_without_hole_at_size_left_out": list(self.no_hole_at_size),
            "n_files": len(stats),
            # Identifies the mask set: file names and hole-pixel counts.
            "mask_set_sha256": h.hexdigest(),
            "bucket_rule": "hole ratio at the file's own resolution in (k/10, (k+1)/10]",
            "resize": "centre crop to square, nearest-neighbour resize to S",
            "dealing": "per repeat and bucket: shuffled passes over the bucket's files, "
                       f"numpy Generator of (mask_seed + repeat, 0x{EVAL_DEAL_KEY:X}, bucket index)",
        }


class PairedMaskFiles(MaskProtocol):
    """One mask file per image, matched by file name."""

    kind = "paired"

    def __init__(self, root: str, hole_value: int = 1, pattern=None, image_pattern=None):
        if not root or not os.path.isdir(root):
            raise ProtocolError(f"Paired mask folder {root!r} does not exist; give the folder "
                                f"holding one mask per test image.")
        self.root, self.hole_value = root, int(hole_value)
        self.paired = PairedMasks(root, hole_value=self.hole_value, pattern=pattern,
                                  image_pattern=image_pattern)      # MaskError when empty

    def check(self, names, size, image_paths=None):
        self.paired.check(names)            # every missing mask in one sentence
        for k, name in enumerate(names):
            path = self.paired.path_for(name)                        # MaskError when missing
            with Image.open(path) as m:
                msize = m.size
            allowed = {(size, size)}
            img_size = None
            if image_paths is not None and os.path.isfile(image_paths[k]):
                with Image.open(image_paths[k]) as im:
                    img_size = im.size
                allowed.add(img_size)
            if msize not in allowed:
                what = f"its image is {img_size[0]}x{img_size[1]}" if img_size else \
                    "its image's size is unknown"
                raise MaskError(f"Mask file '{path}' is {msize[0]}x{msize[1]} but {what} and "
                                f"the evaluation size is {size}x{size}; paired masks must have "
                                f"their image's size or {size}x{size}.")
            check_holes(self.paired(size, name=name)[None], [path], size)

    def masks(self, bucket, indices, names, size, mask_seed):
        out, sources = [], []
        for name in names:
            out.append(self.paired(size, name=name))
            sources.append(os.path.relpath(self.paired.path_for(name), self.root))
        return torch.stack(out), sources

    def describe(self):
        return {"kind": self.kind, "root": os.path.abspath(self.root),
                "hole_value": self.hole_value, "buckets": list(self.buckets),
                "pair_by": {"mask": self.paired.files.pattern.template,
                            "image": self.paired.image_pattern.template},
                "resize": "centre crop to square, nearest-neighbour resize to S"}


def make_mask_protocol(spec: Union[str, dict, MaskProtocol], root: Optional[str] = None, *,
                       hole_value: int = 1, buckets: Optional[Sequence[str]] = None,
                       pattern=None, image_pattern=None, **options) -> MaskProtocol:
    """A :class:`MaskProtocol` from a kind name (``center``, ``free_form`` (alias ``mixed``),
    ``large``, ``irregular`` (alias ``files``), ``paired``), a dict ``{"kind": ..., "root": ...}``
    or a protocol (returned as is). ``options`` go to the mask generator (e.g. ``hole_range``);
    ``pattern`` / ``image_pattern`` (:mod:`datasets.pairing`) pair ``paired`` mask files.
    """
    if isinstance(spec, MaskProtocol):
        return spec
    if isinstance(spec, dict):
        spec = dict(spec)
        kind = spec.pop("kind", None)
        root = spec.pop("root", root)
        hole_value = spec.pop("hole_value", hole_value)
        buckets = spec.pop("buckets", buckets)
        options = {**spec, **options}
    else:
        kind = spec
    if kind == "mixed":
        warnings.warn("mask protocol 'mixed' is the old name of 'free_form' (the same masks); "
                      "write 'free_form'.", FutureWarning, stacklevel=2)
    kind = {"mixed": "free_form", "files": "irregular"}.get(kind, kind)
    if kind not in MASK_KINDS:
        raise ProtocolError(f"Unknown mask protocol {kind!r}; choose from {', '.join(MASK_KINDS)}.")
    if kind == "irregular":
        return IrregularMasks(root, hole_value, buckets)
    if kind == "paired":
        return PairedMaskFiles(root, hole_value, pattern, image_pattern)
    if root is not None:
        raise ProtocolError(f"Mask protocol '{kind}' takes no folder (got {root!r}); folders are "
                            f"for 'irregular' and 'paired'.")
    return GeneratedMasks(kind, **options)


def as_pairing(exemplars, size: int, pattern=None, image_pattern=None):
    if isinstance(exemplars, EvalPairing):
        return exemplars
    kw = dict(size=size, pattern=pattern, image_pattern=image_pattern)
    if isinstance(exemplars, dict):
        return EvalPairing(exemplars.get("mode", "reverse"), folder=exemplars.get("folder"), **kw)
    if isinstance(exemplars, (tuple, list)):
        mode, folder = (list(exemplars) + [None])[:2]
        return EvalPairing(mode, folder=folder, **kw)
    return EvalPairing(exemplars, **kw)


def check_holes(mask: torch.Tensor, sources: Sequence[str],
                 size: Union[int, Tuple[int, int]]) -> None:
    """Refuse masks without a hole pixel (nothing would be inpainted, hole scores undefined)."""
    empty = (mask.flatten(1).amax(1) <= 0.5).nonzero().flatten().tolist()
    if empty:
        w, h = (size, size) if isinstance(size, int) else size
        raise ProtocolError(f"Mask '{sources[empty[0]]}' has no hole pixel at {w}x{h} "
                            f"(nothing to inpaint); every evaluated mask needs a hole: remove "
                            f"it or check --hole-value (1 = white is hole).")
