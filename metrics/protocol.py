"""The evaluation protocol of EXE-GAN (paper section 4) and the loop that runs it.

A protocol fixes everything that decides the numbers besides the weights: which test images
(the first ``n_images`` in sorted order), which hole masks, which exemplar guides which image,
which z / noise, and how many repeats. :func:`evaluate` runs a model over a test set under such
a protocol and feeds :class:`metrics.evaluator.Evaluator`; ``test.py`` and the training loop's
periodic evaluation both call it, so the numbers of a run and of ``test.py`` are computed by
the same code.

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

Exemplars: ``reverse`` (image ``b`` of a batch is guided by image ``B-1-b``: the pairing
depends on the batch size, which is recorded), ``self``, or ``folder DIR`` (paired by file
name) — :class:`datasets.exemplars.EvalPairing`.

Seeds: repeat ``r`` uses ``seed + r`` for z and the noise maps and ``mask_seed + r`` for the
masks. z and noise are drawn per batch (batch ``k`` takes the stream ``(seed + r, k)``), the
same in every mask bucket, so buckets differ only by their masks. R repeats give mean ± std
(population std, ddof 0, as the authors report it) per metric and per bucket.

Besides the Evaluator's whole-image metrics the loop measures ``l1_hole`` and ``psnr_hole``:
the paper's L1 (``sum|gt - out| / sum(gt + out)``) and PSNR over the hole pixels only (8-bit
values), per image, averaged (plus ``l1_mean_hole`` when ``l1_mean`` is asked for). Every
evaluated mask must have a hole: a mask without one is refused (:class:`ProtocolError`).

Existing completions (a folder of this model's or another method's outputs) are scored with
the same Evaluator, hole metrics and results files by :func:`score_folders` (``test.py --pred
DIR --gt DIR``).

The rest of the file runs ``test.py``: :class:`TestSettings` (every input, resolved from the
command line and the YAML config by the entry point), :func:`run_test` (load, evaluate, write
``results.json`` / ``results.csv`` / ``pairs.csv`` and the protocol record).
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import io
import json
import logging
import math
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from common.errors import UserError
from common.seeding import derive_seed

from .evaluator import ALL_METRICS, DEFAULT_METRICS, STD_DDOF, Evaluator, aggregate_repeats
from .image_metrics import l1_ratio, quantize_8bit, to_unit

__all__ = [
    "evaluate", "make_mask_protocol", "MaskProtocol", "GeneratedMasks", "IrregularMasks",
    "PairedMaskFiles", "ProtocolError", "MASK_KINDS", "HOLE_METRICS", "ALL_BUCKET",
    "summary_means", "format_summary", "TestSettings", "run_test", "build_evaluator",
    "results_rows", "RESULTS_FORMAT", "score_folders", "TEST_ROLES", "warn_small_sets",
    "warn_resolution", "MIN_IMAGES_FID_IDS",
]

log = logging.getLogger("exegan.test")

RESULTS_FORMAT = "exegan-eval-v1"
PROTOCOL_VERSION = 1
MASK_KINDS = ("center", "free_form", "large", "irregular", "paired")
HOLE_METRICS = ("l1_hole", "psnr_hole")
#: Hole metric measured only when the Evaluator computes ``l1_mean``.
L1_MEAN_HOLE = "l1_mean_hole"
#: Label of the whole evaluated set (the only bucket of non-bucketed mask protocols).
ALL_BUCKET = "all"

STD_RECORD = ("population standard deviation over repeats (numpy.std, ddof 0, as the authors "
              "report it); 0 for one repeat")

# Seed-stream keys (part of every derived seed; never renumber).
_MASK_STREAM, _NOISE_STREAM, _DEAL_STREAM = 0x4D, 0x5A, 0x4445


class ProtocolError(UserError, ValueError):
    """An evaluation that cannot run as asked (bad option, too few images, output dir exists)."""


# ================================================================================================
# Mask protocols
# ================================================================================================

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
        from datasets.masks import make_mask_generator
        self.kind = kind
        self.options = dict(options)
        self.generator = make_mask_generator({"kind": kind, **self.options})

    def masks(self, bucket, indices, names, size, mask_seed):
        from common.seeding import derive_rng
        out, sources = [], []
        for i in indices:
            if self.generator.random:
                rng = derive_rng(int(mask_seed), _MASK_STREAM, int(i))
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
            d["seeding"] = "numpy Generator of (mask_seed + repeat, 0x4D, image index)"
            d["hole_range"] = list(g.hole_range)
        return d


class IrregularMasks(MaskProtocol):
    """Mask files grouped by hole ratio; each bucket is evaluated separately (see module doc)."""

    kind = "irregular"
    bucketed = True

    def __init__(self, root: str, hole_value: int = 1, buckets: Optional[Sequence[str]] = None):
        from datasets.masks import BUCKET_LABELS, MaskFiles
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
        from datasets.masks import fit_mask, read_mask_file
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
        from datasets.masks import BUCKET_LABELS
        return BUCKET_LABELS.index(bucket)

    def deal(self, bucket: str, mask_seed: int, n: int) -> np.ndarray:
        """File index (into ``names[bucket]``) of each of the first ``n`` images."""
        key = (bucket, int(mask_seed))
        order = self._deal_cache.get(key)
        if order is None or len(order) < n:
            m = len(self.names[bucket])
            rng = np.random.default_rng(
                [int(mask_seed), _DEAL_STREAM, self.bucket_key(bucket)])
            # Shuffled passes over the bucket: no file repeats before all were used.
            order = np.concatenate([rng.permutation(m) for _ in range(max(1, -(-n // m)))])
            self._deal_cache[key] = order
        return order[:n]

    def masks(self, bucket, indices, names, size, mask_seed):
        from datasets.masks import fit_mask, read_mask_file, to_mask_tensor
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
                       "numpy Generator of (mask_seed + repeat, 0x4445, bucket index)",
        }


class PairedMaskFiles(MaskProtocol):
    """One mask file per image, matched by file name."""

    kind = "paired"

    def __init__(self, root: str, hole_value: int = 1, pattern=None, image_pattern=None):
        from datasets.masks import PairedMasks
        if not root or not os.path.isdir(root):
            raise ProtocolError(f"Paired mask folder {root!r} does not exist; give the folder "
                                f"holding one mask per test image.")
        self.root, self.hole_value = root, int(hole_value)
        self.paired = PairedMasks(root, hole_value=self.hole_value, pattern=pattern,
                                  image_pattern=image_pattern)      # MaskError when empty

    def check(self, names, size, image_paths=None):
        from PIL import Image
        from datasets.errors import MaskError
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
            _check_holes(self.paired(size, name=name)[None], [path], size)

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


# ================================================================================================
# The evaluation loop
# ================================================================================================

def _as_model(model):
    """An EXEGAN from an EXEGAN or a (generator, style_encoder) pair; plus a restore callback."""
    from models.exegan import EXEGAN
    if isinstance(model, EXEGAN):
        return model, (lambda: None)
    if isinstance(model, (tuple, list)) and len(model) == 2:
        g, e = model
        flags = (g.training, e.training)

        def restore():
            g.train(flags[0])
            e.train(flags[1])
        return EXEGAN(g, e), restore
    raise TypeError("model must be a models.EXEGAN or a (generator, style_encoder) pair")


def _as_pairing(exemplars, size: int, pattern=None, image_pattern=None):
    from datasets.exemplars import EvalPairing
    if isinstance(exemplars, EvalPairing):
        return exemplars
    kw = dict(size=size, pattern=pattern, image_pattern=image_pattern)
    if isinstance(exemplars, dict):
        return EvalPairing(exemplars.get("mode", "reverse"), folder=exemplars.get("folder"), **kw)
    if isinstance(exemplars, (tuple, list)):
        mode, folder = (list(exemplars) + [None])[:2]
        return EvalPairing(mode, folder=folder, **kw)
    return EvalPairing(exemplars, **kw)


def _hole_scores(completed: torch.Tensor, real: torch.Tensor,
                 mask: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per-image scores over the hole pixels [B] each, on 8-bit-rounded images: ``l1_hole`` (the
    paper's L1, ``sum|gt - out| / sum(gt + out)`` over the hole), ``psnr_hole`` (on [0, 1]) and
    ``l1_mean_hole`` (mean |gt - out| on [0, 1]). Every mask must have a hole pixel."""
    out, gt = to_unit(quantize_8bit(completed.float())), to_unit(quantize_8bit(real.float()))
    diff = out - gt
    m = mask.to(diff.device, diff.dtype)                       # [B,1,H,W]
    px = m.flatten(1).sum(1) * diff.shape[1]                   # hole pixels x channels
    abs_sum = (diff.abs() * m).flatten(1).sum(1)
    sq_sum = (diff.pow(2) * m).flatten(1).sum(1)
    # A hole reproduced exactly gives PSNR +inf, as the whole-image PSNR of identical images.
    return {"l1_hole": l1_ratio(gt, out, m).cpu(),
            "psnr_hole": (10 * torch.log10(px / sq_sum)).cpu(),
            L1_MEAN_HOLE: (abs_sum / px).cpu()}


