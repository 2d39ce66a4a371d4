"""The evaluation protocol of EXE-GAN (paper section 4) and the loop that runs it.

A protocol fixes everything that decides the numbers besides the weights: which test images
(the first ``n_images`` in sorted order), which hole masks, which exemplar guides which image,
which z / noise, and how many repeats. :func:`evaluate` runs a model over a test set under such
a protocol and feeds :class:`metrics.evaluator.Evaluator`; ``test.py`` and the training loop's
periodic evaluation both call it, so the numbers of a run and of ``test.py`` are computed by
the same code.

Masks (``center``, ``free_form`` / ``large``, ``irregular DIR`` evaluated per hole-ratio bucket,
``paired DIR``) are defined in ``datasets/protocols.py`` (:func:`make_mask_protocol`), which
says how each is drawn or read.

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
the same Evaluator, hole metrics and results files by ``metrics.scoring.score_folders`` (``test.py --pred
DIR --gt DIR``).

Where the rest lives: the mask and exemplar protocols in ``datasets/protocols.py`` (re-exported
here); the summary table and results files in ``metrics/results.py``; ``test.py``'s settings and
checks in ``metrics/settings.py``, its checkpoint run (:func:`metrics.testrun.run_test`) in
``metrics/testrun.py``, its ``--pred`` scoring in ``metrics/scoring.py`` and its command line in
``evaluation/cli.py``.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from common.seeding import derive_seed
from datasets.errors import ProtocolError
from datasets.protocols import ALL_BUCKET, as_pairing, check_holes, make_mask_protocol

from .evaluator import Evaluator, STD_DDOF, aggregate_repeats
from .image_metrics import l1_ratio, quantize_8bit, to_unit
# Re-exported (see __all__): the protocol's public names, wherever they live.
from datasets.protocols import (MASK_KINDS, GeneratedMasks, IrregularMasks,  # noqa: F401
                                MaskProtocol, PairedMaskFiles)
from .results import RESULTS_FORMAT, format_summary, results_rows, summary_means  # noqa: F401

__all__ = [
    "evaluate", "build_evaluator", "make_mask_protocol", "as_pairing", "MaskProtocol",
    "GeneratedMasks", "IrregularMasks", "PairedMaskFiles", "ProtocolError", "MASK_KINDS",
    "HOLE_METRICS", "ALL_BUCKET", "summary_means", "format_summary", "results_rows",
    "RESULTS_FORMAT",
]

log = logging.getLogger("exegan.test")

# Seed-stream keys (part of every derived seed; never renumber).
_NOISE_STREAM = 0x5A


PROTOCOL_VERSION = 1
HOLE_METRICS = ("l1_hole", "psnr_hole")
#: Hole metric measured only when the Evaluator computes ``l1_mean``.
L1_MEAN_HOLE = "l1_mean_hole"
STD_RECORD = ("population standard deviation over repeats (numpy.std, ddof 0, as the authors "
              "report it); 0 for one repeat")


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
        pairing = as_pairing(exemplars, size)
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
                        check_holes(mask, sources, size)
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


def _require(path: Optional[str], what: str, source: str, hint: str) -> str:
    if not path:
        raise ProtocolError(f"No {what} given; pass {source} ({hint}).")
    if not os.path.isfile(path):
        raise ProtocolError(f"The {what} {path!r} ({source}) does not exist; {hint}.")
    return path


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
