"""The shared evaluation core (paper section 4) under both test.py and the in-training evaluation.

One batch loop and one protocol record for every evaluation — a model in memory (``test.py
--ckpt``, whose command line is the ``evaluation/`` package; the training loop's periodic
evaluation, ``training/in_loop_eval.py``) and completions already on disk (``test.py --pred``,
treated as a model whose output is read from files).

A protocol fixes everything that decides the numbers besides the weights: which test images
(the first ``n_images`` in sorted order), which hole masks, which exemplar guides which image,
which z / noise, and how many repeats. :func:`evaluate` runs a model over a test set under such
a protocol; :func:`run_batches` is the loop both modes share (repeats x buckets x batches into a
:class:`metrics.evaluator.Evaluator`, plus the hole metrics); :func:`protocol_record` the part of
the record both write.

Masks (``center``, ``free_form`` / ``large``, ``irregular DIR`` evaluated per hole-ratio bucket,
``paired DIR``) are defined in ``datasets/protocols.py`` (:func:`make_mask_protocol`), which
says how each is drawn or read.

Exemplars: ``reverse`` (image ``b`` of a batch is guided by image ``B-1-b``: the pairing
depends on the batch size, which is recorded), ``self``, or ``folder DIR`` (paired by file
name) — :class:`datasets.exemplars.EvalPairing`.

Seeds: repeat ``r`` uses ``seed + r`` for z and the noise maps and ``mask_seed + r`` for the
masks. z and noise are drawn per batch (batch ``k`` takes the stream ``(seed + r,
EVAL_NOISE_KEY, k)``), the same in every mask bucket, so buckets differ only by their masks.
R repeats give mean ± std (population std, ddof 0, as the authors report it) per metric and
per bucket.

Besides the Evaluator's whole-image metrics the loop measures ``l1_hole`` and ``psnr_hole``:
the paper's L1 (``sum|gt - out| / sum(gt + out)``) and PSNR over the hole pixels only (8-bit
values), per image, averaged (plus ``l1_mean_hole`` when ``l1_mean`` is asked for). Every
evaluated mask must have a hole: a mask without one is refused (:class:`ProtocolError`).

Where the rest lives: the mask and exemplar protocols in ``datasets/protocols.py``; the metric
networks, real or stand-in, in :func:`build_evaluator` (stand-ins: ``metrics/standins.py``); the
summary table and results files in ``metrics/results.py``; ``test.py``'s settings and checks in
``metrics/settings.py``, its checkpoint run in ``metrics/testrun.py``, its ``--pred`` scoring in
``metrics/scoring.py`` and its command line in ``evaluation/cli.py``.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from common.seeding import EVAL_NOISE_KEY, derive_seed
from datasets.errors import ProtocolError
from datasets.exemplars import pairs_for_eval
from datasets.imaging import tensor_to_uint8
from datasets.protocols import ALL_BUCKET, as_pairing, check_holes, make_mask_protocol
from losses.perceptual import VGG16_FILE
from models.exegan import EXEGAN

from .evaluator import STD_DDOF, Evaluator, aggregate_repeats
from .image_metrics import l1_ratio, quantize_8bit, to_unit
from .inception import STANDARD_WEIGHTS_NAME

log = logging.getLogger("exegan.test")

PROTOCOL_VERSION = 1
HOLE_METRICS = ("l1_hole", "psnr_hole")
#: Hole metric measured only when the Evaluator computes ``l1_mean``.
L1_MEAN_HOLE = "l1_mean_hole"
STD_RECORD = ("population standard deviation over repeats (numpy.std, ddof 0, as the authors "
              "report it); 0 for one repeat")

#: ``complete(repeat, bucket, k, real, mask) -> completed [B,3,H,W]``: a model or files on disk.
Completions = Callable[[int, str, int, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]
#: ``masks(repeat, bucket, k) -> (mask [B,1,H,W] or None, B source strings)``.
MaskSource = Callable[[int, str, int], Tuple[Optional[torch.Tensor], List[str]]]


# ------------------------------------------------------------------------------ hole metrics
def hole_scores(completed: torch.Tensor, real: torch.Tensor,
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


def hole_keys(evaluator: Evaluator) -> Tuple[str, ...]:
    """The hole metrics measured beside ``evaluator``'s metrics."""
    return HOLE_METRICS + ((L1_MEAN_HOLE,) if "l1_mean" in evaluator.metrics else ())