def _check_holes(mask: torch.Tensor, sources: Sequence[str],
                 size: Union[int, Tuple[int, int]]) -> None:
    """Refuse masks without a hole pixel (nothing would be inpainted, hole scores undefined)."""
    empty = (mask.flatten(1).amax(1) <= 0.5).nonzero().flatten().tolist()
    if empty:
        w, h = (size, size) if isinstance(size, int) else size
        raise ProtocolError(f"Mask '{sources[empty[0]]}' has no hole pixel at {w}x{h} "
                            f"(nothing to inpaint); every evaluated mask needs a hole: remove "
                            f"it or check --hole-value (1 = white is hole).")


def _save_png(t: torch.Tensor, path: str) -> None:
    from PIL import Image
    from datasets.imaging import tensor_to_uint8
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if t.shape[0] == 1:   # mask: 1 = hole -> white
        a = (t[0].detach().cpu() > 0.5).numpy().astype(np.uint8) * 255
        Image.fromarray(a, "L").save(path)
    else:
        Image.fromarray(tensor_to_uint8(t), "RGB").save(path)


def _names_of(dataset, n: int) -> List[str]:
    names = getattr(dataset, "names", None)
    if names is None:
        return [f"{i:06d}.png" for i in range(n)]
    return [str(x) for x in list(names)[:n]]


def evaluate(model, dataset, masks="center", exemplars="reverse", *, evaluator: Evaluator,
             n_images: Optional[int] = None, batch: int = 16, seed: int = 0,
             mask_seed: Optional[int] = None, repeats: int = 1, truncation: float = 1.0,
             hole_metrics: bool = True, progress: bool = False, save_dir: Optional[str] = None,
             record_pairs: bool = False) -> dict:
    """Inpaint the first ``n_images`` of ``dataset`` under a protocol and measure the results.

    Args:
        model: a ``models.EXEGAN``, or a ``(generator, style_encoder)`` pair (e.g. the training
            loop's ``(G_ema, E)``; their train/eval flags are restored afterwards). Runs on its
            own device; images are moved there.
        dataset: indexable, item ``i`` a float [3,S,S] in [-1,1] at the generator's size S;
            ``dataset.names`` (file names) pairs folder exemplars and paired masks.
        masks: a mask kind / dict / :class:`MaskProtocol` (see :func:`make_mask_protocol`).
        exemplars: ``"reverse"`` | ``"self"`` | ``("folder", DIR)`` | an ``EvalPairing``.
        evaluator: a ``metrics.Evaluator`` with the networks loaded; it is ``reset()`` per repeat.
        n_images: first N images (default all); more than the dataset has is an error.
        batch: images per forward pass (part of the protocol under ``reverse`` pairing).
        seed, mask_seed: repeat r uses ``seed + r`` for z / noise and ``mask_seed + r``
            (default: ``seed + r``) for the masks.
        repeats: R >= 1; the summary is mean ± std over repeats.
        truncation: psi of the random style.
        hole_metrics: also measure ``l1_hole`` / ``psnr_hole``.
        progress: tqdm progress bar (stderr).
        save_dir: if given, write completed images to ``save_dir/images/<bucket>/r<repeat>/<name>.png``
            and their masks to ``save_dir/masks/...`` (white = hole).
        record_pairs: return the (image, exemplar, mask) of every evaluated sample.

    Returns a plain dict: ``summary`` {bucket: {metric: {mean, std, n, values}}}, ``repeats``
    [{repeat, seed, mask_seed, results: {bucket: {metric: value}}}], ``protocol`` (what fixed
    the numbers) and, with ``record_pairs``, ``pairs`` (list of dicts).
    """
    from datasets.exemplars import pairs_for_eval

    model, restore = _as_model(model)
    try:
        size = int(model.size)
        protocol = make_mask_protocol(masks)
        pairing = _as_pairing(exemplars, size)
        total = len(dataset)
        n = total if n_images is None else int(n_images)
        if n < 1:
            raise ProtocolError(f"n_images must be >= 1, got {n}.")
        if n > total:
            raise ProtocolError(f"Asked for {n} test images but the test set has {total}; lower "
                                f"the image count or use a larger test set.")
        if batch < 1 or repeats < 1:
            raise ProtocolError(f"batch and repeats must be >= 1, got {batch} and {repeats}.")
        mask_seed = seed if mask_seed is None else int(mask_seed)
        names = _names_of(dataset, n)
        paths = getattr(dataset, "paths", None)
        protocol.check(names, size, list(paths)[:n] if paths is not None else None)
        if pairing.mode == "folder":
            pairing.folder_for(size).check(names)
        if pairing.mode == "reverse" and min(batch, n) == 1:
            log.warning("exemplars 'reverse' with batch 1: every image is its own exemplar.")
        first = dataset[0]
        if tuple(first.shape) != (3, size, size):
            raise ProtocolError(f"Test images are {list(first.shape)} but the generator is "
                                f"{size}x{size}; load the test set at size {size}.")

        batches = [list(range(s, min(n, s + batch))) for s in range(0, n, batch)]
        if pairing.mode == "folder":
            folder = pairing.folder_for(size)
            exemplar_names: List[Optional[str]] = [
                os.path.relpath(folder.path_for(x), pairing.folder_root) for x in names]
        else:
            exemplar_names = pairs_for_eval(names, pairing.mode, batch)
        bucketed = protocol.bucketed
        codes_cache: Dict[int, torch.Tensor] = {}
        # Inception features of the real images: the same in every repeat and bucket.
        real_cache: Dict[int, Optional[torch.Tensor]] = {}
        steps = repeats * len(protocol.buckets) * len(batches)

        from tqdm import tqdm
        bar = tqdm(total=steps, desc="evaluating", unit="batch", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        runs, pairs = [], []
        hole_keys = _hole_keys(evaluator) if hole_metrics else ()
        try:
            for r in range(repeats):
                seed_r, mseed_r = int(seed) + r, mask_seed + r
                evaluator.reset()
                hole = {key: [] for key in hole_keys}
                hole_buckets: List[str] = []
                for bucket in protocol.buckets:
                    for k, idx in enumerate(batches):
                        real = torch.stack([dataset[i] for i in idx])
                        bnames = [names[i] for i in idx]
                        mask, sources = protocol.masks(bucket, idx, bnames, size, mseed_r)
                        _check_holes(mask, sources, size)
                        if k not in codes_cache:
                            # Exemplars do not depend on the repeat or the bucket: encode once.
                            codes_cache[k] = model.encode_exemplars(pairing(real, bnames))
                        dev = model.device
                        completed = model.complete(
                            real.to(dev), mask.to(dev), codes_cache[k], truncation=truncation,
                            seed=derive_seed(seed_r, _NOISE_STREAM, k))
                        if k not in real_cache:
                            real_cache[k] = evaluator.real_features(real)
                        evaluator.update(completed, real, buckets=bucket if bucketed else None,
                                         real_features=real_cache[k])
                        if hole_metrics:
                            scores = _hole_scores(completed, real.to(completed.device),
                                                  mask.to(completed.device))
                            for key in hole_keys:
                                hole[key].append(scores[key])
                            hole_buckets.extend([bucket] * len(idx))
                        if save_dir is not None:
                            for j, name in enumerate(bnames):
                                stem = os.path.splitext(name)[0]
                                _save_png(completed[j], os.path.join(
                                    save_dir, "images", bucket, f"r{r}", stem + ".png"))
                                _save_png(mask[j], os.path.join(
                                    save_dir, "masks", bucket, f"r{r}", stem + ".png"))
                        if record_pairs:
                            for j, i in enumerate(idx):
                                pairs.append({"repeat": r, "bucket": bucket, "index": i,
                                              "image": names[i],
                                              "exemplar": exemplar_names[i] or "",
                                              "mask": sources[j], "batch": k})
                        bar.update(1)
                        bar.set_postfix({m: f"{v:.4g}" for m, v in evaluator.running().items()},
                                        refresh=False)
                res = _results_with_holes(evaluator, hole, hole_buckets,
                                          protocol.buckets if bucketed else None)
                runs.append({"repeat": r, "seed": seed_r, "mask_seed": mseed_r,
                             "results": res})
        finally:
            bar.close()
    finally:
        restore()

    g = model.generator
    record = {
        "protocol_version": PROTOCOL_VERSION,
        "masks": protocol.describe(),
        "exemplars": {**pairing.describe(),
                      **({"note": "image b of each batch is guided by image B-1-b of the same "
                                  "batch (depends on the batch size)"}
                         if pairing.mode == "reverse" else {})},
        "n_images": n,
        "image_names_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
        "first_image": names[0], "last_image": names[-1],
        "image_size": size,
        "batch": int(batch),
        "repeats": int(repeats),
        "seed": int(seed), "mask_seed": int(mask_seed),
        "seeds": [int(seed) + r for r in range(repeats)],
        "mask_seeds": [mask_seed + r for r in range(repeats)],
        "z_and_noise": "per batch k: torch.Generator seeded from (seed + repeat, 0x5A, k) draws "
                       "z [B, style_dim] then the noise maps; the same in every bucket",
        "truncation": float(truncation),
        "std": STD_RECORD,
        "std_ddof": STD_DDOF,
        "hole_metrics": list(hole_keys),
        "evaluator": evaluator.protocol(),
        "generator": {"size": g.size, "style_dim": g.style_dim, "n_latent": g.n_latent,
                      "exemplar_slots": [g.exemplar_start, g.n_exemplar],
                      "kwargs": {k: (list(v) if isinstance(v, tuple) else v)
                                 for k, v in dict(getattr(g, "kwargs", {})).items()}},
        "completion": "out = image * (1 - mask) + clamp(G(...), -1, 1) * mask, G in eval mode",
    }
    out = {"summary": aggregate_repeats([x["results"] for x in runs]), "repeats": runs,
           "protocol": record}
    if record_pairs:
        out["pairs"] = pairs
    return out


def _hole_keys(evaluator: Evaluator) -> Tuple[str, ...]:
    return HOLE_METRICS + ((L1_MEAN_HOLE,) if "l1_mean" in evaluator.metrics else ())


def _results_with_holes(evaluator: Evaluator, hole: Dict[str, list], hole_buckets: List[str],
                        buckets: Optional[Sequence[str]]) -> dict:
    """``{bucket: {metric: value}}`` of one repeat: the Evaluator's results (``all`` and, with
    ``buckets``, each bucket) plus the means of the per-image hole scores."""
    res = {ALL_BUCKET: evaluator.compute()}
    if buckets is not None:
        res.update(evaluator.compute_per_bucket())
    labels = np.array(hole_buckets, dtype=object)
    for key, chunks in hole.items():
        vals = torch.cat(chunks).numpy()
        res[ALL_BUCKET][key] = float(np.mean(vals))
        for b in buckets or ():
            res[b][key] = float(np.mean(vals[labels == b]))
    return res


def summary_means(result: dict, bucket: str = ALL_BUCKET) -> Dict[str, float]:
    """``{metric: mean over repeats}`` of one bucket (what the training loop logs)."""
    return {k: v["mean"] for k, v in result["summary"][bucket].items()}


def _fmt(v: float, digits: int = 4) -> str:
    return f"{v:.{digits}f}" if math.isfinite(v) else str(v)


def format_summary(result: dict, digits: int = 4) -> str:
    """A plain-text table: one row per bucket, ``mean ± std`` per metric."""
    summary = result["summary"]
    metrics = [m for m in dict.fromkeys(k for b in summary.values() for k in b)
               if m != "n_images"]
    lines = ["bucket   " + "  ".join(f"{m:>22}" for m in metrics)]
    for bucket, vals in summary.items():
        cells = []
        for m in metrics:
            s = vals.get(m)
            cells.append(f"{_fmt(s['mean'], digits) + ' ± ' + _fmt(s['std'], digits):>22}"
                         if s else f"{'-':>22}")
        lines.append(f"{bucket:<8} " + "  ".join(cells))
    return "\n".join(lines)


def results_rows(result: dict) -> Tuple[List[str], List[dict]]:
    """(header, rows) of results.csv: per bucket a ``mean`` and a ``std`` row, then one row per
    repeat (with its seeds)."""
    summary = result["summary"]
    metrics = list(dict.fromkeys(k for b in summary.values() for k in b))
    header = ["bucket", "stat", "repeat", "seed", "mask_seed"] + metrics
    rows = []
    for bucket, vals in summary.items():
        for stat in ("mean", "std"):
            rows.append({"bucket": bucket, "stat": stat, "repeat": "", "seed": "",
                         "mask_seed": "", **{m: vals[m][stat] for m in metrics if m in vals}})
    for rep in result["repeats"]:
        for bucket, vals in rep["results"].items():
            rows.append({"bucket": bucket, "stat": "repeat", "repeat": rep["repeat"],
                         "seed": rep["seed"], "mask_seed": rep["mask_seed"],
                         **{m: vals[m] for m in metrics if m in vals}})
    return header, rows


# ================================================================================================
# test.py: settings, networks, outputs
# ================================================================================================

@dataclass
class TestSettings:
    """Every input of one ``test.py`` run (resolved from the CLI and the YAML config)."""
    __test__ = False   # not a pytest test class

    ckpt: str
    data: Optional[str]
    psp: Optional[str] = None
    inception: Optional[str] = None
    lpips_vgg: Optional[str] = None
    allow_random_pretrained: bool = False
    masks: str = "center"
    mask_dir: Optional[str] = None
    hole_value: int = 1
    buckets: Optional[List[str]] = None
    mask_seed: Optional[int] = None
    exemplars: str = "reverse"
    exemplar_dir: Optional[str] = None
    repeats: int = 1
    seed: int = 0
    n_images: Optional[int] = None
    n_images_at_most: bool = False      # n_images from a config: capped at the test set size
    batch: int = 16
    device: str = "cpu"
    truncation: float = 1.0
    metrics: List[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    fid_resize: str = "pytorch_fid"
    which: str = "g_ema"
    out: Optional[str] = None
    out_root: str = os.path.join("runs", "eval")
    save_images: bool = False
    progress: bool = True
    compile: bool = False               # torch.compile G and the style encoder (EXEGAN.compile)
    standin_seed: Optional[int] = None  # seed of the random stand-ins (default: the run's)
    config: Optional[str] = None
    command: Optional[List[str]] = None
    # Where each file setting came from (CLI flag or config key), for error messages.
    sources: Dict[str, str] = field(default_factory=dict)
    # Name pairing across folders (datasets.pairing): ["mask={name}_mask", ...].
    pair_by: List[str] = field(default_factory=list)
    # Scoring existing completions (test.py --pred): one folder per repeat; ``data`` is the
    # ground truth, ``mask_dir`` the optional masks (white = hole, or per ``hole_value``).
    pred: Optional[List[str]] = None


def _file_record(path: Optional[str]) -> Optional[dict]:
    if not path:
        return None
    from .fid import file_sha256
    return {"path": os.path.abspath(path), "bytes": os.path.getsize(path),
            "sha256": file_sha256(path)}


def _versions() -> dict:
    from importlib import metadata
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__}
    for pkg in ("torchvision", "scipy", "scikit-learn", "lpips", "pillow", "scikit-image"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
        out["gpu"] = torch.cuda.get_device_name()
    return out


def _git() -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return {"commit": None}
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10)
        return {"commit": commit.stdout.strip(),
                "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


def _require(path: Optional[str], what: str, source: str, hint: str) -> str:
    if not path:
        raise ProtocolError(f"No {what} given; pass {source} ({hint}).")
    if not os.path.isfile(path):
        raise ProtocolError(f"The {what} {path!r} ({source}) does not exist; {hint}.")
    return path


def _check_out_dir(out: Optional[str]) -> None:
    if out is not None and os.path.exists(out) and (
            not os.path.isdir(out) or os.listdir(out)):
        raise ProtocolError(f"Results directory '{out}' already exists and is not empty; "
                            f"choose a new --out (results are never overwritten).")


def _make_out_dir(s: TestSettings, name: str) -> str:
    if s.out is None:
        from common.rundir import create_run_dir   # exclusive mkdir, numbered from the highest
        return create_run_dir(s.out_root, name)
    _check_out_dir(s.out)
    try:
        os.makedirs(s.out, exist_ok=True)
    except OSError as e:
        raise ProtocolError(f"Cannot create the results directory '{s.out}' ({e}).") from None
    _check_out_dir(s.out)
    return s.out


def _device(name: str) -> torch.device:
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ProtocolError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ProtocolError(f"--device {name} asked for CUDA but no GPU is available; use "
                            f"--device cpu.")
    return dev


def _banner(text: str) -> None:
    bar = "!" * 78
    log.warning(bar)
    for line in text.split("\n"):
        log.warning(line)
    log.warning(bar)


def _trained_standin(ckpt_path: str) -> Optional[str]:
    from models.standins import trained_standin_beside
    try:
        return trained_standin_beside(ckpt_path)
    except FileNotFoundError as e:
        raise ProtocolError(str(e)) from None


def _standin_seed(s: TestSettings, ckpt_path: str) -> int:
    """The seed the training run built its random stand-ins from (train.seed of its config)."""
    if s.standin_seed is not None:
        return int(s.standin_seed)
    from models.checkpoint import safe_load
    try:
        ckpt = safe_load(ckpt_path)
        return int(ckpt.get("config", {}).get("train", {}).get("seed", 0))
    except Exception:
        return 0


def build_evaluator(metrics: Sequence[str], device, *, inception: Optional[str] = None,
                    lpips_vgg: Optional[str] = None, allow_random: bool = False,
                    seed: int = 0, resize: str = "pytorch_fid",
                    inception_key: str = "--inception",
                    lpips_key: str = "--lpips-vgg") -> Tuple[Evaluator, List[str]]:
    """A ``metrics.Evaluator`` with the networks ``metrics`` need, read from local files.

    ``allow_random`` (tests / demo only) builds seeded random networks for missing files.
    Returns (evaluator, names of the random stand-ins used).
    """
    metrics = tuple(metrics)
    random_used: List[str] = []
    inc = lp = None
    if "fid" in metrics or "ids" in metrics:
        from .inception import STANDARD_WEIGHTS_NAME, FIDInceptionV3, load_inception
        if inception is None and allow_random:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, 0x1C))
                inc = FIDInceptionV3(resize=resize).eval().requires_grad_(False)
            random_used.append("FID Inception")
        else:
            _require(inception, "FID Inception weights file", inception_key,
                     f"it is {STANDARD_WEIGHTS_NAME}, see checkpoints/README.md")
            inc = load_inception(inception, device, resize=resize, config_key=inception_key)
    if "lpips" in metrics:
        from losses.perceptual import VGG16_FILE, load_lpips
        if lpips_vgg is None and allow_random:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, 0x1F))
                lp = load_lpips(None, allow_random_backbone=True, device=device)
            random_used.append("LPIPS VGG16")
        else:
            _require(lpips_vgg, "LPIPS VGG16 weights file", lpips_key,
                     f"it is torchvision's {VGG16_FILE}, see checkpoints/README.md")
            lp = load_lpips(lpips_vgg, device=device)
            from .fid import file_sha256
            lp.weights_sha256 = file_sha256(lpips_vgg)     # for Evaluator.protocol()
    return Evaluator(inc, lp, metrics, device), random_used