def results_with_holes(evaluator: Evaluator, hole: Dict[str, list], hole_buckets: List[str],
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


# ------------------------------------------------------------------------------ the one loop
def run_batches(evaluator: Evaluator, complete: Completions, *, repeats: int,
                buckets: Sequence[str], bucketed: bool, batches: Sequence[Sequence[int]],
                real_batch: Callable[[int], torch.Tensor], masks: Optional[MaskSource],
                image_names: Sequence[str], exemplar_names: Optional[Sequence[str]] = None,
                pair_extra: Optional[Callable[[int, int], dict]] = None,
                on_batch: Optional[Callable] = None, hole_metrics: bool = True,
                progress: bool = False,
                desc: str = "evaluating") -> Tuple[List[dict], List[dict]]:
    """Repeats x buckets x batches: complete each batch, feed ``evaluator`` and the hole metrics.

    ``batches[k]`` lists the image indices of batch ``k``; ``real_batch(k)`` reads their ground
    truth [B,3,H,W]; ``masks(r, bucket, k)`` gives their masks (None: no hole metrics);
    ``complete(r, bucket, k, real, mask)`` the completed images. ``hole_metrics``: also measure
    :func:`hole_keys` (with masks). The Inception features of the
    ground truth are computed once per batch and reused in every repeat and bucket. The
    evaluator is ``reset()`` per repeat. ``on_batch(r, bucket, k, completed, mask)`` sees every
    batch (e.g. to save it). Returns (runs ``[{repeat, results}]``, pairs: one dict per evaluated
    image with its repeat, bucket, index, image, exemplar, mask source, batch and
    ``pair_extra(r, i)``).
    """
    keys = hole_keys(evaluator) if masks is not None and hole_metrics else ()
    real_cache: Dict[int, Optional[torch.Tensor]] = {}
    bar = tqdm(total=repeats * len(buckets) * len(batches), desc=desc, unit="batch",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    runs, pairs = [], []
    try:
        for r in range(repeats):
            evaluator.reset()
            hole: Dict[str, list] = {key: [] for key in keys}
            hole_buckets: List[str] = []
            for bucket in buckets:
                for k, idx in enumerate(batches):
                    real = real_batch(k)
                    mask, sources = masks(r, bucket, k) if masks is not None else (None, None)
                    completed = complete(r, bucket, k, real, mask)
                    if k not in real_cache:
                        real_cache[k] = evaluator.real_features(real)
                    evaluator.update(completed, real, buckets=bucket if bucketed else None,
                                     real_features=real_cache[k])
                    if keys:
                        scores = hole_scores(completed, real.to(completed.device),
                                             mask.to(completed.device))
                        for key in keys:
                            hole[key].append(scores[key])
                        hole_buckets.extend([bucket] * len(idx))
                    if on_batch is not None:
                        on_batch(r, bucket, k, completed, mask)
                    for j, i in enumerate(idx):
                        pairs.append({"repeat": r, "bucket": bucket, "index": i,
                                      "image": image_names[i],
                                      "exemplar": (exemplar_names[i] if exemplar_names else "")
                                      or "", "mask": sources[j] if sources else "", "batch": k,
                                      **(pair_extra(r, i) if pair_extra else {})})
                    bar.update(1)
                    if progress:
                        bar.set_postfix({m: f"{v:.4g}" for m, v in evaluator.running().items()},
                                        refresh=False)
            runs.append({"repeat": r, "results": results_with_holes(
                evaluator, hole, hole_buckets, buckets if bucketed else None)})
    finally:
        bar.close()
    return runs, pairs


def protocol_record(names: Sequence[str], image_size, batch: int, repeats: int,
                    evaluator: Evaluator, holes: Sequence[str], *, source: dict,
                    subset: Optional[dict] = None, resized: Optional[dict] = None,
                    run: Optional[dict] = None) -> dict:
    """What fixed the numbers, the part every evaluation writes: the completion ``source``
    (masks and exemplars of a model, or the scored folders), the images (``names`` in order,
    which ``subset`` of a larger set, their size and how many were ``resized``), batch and
    repeats (with ``run``: seeds, truncation ...), the std convention, the hole metrics and the
    Evaluator's record."""
    return {
        "protocol_version": PROTOCOL_VERSION,
        **source,
        "n_images": len(names),
        **(subset or {}),
        "image_names_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
        "first_image": names[0], "last_image": names[-1],
        "image_size": image_size,
        **(resized or {}),
        "batch": int(batch),
        "repeats": int(repeats),
        **(run or {}),
        "std": STD_RECORD,
        "std_ddof": STD_DDOF,
        "hole_metrics": list(holes),
        "evaluator": evaluator.protocol(),
    }


def summarise(runs: List[dict], record: dict, pairs: Optional[List[dict]] = None) -> dict:
    """The result dict of an evaluation: ``summary`` (mean ± std per bucket and metric),
    ``repeats``, ``protocol`` and, when given, ``pairs``."""
    out = {"summary": aggregate_repeats([x["results"] for x in runs]), "repeats": runs,
           "protocol": record}
    if pairs is not None:
        out["pairs"] = pairs
    return out


# ------------------------------------------------------------------------- a model in memory
def _as_model(model):
    """An EXEGAN from an EXEGAN or a (generator, style_encoder) pair; plus a restore callback."""
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


def save_png(t: torch.Tensor, path: str) -> None:
    """A completed image [3,H,W] in [-1,1] or a mask [1,H,W] (white = hole) as a PNG file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if t.shape[0] == 1:   # mask: 1 = hole -> white
        a = (t[0].detach().cpu() > 0.5).numpy().astype(np.uint8) * 255
        Image.fromarray(a, "L").save(path)
    else:
        Image.fromarray(tensor_to_uint8(t), "RGB").save(path)


def names_of(dataset, n: int) -> List[str]:
    """The first ``n`` file names of ``dataset`` (``000000.png`` ... when it has none)."""
    names = getattr(dataset, "names", None)
    if names is None:
        return [f"{i:06d}.png" for i in range(n)]
    return [str(x) for x in list(names)[:n]]


def _check_protocol(dataset, protocol, pairing, n: int, batch: int, repeats: int,
                    size: int) -> List[str]:
    """The image names, once the protocol's masks and exemplars are known to serve them."""
    total = len(dataset)
    if n < 1:
        raise ProtocolError(f"n_images must be >= 1, got {n}.")
    if n > total:
        raise ProtocolError(f"Asked for {n} test images but the test set has {total}; lower "
                            f"the image count or use a larger test set.")
    if batch < 1 or repeats < 1:
        raise ProtocolError(f"batch and repeats must be >= 1, got {batch} and {repeats}.")
    names = names_of(dataset, n)
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
    return names


def evaluate(model, dataset, masks="center", exemplars="reverse", *, evaluator: Evaluator,
             n_images: Optional[int] = None, batch: int = 16, seed: int = 0,
             mask_seed: Optional[int] = None, repeats: int = 1, truncation: float = 1.0,
             hole_metrics: bool = True, progress: bool = False, save_dir: Optional[str] = None,
             record_pairs: bool = False) -> dict:
    """Inpaint the first ``n_images`` of ``dataset`` under a protocol and measure the results.
    (Over 80 lines for its docstring and the four small callbacks it hands to run_batches.)

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
    model, restore = _as_model(model)
    try:
        size = int(model.size)
        protocol = make_mask_protocol(masks)
        pairing = as_pairing(exemplars, size)
        n = len(dataset) if n_images is None else int(n_images)
        names = _check_protocol(dataset, protocol, pairing, n, batch, repeats, size)
        mask_seed = seed if mask_seed is None else int(mask_seed)
        batches = [list(range(s, min(n, s + batch))) for s in range(0, n, batch)]
        if pairing.mode == "folder":
            folder = pairing.folder_for(size)
            exemplar_names: List[Optional[str]] = [
                os.path.relpath(folder.path_for(x), pairing.folder_root) for x in names]
        else:
            exemplar_names = pairs_for_eval(names, pairing.mode, batch)
        codes_cache: Dict[int, torch.Tensor] = {}

        def real_batch(k):
            return torch.stack([dataset[i] for i in batches[k]])

        def mask_batch(r, bucket, k):
            bnames = [names[i] for i in batches[k]]
            mask, sources = protocol.masks(bucket, batches[k], bnames, size, mask_seed + r)
            check_holes(mask, sources, size)
            return mask, sources

        def complete(r, bucket, k, real, mask):
            if k not in codes_cache:
                # Exemplars do not depend on the repeat or the bucket: encode once.
                codes_cache[k] = model.encode_exemplars(
                    pairing(real, [names[i] for i in batches[k]]))
            dev = model.device
            return model.complete(real.to(dev), mask.to(dev), codes_cache[k],
                                  truncation=truncation,
                                  seed=derive_seed(int(seed) + r, EVAL_NOISE_KEY, k))

        def save(r, bucket, k, completed, mask):
            for j, i in enumerate(batches[k]):
                stem = os.path.splitext(names[i])[0]
                for what, t in (("images", completed[j]), ("masks", mask[j])):
                    save_png(t, os.path.join(save_dir, what, bucket, f"r{r}", stem + ".png"))

        runs, pairs = run_batches(
            evaluator, complete, repeats=repeats, buckets=protocol.buckets,
            bucketed=protocol.bucketed, batches=batches, real_batch=real_batch,
            masks=mask_batch, image_names=names, exemplar_names=exemplar_names,
            on_batch=save if save_dir is not None else None, hole_metrics=hole_metrics,
            progress=progress)
    finally:
        restore()
    runs = [{"repeat": x["repeat"], "seed": int(seed) + x["repeat"],
             "mask_seed": mask_seed + x["repeat"], "results": x["results"]} for x in runs]
    record = _model_record(model.generator, names, size, batch, repeats, evaluator,
                           hole_keys(evaluator) if hole_metrics else (), protocol, pairing,
                           int(seed), mask_seed, truncation)
    return summarise(runs, record, pairs if record_pairs else None)


def _model_record(g, names, size, batch, repeats, evaluator, holes, protocol, pairing, seed: int,
                  mask_seed: int, truncation: float) -> dict:
    """:func:`protocol_record` of a model run: masks, exemplars, seeds, truncation, generator."""
    reverse_note = {"note": "image b of each batch is guided by image B-1-b of the same batch "
                            "(depends on the batch size)"} if pairing.mode == "reverse" else {}
    record = protocol_record(
        names, size, batch, repeats, evaluator, holes,
        source={"masks": protocol.describe(), "exemplars": {**pairing.describe(), **reverse_note}},
        run={"seed": seed, "mask_seed": int(mask_seed),
             "seeds": [seed + r for r in range(repeats)],
             "mask_seeds": [mask_seed + r for r in range(repeats)],
             "z_and_noise": f"per batch k: torch.Generator seeded from (seed + repeat, "
                            f"0x{EVAL_NOISE_KEY:X}, k) draws z [B, style_dim] then the noise "
                            f"maps; the same in every bucket",
             "truncation": float(truncation)})
    record.update({
        "generator": {"size": g.size, "style_dim": g.style_dim, "n_latent": g.n_latent,
                      "exemplar_slots": [g.exemplar_start, g.n_exemplar],
                      "kwargs": {k: (list(v) if isinstance(v, tuple) else v)
                                 for k, v in dict(getattr(g, "kwargs", {})).items()}},
        "completion": "out = image * (1 - mask) + clamp(G(...), -1, 1) * mask, G in eval mode"})
    return record


# --------------------------------------------------------------- the metric networks of a run
def require_file(path: Optional[str], what: str, source: str, hint: str) -> str:
    """``path`` when it names a file; else one sentence naming ``source`` (a flag or a key)."""
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

    ``allow_random`` (tests / demo only) builds seeded random stand-ins (``metrics/standins.py``)
    for missing files. Returns (evaluator, names of the random stand-ins used).
    """
    metrics = tuple(metrics)
    if ("fid" in metrics or "ids" in metrics) and not (inception is None and allow_random):
        require_file(inception, "FID Inception weights file", inception_key,
                     f"it is {STANDARD_WEIGHTS_NAME}, see checkpoints/README.md")
    if "lpips" in metrics and not (lpips_vgg is None and allow_random):
        require_file(lpips_vgg, "LPIPS VGG16 weights file", lpips_key,
                     f"it is torchvision's {VGG16_FILE}, see checkpoints/README.md")
    ev = Evaluator.from_files(metrics, device, inception_path=inception, lpips_vgg_path=lpips_vgg,
                              allow_random=allow_random, seed=seed, resize=resize,
                              inception_config_key=inception_key)
    return ev, list(ev.random_standins)