def _open_test_set(path: str, size: int):
    from datasets.lmdb_dataset import open_dataset
    return open_dataset(path, size, hflip=False)


def run_test(s: TestSettings) -> Tuple[str, dict]:
    """Run one ``test.py`` evaluation; returns (results directory, results dict).

    Everything a user can get wrong is checked before the long part starts (and before the
    results directory is created): files, folders, mask and exemplar sets, image count.
    """
    from models.checkpoint import load_generator
    from models.exegan import EXEGAN

    src = s.sources
    _check_out_dir(s.out)
    device = _device(s.device)
    bad = [m for m in s.metrics if m not in ALL_METRICS]
    if bad:
        raise ProtocolError(f"Unknown metric(s) {bad}; choose from {', '.join(ALL_METRICS)}.")
    if s.repeats < 1 or s.batch < 1:
        raise ProtocolError(f"--repeats and --batch must be >= 1, got {s.repeats} and {s.batch}.")
    _require(s.ckpt, "EXE-GAN checkpoint", src.get("ckpt", "--ckpt"),
             "give our checkpoint / export or the released EXE_GAN_model_256.pt")
    if not s.data:
        raise ProtocolError("No test images given; pass --data (an image folder or LMDB) or "
                            "--config with data.test.")
    if not os.path.exists(s.data):
        raise ProtocolError(f"Test data {s.data!r} ({src.get('data', '--data')}) does not exist; "
                            f"give the test image folder or LMDB.")
    random_used: List[str] = []
    if s.psp is None and not s.allow_random_pretrained:
        _require(None, "pSp style encoder file", src.get("psp", "--psp"),
                 "the released psp_ffhq_encode.pt, see checkpoints/README.md")
    if s.psp is not None:
        _require(s.psp, "pSp style encoder file", src.get("psp", "--psp"),
                 "put psp_ffhq_encode.pt there or fix the path")
    need_inc = _check_metric_files(s)
    patterns = _patterns(s)

    # -- model ---------------------------------------------------------------------------------
    standin_seed = _standin_seed(s, s.ckpt) if s.allow_random_pretrained else 0
    log.info("loading generator %s ['%s']", s.ckpt, s.which)
    generator = load_generator(s.ckpt, device, which=s.which)
    if s.psp is not None:
        from models.psp import load_style_encoder
        encoder = load_style_encoder(s.psp, generator.exemplar_start, generator.n_exemplar,
                                     device)
        if encoder.style_dim != generator.style_dim:
            raise ProtocolError(f"The pSp file {s.psp} gives {encoder.style_dim}-d codes but the "
                                f"generator in {s.ckpt} takes {generator.style_dim}-d ones; "
                                f"pair the checkpoint with its own style encoder.")
    elif s.allow_random_pretrained and _trained_standin(s.ckpt):
        # A demo run with pretrained.standin_encoder_steps > 0: its stand-in was trained, so it
        # is read from the run's checkpoints/standin_psp.pt instead of rebuilt from the seed.
        from models.psp import load_style_encoder
        path = _trained_standin(s.ckpt)
        encoder = load_style_encoder(path, generator.exemplar_start, generator.n_exemplar, device)
        random_used.append(f"pSp style encoder (the run's trained stand-in {path})")
    else:
        from models.standins import standin_style_encoder
        seed = standin_seed
        encoder = standin_style_encoder(generator.exemplar_start, generator.n_exemplar,
                                        generator.n_latent, generator.style_dim, seed).to(device)
        random_used.append(f"pSp style encoder (stand-in seed {seed})")
    model = EXEGAN(generator, encoder).to(device)
    if s.compile:
        model.compile()

    # -- data and protocol ---------------------------------------------------------------------
    dataset = _open_test_set(s.data, generator.size)
    n = s.n_images
    if n is not None and s.n_images_at_most and n > len(dataset):
        log.warning("the config asks for %d test images but %s has %d: using all %d.", n,
                    s.data, len(dataset), len(dataset))
        n = len(dataset)
    mask_spec = make_mask_protocol(s.masks, s.mask_dir, hole_value=s.hole_value,
                                   buckets=s.buckets, pattern=patterns["mask"],
                                   image_pattern=patterns["image"])
    pairing = _as_pairing((s.exemplars, s.exemplar_dir), generator.size, patterns["exemplar"],
                          patterns["image"])
    warnings = [w for w in (warn_resolution(dataset, generator.size, s.data),
                            warn_small_sets(len(dataset) if n is None else n, s.metrics)) if w]

    # -- metric networks -----------------------------------------------------------------------
    evaluator, rnd = build_evaluator(
        s.metrics, device, inception=s.inception, lpips_vgg=s.lpips_vgg,
        allow_random=s.allow_random_pretrained, seed=standin_seed, resize=s.fid_resize,
        inception_key=src.get("inception", "--inception"),
        lpips_key=src.get("lpips_vgg", "--lpips-vgg"))
    random_used += rnd
    if random_used:
        _banner("EVALUATING WITH RANDOMLY INITIALISED STAND-INS (--allow-random-pretrained or "
                "pretrained.allow_random): "
                + ", ".join(random_used) + ".\nThese numbers are meaningless: use this for tests "
                "and the demo only. Real evaluation needs the files under checkpoints/.")

    # -- run -----------------------------------------------------------------------------------
    started = datetime.datetime.now(datetime.timezone.utc)
    # Validate protocol against the images before creating anything on disk: evaluate()
    # checks again, but an early failure should leave no empty results directory behind.
    _precheck(mask_spec, pairing, dataset, n, generator.size)
    name = f"{os.path.splitext(os.path.basename(s.ckpt))[0]}-{mask_spec.kind}-{pairing.mode}"
    out_dir = _make_out_dir(s, name)
    log.info("results directory: %s", out_dir)
    result = evaluate(model, dataset, mask_spec, pairing, evaluator=evaluator, n_images=n,
                      batch=s.batch, seed=s.seed, mask_seed=s.mask_seed, repeats=s.repeats,
                      truncation=s.truncation, progress=s.progress,
                      save_dir=out_dir if s.save_images else None, record_pairs=True)
    finished = datetime.datetime.now(datetime.timezone.utc)

    record = result["protocol"]
    record.update({
        "files": {"checkpoint": {**_file_record(s.ckpt), "entry": s.which},
                  "psp": _file_record(s.psp),
                  "inception": _file_record(s.inception) if need_inc else None,
                  "lpips_vgg16": _file_record(s.lpips_vgg) if "lpips" in s.metrics else None},
        "random_standins": random_used,
        "warnings": warnings,
        "data": {"path": os.path.abspath(s.data), "kind": type(dataset).__name__,
                 "n_available": len(dataset)},
        "device": str(device),
        "compiled": bool(s.compile),
        "versions": _versions(),
        "code": _git(),
        "config": os.path.abspath(s.config) if s.config else None,
        "command": s.command,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "seconds": round((finished - started).total_seconds(), 1),
    })
    _write_results(out_dir, result)
    return out_dir, result


#: Below this many images FID and U-IDS / P-IDS get a warning: under the 2048 Inception feature
#: dimensions the covariance is singular and a linear SVM separates the sets almost trivially.
#: The threshold is the paper's smallest evaluation set (the 2000 CelebA-HQ test images), so the
#: paper's own protocol does not warn; numbers are comparable only between equal image counts.
MIN_IMAGES_FID_IDS = 2000


def warn_small_sets(n: int, metrics: Sequence[str]) -> Optional[str]:
    """Log (and return) a warning when FID / IDS are computed from too few images."""
    which = [label for m, label in (("fid", "FID"), ("ids", "U-IDS / P-IDS"))
             if m in metrics]
    if not which or n >= MIN_IMAGES_FID_IDS:
        return None
    msg = (f"{' and '.join(which)} from {n} images: fewer than {MIN_IMAGES_FID_IDS} (the "
           f"Inception features have 2048 dimensions) give strongly biased FIDs and trivially "
           f"separable U-IDS / P-IDS; such numbers are not comparable with the paper's or with "
           f"other image counts")
    log.warning("%s.", msg)
    return msg


def warn_resolution(dataset, size: int, where: str, k: int = 8) -> Optional[str]:
    """Log (and return) a warning when the first ``k`` images of ``dataset`` (image files whose
    headers can be read) are not ``size`` x ``size``: they are resized to the model's size."""
    from PIL import Image
    paths = [p for p in list(getattr(dataset, "paths", None) or [])[:k] if os.path.isfile(p)]
    sizes = []
    for path in paths:
        try:
            with Image.open(path) as im:
                sizes.append(im.size)
        except OSError:
            continue
    other = [(w, h) for w, h in sizes if (w, h) != (size, size)]
    if not other:
        return None
    w, h = other[0]
    if min(w, h) < size:
        how = (f"upsampled x{size / min(w, h):.3g} (centre crop + Lanczos) before inpainting, so "
               f"the numbers do not describe {size}-px results; evaluate a checkpoint on test "
               f"images of its own resolution")
    else:
        how = (f"centre-cropped and resized to the checkpoint's {size}x{size} (Lanczos, as "
               f"training reads them); for the paper's protocol use the {size}-px test split")
    msg = f"Images in {where} are {w}x{h} but the evaluation size is {size}x{size}: they are {how}"
    log.warning("%s.", msg)
    return msg


#: Roles of test.py's name pairing (``--pair-by ROLE=PATTERN``); ``gt`` is another name of
#: ``image`` (the test images, i.e. the ground truth).
TEST_ROLES = ("image", "mask", "exemplar", "pred")
_ROLE_ALIASES = {"gt": "image"}


def _patterns(s: TestSettings) -> dict:
    from datasets.pairing import parse_pair_by
    try:
        return parse_pair_by(s.pair_by, TEST_ROLES, _ROLE_ALIASES)
    except ValueError as e:
        raise ProtocolError(str(e)) from None


def _check_metric_files(s: TestSettings) -> bool:
    """Check the metric networks' files before anything runs; True when Inception is needed."""
    src = s.sources
    bad = [m for m in s.metrics if m not in ALL_METRICS]
    if bad:
        raise ProtocolError(f"Unknown metric(s) {bad}; choose from {', '.join(ALL_METRICS)}.")
    need_inc = "fid" in s.metrics or "ids" in s.metrics
    if need_inc and (s.inception is not None or not s.allow_random_pretrained):
        _require(s.inception, "FID Inception weights file", src.get("inception", "--inception"),
                 "it is pt_inception-2015-12-05-6726825d.pth, see checkpoints/README.md")
    if "lpips" in s.metrics and (s.lpips_vgg is not None or not s.allow_random_pretrained):
        _require(s.lpips_vgg, "LPIPS VGG16 weights file", src.get("lpips_vgg", "--lpips-vgg"),
                 "it is torchvision's vgg16-397923af.pth, see checkpoints/README.md")
    return need_inc


def _precheck(mask_spec: MaskProtocol, pairing, dataset, n: Optional[int], size: int) -> None:
    total = len(dataset)
    if n is not None and n > total:
        raise ProtocolError(f"Asked for {n} test images but the test set has {total}; lower "
                            f"--n-images or use a larger test set.")
    n = total if n is None else n
    names = _names_of(dataset, n)
    paths = getattr(dataset, "paths", None)
    mask_spec.check(names, size, list(paths)[:n] if paths is not None else None)
    if pairing.mode == "folder":
        pairing.folder_for(size).check(names)


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


#: What a non-finite number becomes in results.json (``null``) and results.csv (an empty cell).
NON_FINITE_NOTE = ("null in results.json / an empty cell in results.csv: a value that is not a "
                   "finite number, listed under non_finite with what it was (+inf: e.g. PSNR of "
                   "an exact reconstruction; nan: e.g. FID of a bucket with one image)")


def _finite(obj, path: str = "", found: Optional[Dict[str, str]] = None):
    """A copy of ``obj`` with every non-finite float replaced by None (strict JSON); ``found``
    collects ``{"a.b.0": "+inf" | "-inf" | "nan"}``."""
    if isinstance(obj, dict):
        return {k: _finite(v, f"{path}.{k}" if path else str(k), found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v, f"{path}.{i}", found) for i, v in enumerate(obj)]
    if isinstance(obj, (float, np.floating)) and not math.isfinite(obj):
        if found is not None:
            found[path] = "nan" if math.isnan(obj) else ("+inf" if obj > 0 else "-inf")
        return None
    return obj


def _write_results(out_dir: str, result: dict) -> None:
    found: Dict[str, str] = {}
    doc = _finite({"format": RESULTS_FORMAT, "summary": result["summary"],
                   "repeats": result["repeats"], "protocol": result["protocol"]}, "", found)
    doc["non_finite"] = found
    doc["non_finite_note"] = NON_FINITE_NOTE
    # Strict JSON (no NaN / Infinity tokens, which most JSON parsers outside Python reject).
    _write_atomic(os.path.join(out_dir, "results.json"),
                  json.dumps(doc, indent=2, allow_nan=False) + "\n")
    header, rows = results_rows(result)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    w.writerows({k: ("" if v is None else v) for k, v in _finite(row).items()} for row in rows)
    _write_atomic(os.path.join(out_dir, "results.csv"), buf.getvalue())
    if "pairs" in result:
        buf = io.StringIO()
        fields = ["repeat", "bucket", "index", "image", "exemplar", "mask", "batch"]
        if any("completion" in p for p in result["pairs"]):
            fields.append("completion")
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(result["pairs"])
        _write_atomic(os.path.join(out_dir, "pairs.csv"), buf.getvalue())


def settings_dict(s: TestSettings) -> dict:
    """The settings as a plain dict (for logs and --dry-run)."""
    return dataclasses.asdict(s)


# ================================================================================================
# test.py --pred: scoring completions that already exist
# ================================================================================================

def _read_rgb_tensor(path: str) -> torch.Tensor:
    """An image file as [3, H, W] in [-1, 1], exactly as decoded (no resize)."""
    from datasets.imaging import open_rgb, pil_to_tensor
    return pil_to_tensor(open_rgb(path))


def _image_size(path: str) -> Tuple[int, int]:
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.size
    except OSError as e:
        raise ProtocolError(f"Cannot read image '{path}' ({e}); remove or replace it.") from None


def score_folders(s: TestSettings) -> Tuple[str, dict]:
    """``test.py --pred DIR [DIR ...] --gt DIR [--masks DIR]``: score existing completions.

    Each ``--pred`` folder is one repeat (e.g. ``images/all/r0``, ``r1``, ... of an earlier
    ``--save-images`` run, or another method's outputs); its files pair with the ground truth
    (``s.data``) and the optional masks (``s.mask_dir``) by name (``s.pair_by``). The same
    Evaluator, hole metrics (with masks), mean ± std over repeats and results files as an
    in-memory evaluation; the Inception features of the ground truth are computed once and
    reused for every repeat. Completions are read as they are; each must have its ground
    truth's size, or be S x S with the ground truth read like a test set at S (centre crop +
    Lanczos), as the in-memory path reads it. Returns (results directory, results dict).
    """
    from datasets.imaging import load_image, pil_to_tensor
    from datasets.masks import fit_mask, read_mask_file, to_mask_tensor
    from datasets.pairing import NamedFiles

    _check_out_dir(s.out)
    device = _device(s.device)
    if s.batch < 1:
        raise ProtocolError(f"--batch must be >= 1, got {s.batch}.")
    need_inc = _check_metric_files(s)
    patterns = _patterns(s)
    if not s.data:
        raise ProtocolError("--pred needs the ground truth: pass --gt DIR (the images the "
                            "completions were made from).")
    if not os.path.isdir(s.data):
        raise ProtocolError(f"--gt {s.data!r} is not a folder; give the folder of ground-truth "
                            f"images.")
    folders = {"image": s.data, "mask": s.mask_dir}

    def same_folder_patterns(path: str) -> list:
        real = os.path.realpath(path)
        return [patterns[r] for r, d in folders.items() if d and os.path.realpath(d) == real] + \
            [patterns["pred"] for d in s.pred if os.path.realpath(d) == real]

    def files(path, role, what, option):
        if not os.path.isdir(path):
            raise ProtocolError(f"{option} {path!r} is not a folder; give a folder of images.")
        found = NamedFiles(path, patterns[role], what, option, error=ProtocolError,
                           exclude=same_folder_patterns(path),
                           role="gt" if role == "image" else role)
        if not len(found):
            raise ProtocolError(f"{option} '{path}' holds no image named like "
                                f"'{patterns[role].template}' (see --pair-by).")
        return found

    for d in s.pred:
        if os.path.realpath(d) == os.path.realpath(s.data) and \
                patterns["pred"] == patterns["image"]:
            raise ProtocolError(f"--pred and --gt are the same folder '{d}' with the same name "
                                f"pattern, so every image would be scored against itself; tell "
                                f"them apart with --pair-by (e.g. gt={{name}}_real "
                                f"pred={{name}}_out).")
    preds = [files(d, "pred", "completion", "--pred") for d in s.pred]
    keys = sorted(preds[0].keys())
    if s.n_images is not None:
        if s.n_images > len(keys):
            raise ProtocolError(f"Asked for {s.n_images} images but --pred '{s.pred[0]}' has "
                                f"{len(keys)}; lower --n-images.")
        keys = keys[:s.n_images]
    for d, p in zip(s.pred[1:], preds[1:]):
        missing = p.missing(keys)
        if missing:
            raise ProtocolError(p.missing_message(missing, patterns["pred"], "pred", keys))
    gt = files(s.data, "image", "ground-truth image", "--gt")
    missing = gt.missing(keys)
    if missing:
        raise ProtocolError(gt.missing_message(missing, patterns["pred"], "pred", keys))
    masks = None
    if s.mask_dir:
        masks = files(s.mask_dir, "mask", "mask", "--masks")
        missing = masks.missing(keys)
        if missing:
            raise ProtocolError(masks.missing_message(missing, patterns["pred"], "pred", keys))

    # Sizes: one size for all completions; ground truth at that size (or read at S when the
    # completions are S x S, as a test set is read).
    size = _image_size(preds[0].get(keys[0]))
    for p in preds:
        for k in keys:
            other = _image_size(p.get(k))
            if other != size:
                raise ProtocolError(f"Completion '{p.get(k)}' is {other[0]}x{other[1]} but "
                                    f"'{preds[0].get(keys[0])}' is {size[0]}x{size[1]}; score "
                                    f"completions of one size per run.")
    square = size[0] == size[1]
    resized = [k for k in keys if _image_size(gt.get(k)) != size]
    if resized and not square:
        k = resized[0]
        w, h = _image_size(gt.get(k))
        raise ProtocolError(f"Ground truth '{gt.get(k)}' is {w}x{h} but its completion is "
                            f"{size[0]}x{size[1]}; give ground truth of the completions' size.")
    warnings = []
    if resized:
        w, h = _image_size(gt.get(resized[0]))
        msg = (f"{len(resized)} ground-truth image(s) (e.g. '{gt.get(resized[0])}', {w}x{h}) "
               f"are not {size[0]}x{size[1]}: they are centre-cropped and resized (Lanczos) to "
               f"the completions' size, as a test set is read")
        log.warning("%s.", msg)
        warnings.append(msg)
    small = warn_small_sets(len(keys), s.metrics)
    if small:
        warnings.append(small)

    resized_set = set(resized)

    def read_gt(k):
        path = gt.get(k)
        if k in resized_set:              # S x S completions: read like a test set at S
            return pil_to_tensor(load_image(path, size[0]))
        return _read_rgb_tensor(path)

    mask_tensors: Dict[str, torch.Tensor] = {}
    if masks is not None:
        for k in keys:        # every mask read once, and refused without a hole, before any work
            path = masks.get(k)
            m = to_mask_tensor(fit_mask(read_mask_file(path, s.hole_value), (size[1], size[0])))
            _check_holes(m[None], [path], size)
            mask_tensors[k] = m

    evaluator, random_used = build_evaluator(
        s.metrics, device, inception=s.inception, lpips_vgg=s.lpips_vgg,
        allow_random=s.allow_random_pretrained, seed=0, resize=s.fid_resize,
        inception_key=s.sources.get("inception", "--inception"),
        lpips_key=s.sources.get("lpips_vgg", "--lpips-vgg"))
    if random_used:
        _banner("SCORING WITH RANDOMLY INITIALISED STAND-INS: " + ", ".join(random_used)
                + ".\nThese numbers are meaningless: use this for tests only.")
    out_dir = _make_out_dir(s, "scored-" + os.path.basename(os.path.normpath(s.pred[0])))
    log.info("results directory: %s", out_dir)
    started = datetime.datetime.now(datetime.timezone.utc)

    batches = [keys[i:i + s.batch] for i in range(0, len(keys), s.batch)]
    hole_keys = _hole_keys(evaluator) if masks is not None else ()
    real_cache: Dict[int, Optional[torch.Tensor]] = {}   # ground-truth features, once per batch
    from tqdm import tqdm
    bar = tqdm(total=len(preds) * len(batches), desc="scoring", unit="batch",
               disable=not s.progress, file=sys.stderr, dynamic_ncols=True)
    runs, pairs = [], []
    try:
        for r, p in enumerate(preds):
            evaluator.reset()
            hole = {key: [] for key in hole_keys}
            for b, bkeys in enumerate(batches):
                real = torch.stack([read_gt(k) for k in bkeys])
                completed = torch.stack([_read_rgb_tensor(p.get(k)) for k in bkeys])
                if b not in real_cache:
                    real_cache[b] = evaluator.real_features(real)
                evaluator.update(completed, real, real_features=real_cache[b])
                if masks is not None:
                    mask = torch.stack([mask_tensors[k] for k in bkeys])
                    scores = _hole_scores(completed, real, mask)
                    for key in hole_keys:
                        hole[key].append(scores[key])
                for j, k in enumerate(bkeys):
                    pairs.append({"repeat": r, "bucket": ALL_BUCKET, "index": b * s.batch + j,
                                  "image": os.path.relpath(gt.get(k), s.data), "exemplar": "",
                                  "mask": os.path.relpath(masks.get(k), s.mask_dir)
                                  if masks is not None else "",
                                  "batch": b, "completion": os.path.abspath(p.get(k))})
                bar.update(1)
            res = _results_with_holes(evaluator, hole, [ALL_BUCKET] * len(keys), None)
            runs.append({"repeat": r, "seed": None, "mask_seed": None, "results": res,
                         "pred": os.path.abspath(s.pred[r])})
    finally:
        bar.close()
    finished = datetime.datetime.now(datetime.timezone.utc)
    record = {
        "protocol_version": PROTOCOL_VERSION,
        "mode": "scored existing completions (test.py --pred)",
        "pred": [os.path.abspath(d) for d in s.pred],
        "gt": os.path.abspath(s.data),
        "masks": None if masks is None else {
            "kind": "paired", "root": os.path.abspath(s.mask_dir), "hole_value": s.hole_value,
            "resize": "centre crop to square, nearest-neighbour resize to the completions' size"},
        "pair_by": {r: patterns[r].template for r in ("image", "pred", "mask")},
        "n_images": len(keys),
        "image_names_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
        "first_image": keys[0], "last_image": keys[-1],
        "image_size": list(size),
        "ground_truth_resized": len(resized),
        "batch": int(s.batch),
        "repeats": len(preds),
        "std": STD_RECORD,
        "std_ddof": STD_DDOF,
        "hole_metrics": list(hole_keys),
        "evaluator": evaluator.protocol(),
        "files": {"inception": _file_record(s.inception) if need_inc else None,
                  "lpips_vgg16": _file_record(s.lpips_vgg) if "lpips" in s.metrics else None},
        "random_standins": random_used,
        "warnings": warnings,
        "device": str(device),
        "versions": _versions(),
        "code": _git(),
        "config": os.path.abspath(s.config) if s.config else None,
        "command": s.command,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "seconds": round((finished - started).total_seconds(), 1),
    }
    result = {"summary": aggregate_repeats([x["results"] for x in runs]), "repeats": runs,
              "protocol": record, "pairs": pairs}
    _write_results(out_dir, result)
    return out_dir, result
