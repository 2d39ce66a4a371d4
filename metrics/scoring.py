"""``test.py --pred DIR [DIR ...] --gt DIR``: score completions that already exist (this model's or
another method's outputs) with the loop, Evaluator, hole metrics, protocol record and results
files of :func:`metrics.testrun.run_test` (:mod:`metrics.eval_loop`): the folders are a model
whose outputs are read from disk, each ``--pred`` folder one repeat.
"""
from __future__ import annotations

import datetime
import logging
import os
from typing import Dict, List, Tuple

import numpy as np
import torch
from PIL import Image

from datasets.errors import ProtocolError
from datasets.imaging import load_image, open_rgb, pil_to_tensor, rel_stem, scan_images
from datasets.mask_files import fit_mask, read_mask_file
from datasets.mask_generators import to_mask_tensor
from datasets.pairing import NAME, NamedFiles, roles_named, suggest_roles
from datasets.protocols import ALL_BUCKET, check_holes

from .eval_loop import build_evaluator, hole_keys, protocol_record, run_batches, summarise
from .results import remove_unfinished, write_results
from .settings import (TestSettings, banner, check_metric_files, check_out_dir, make_out_dir,
                       pair_patterns, resolve_device, run_record, warn_small_sets)

log = logging.getLogger("exegan.test")


def _read_rgb_tensor(path: str) -> torch.Tensor:
    """An image file as [3, H, W] in [-1, 1], exactly as decoded (no resize)."""
    return pil_to_tensor(open_rgb(path))


def _image_size(path: str) -> Tuple[int, int]:
    """(width, height) of an image file from its header."""
    try:
        with Image.open(path) as im:
            return im.size
    except OSError as e:
        raise ProtocolError(f"Cannot read image '{path}' ({e}); remove or replace it.") from None


def _listed(names, limit: int = 3) -> str:
    return ", ".join(f"'{n}'" for n in names[:limit]) + \
        (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def _unmatched(files, keys) -> list:
    """Names (relative to the folder) of ``files`` that no key of ``keys`` pairs with."""
    used = {files.get(k) for k in keys}
    return sorted(n for n in files.by_key.values() if os.path.join(files.root, n) not in used)


def _check_one_to_one(s: TestSettings, keys, preds, gt) -> None:
    """Every ground-truth image and every completion of each repeat is paired once: two
    completions that find the same ground truth (``01.png`` and ``sub/01.png`` -> ``01.png``)
    would score it twice, and a completion of a later repeat that no name of the first one
    pairs with would be left out silently."""
    for files, option, what in [(gt, "--gt", "ground-truth image")] + \
            [(p, "--pred", "completion") for p in preds[1:]]:
        by_file: Dict[str, list] = {}
        for k in keys:
            by_file.setdefault(files.get(k), []).append(preds[0].by_key[k])
        double = [(path, names) for path, names in sorted(by_file.items()) if len(names) > 1]
        if double:
            path, names = double[0]
            raise ProtocolError(
                f"{len(double)} {what}(s) of {option} '{files.root}' pair with more than one "
                f"completion of --pred '{s.pred[0]}' (e.g. '{os.path.relpath(path, files.root)}'"
                f" with {_listed(names)}), so they would be scored more than once; remove or "
                f"rename the extra completions so that each name occurs once.")
    for p, d in zip(preds[1:], s.pred[1:]):
        extra = _unmatched(p, keys)
        if extra:
            raise ProtocolError(
                f"--pred '{d}' has {len(extra)} completion(s) that no completion of --pred "
                f"'{s.pred[0]}' pairs with ({_listed(extra)}); every --pred folder is one repeat "
                f"of the same images, so remove them or add their partners to every folder.")


def _looks_like_mask(path: str) -> bool:
    """True for a black-and-white image (grey, nearly every pixel near 0 or 255, both present):
    a mask, not a photo."""
    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.int16)
    except OSError:
        return False
    if int(np.abs(a - a[..., :1]).max()) > 2:
        return False
    g = a[..., 0]
    low, high = g <= 8, g >= 247
    return bool(low.any() and high.any() and (low | high).mean() >= 0.99)


def _refuse_masks_as_ground_truth(s: TestSettings, keys, gt, masks, patterns) -> None:
    """A pairing that takes mask files as ground truth (a pattern that names masks, files the
    ``--masks`` pattern claims, or black-and-white images) would score completions against
    masks and exit 0: refuse it with the pattern that pairs the real images."""
    template = patterns["image"].template
    reason = None
    if "mask" in roles_named(template.replace(NAME, " ")):
        reason = f"its pattern '{template}' names mask files"
    elif masks is not None:
        claimed = {masks.get(k) for k in keys} & {gt.get(k) for k in keys}
        if claimed:
            reason = (f"'{os.path.relpath(sorted(claimed)[0], s.data)}' is also the mask of "
                      f"--masks")
    if reason is None:
        for k in keys[:32]:
            if _looks_like_mask(gt.get(k)):
                reason = f"'{os.path.relpath(gt.get(k), s.data)}' is a black-and-white mask image"
                break
    if reason is None:
        return
    hint = suggest_roles([rel_stem(n) for n in scan_images(s.data)], ("gt",))
    raise ProtocolError(
        f"--gt '{s.data}' pairs the completions with mask files as ground truth ({reason}), so "
        f"the scores would compare completions with masks; give the ground-truth images "
        + (f"(e.g. --pair-by {hint})." if hint else "(their folder with --gt, or their name "
           "pattern with --pair-by gt=...)."))


def score_folders(s: TestSettings) -> Tuple[str, dict]:
    """``test.py --pred DIR [DIR ...] --gt DIR [--masks DIR]``: score existing completions.

    Each ``--pred`` folder is one repeat (e.g. ``images/all/r0``, ``r1``, ... of an earlier
    ``--save-images`` run, or another method's outputs); its files pair with the ground truth
    (``s.data``) and the optional masks (``s.mask_dir``) by name (``s.pair_by``). The same
    loop, Evaluator, hole metrics (with masks), mean ± std over repeats and results files as an
    in-memory evaluation. Completions are read as they are; each must have its ground truth's
    size, or be S x S with the ground truth read like a test set at S (centre crop + Lanczos),
    as the in-memory path reads it. Returns (results directory, results dict); a late failure
    (e.g. a metric that cannot take the images' size) leaves no results directory behind.
    """
    made: list = []
    try:
        return _score_folders(s, made)
    except BaseException:
        if made:
            remove_unfinished(*made[0])
        raise


def _check_scoring(s: TestSettings):
    """The settings of a scoring run: (device, Inception needed, name patterns)."""
    check_out_dir(s.out)
    device = resolve_device(s.device)
    if s.batch < 1:
        raise ProtocolError(f"--batch must be >= 1, got {s.batch}.")
    need_inc = check_metric_files(s)
    patterns = pair_patterns(s)
    if not s.data:
        raise ProtocolError("--pred needs the ground truth: pass --gt DIR (the images the "
                            "completions were made from).")
    if not os.path.isdir(s.data):
        raise ProtocolError(f"--gt {s.data!r} is not a folder; give the folder of ground-truth "
                            f"images.")
    for d in s.pred:
        if os.path.realpath(d) == os.path.realpath(s.data) and \
                patterns["pred"] == patterns["image"]:
            roles = ("gt", "pred") + (("mask",) if s.mask_dir and os.path.realpath(s.mask_dir)
                                      == os.path.realpath(d) else ())
            hint = suggest_roles([rel_stem(n) for n in scan_images(d)], roles) or \
                "gt={name}_real pred={name}_out"
            raise ProtocolError(f"--pred and --gt are the same folder '{d}' with the same name "
                                f"pattern, so every image would be scored against itself; tell "
                                f"them apart with --pair-by (e.g. {hint}).")
    return device, need_inc, patterns


def _pair_folders(s: TestSettings, patterns):
    """(completions per repeat, their keys, ground truth, masks or None, ground-truth names
    without a completion): every file paired once, by name."""
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

    preds = [files(d, "pred", "completion", "--pred") for d in s.pred]
    keys = sorted(preds[0].keys())
    gt = files(s.data, "image", "ground-truth image", "--gt")

    def complete_set(found):
        missing = found.missing(keys)
        if missing:
            raise ProtocolError(found.missing_message(missing, patterns["pred"], "pred", keys))
        return found

    for found in [gt] + preds[1:]:
        complete_set(found)
    masks = complete_set(files(s.mask_dir, "mask", "mask", "--masks")) if s.mask_dir else None
    _check_one_to_one(s, keys, preds, gt)
    unscored = _unmatched(gt, keys)
    if unscored and not s.allow_subset:
        raise ProtocolError(
            f"--gt '{s.data}' has {len(unscored)} of {len(gt)} ground-truth image(s) without a "
            f"completion in --pred '{s.pred[0]}' ({_listed(unscored)}), so the scores would "
            f"describe a subset; add the missing completions, or pass --allow-subset to score "
            f"only the completed images on purpose.")
    _refuse_masks_as_ground_truth(s, keys, gt, masks, patterns)
    if s.n_images is not None:
        if s.n_images < 1:
            raise ProtocolError(f"--n-images must be at least 1, got {s.n_images}; leave it out "
                                f"to score every completion.")
        if s.n_images > len(keys):
            raise ProtocolError(f"Asked for {s.n_images} images but --pred '{s.pred[0]}' has "
                                f"{len(keys)}; lower --n-images.")
        keys = keys[:s.n_images]
    return preds, keys, gt, masks, unscored


def _sizes(preds, keys, gt) -> Tuple[Tuple[int, int], List[str]]:
    """(the completions' one size, keys whose ground truth is read at that size like a test set):
    one size for all completions; ground truth of that size, or resized when it is square."""
    size = _image_size(preds[0].get(keys[0]))
    for p in preds:
        for k in keys:
            other = _image_size(p.get(k))
            if other != size:
                raise ProtocolError(f"Completion '{p.get(k)}' is {other[0]}x{other[1]} but "
                                    f"'{preds[0].get(keys[0])}' is {size[0]}x{size[1]}; score "
                                    f"completions of one size per run.")
    resized = [k for k in keys if _image_size(gt.get(k)) != size]
    if resized and size[0] != size[1]:
        k = resized[0]
        w, h = _image_size(gt.get(k))
        raise ProtocolError(f"Ground truth '{gt.get(k)}' is {w}x{h} but its completion is "
                            f"{size[0]}x{size[1]}; give ground truth of the completions' size.")
    return size, resized


def _scoring_warnings(s: TestSettings, gt, keys, size, resized, unscored) -> List[str]:
    """Logged and recorded: resized ground truth, a subset on purpose, too few images."""
    warnings = []
    if resized:
        w, h = _image_size(gt.get(resized[0]))
        warnings.append(f"{len(resized)} ground-truth image(s) (e.g. '{gt.get(resized[0])}', "
                        f"{w}x{h}) are not {size[0]}x{size[1]}: they are centre-cropped and "
                        f"resized (Lanczos) to the completions' size, as a test set is read")
        log.warning("%s.", warnings[-1])
    if unscored:
        warnings.append(f"--allow-subset: {len(unscored)} of {len(gt)} ground-truth image(s) "
                        f"have no completion and are not scored (e.g. '{unscored[0]}')")
        log.warning("%s.", warnings[-1])
    small = warn_small_sets(len(keys), s.metrics)
    if small:
        warnings.append(small)
    return warnings


def _read_masks(s: TestSettings, keys, masks, size) -> Dict[str, torch.Tensor]:
    """Every mask read once, at the completions' size, and refused without a hole, before any
    work."""
    out: Dict[str, torch.Tensor] = {}
    for k in keys:
        path = masks.get(k)
        m = to_mask_tensor(fit_mask(read_mask_file(path, s.hole_value), (size[1], size[0])))
        check_holes(m[None], [path], size)
        out[k] = m
    return out


def _score_folders(s: TestSettings, made: list) -> Tuple[str, dict]:
    device, need_inc, patterns = _check_scoring(s)
    preds, keys, gt, masks, unscored = _pair_folders(s, patterns)
    size, resized = _sizes(preds, keys, gt)
    warnings = _scoring_warnings(s, gt, keys, size, resized, unscored)
    mask_tensors = _read_masks(s, keys, masks, size) if masks is not None else {}

    evaluator, random_used = build_evaluator(
        s.metrics, device, inception=s.inception, lpips_vgg=s.lpips_vgg,
        allow_random=s.allow_random_pretrained, seed=0, resize=s.fid_resize,
        inception_key=s.sources.get("inception", "--inception"),
        lpips_key=s.sources.get("lpips_vgg", "--lpips-vgg"))
    if random_used:
        banner("SCORING WITH RANDOMLY INITIALISED STAND-INS: " + ", ".join(random_used)
               + ".\nThese numbers are meaningless: use this for tests only.")
    existed = s.out is not None and os.path.isdir(s.out)
    out_dir = make_out_dir(s, "scored-" + os.path.basename(os.path.normpath(s.pred[0])))
    made.append((out_dir, existed))
    log.info("results directory: %s", out_dir)
    started = datetime.datetime.now(datetime.timezone.utc)

    resized_set = set(resized)
    batches = [list(range(i, min(len(keys), i + s.batch))) for i in range(0, len(keys), s.batch)]

    def real_batch(b):        # S x S completions: ground truth read like a test set at S
        return torch.stack([pil_to_tensor(load_image(gt.get(keys[i]), size[0]))
                            if keys[i] in resized_set else _read_rgb_tensor(gt.get(keys[i]))
                            for i in batches[b]])

    def mask_batch(r, bucket, b):
        return (torch.stack([mask_tensors[keys[i]] for i in batches[b]]),
                [os.path.relpath(masks.get(keys[i]), s.mask_dir) for i in batches[b]])

    def complete(r, bucket, b, real, mask):     # the "model": repeat r's folder
        return torch.stack([_read_rgb_tensor(preds[r].get(keys[i])) for i in batches[b]])

    runs, pairs = run_batches(
        evaluator, complete, repeats=len(preds), buckets=(ALL_BUCKET,), bucketed=False,
        batches=batches, real_batch=real_batch, masks=mask_batch if masks is not None else None,
        image_names=[os.path.relpath(gt.get(k), s.data) for k in keys],
        pair_extra=lambda r, i: {"completion": os.path.abspath(preds[r].get(keys[i]))},
        progress=s.progress, desc="scoring")
    runs = [{"repeat": x["repeat"], "seed": None, "mask_seed": None, "results": x["results"],
             "pred": os.path.abspath(s.pred[x["repeat"]])} for x in runs]
    finished = datetime.datetime.now(datetime.timezone.utc)
    record = protocol_record(
        keys, list(size), s.batch, len(preds), evaluator,
        hole_keys(evaluator) if masks is not None else (),
        source={"mode": "scored existing completions (test.py --pred)",
                "pred": [os.path.abspath(d) for d in s.pred], "gt": os.path.abspath(s.data),
                "masks": None if masks is None else {
                    "kind": "paired", "root": os.path.abspath(s.mask_dir),
                    "hole_value": s.hole_value, "resize": "centre crop to square, "
                    "nearest-neighbour resize to the completions' size"},
                "pair_by": {r: patterns[r].template for r in ("image", "pred", "mask")}},
        subset={"subset": {"allow_subset": bool(s.allow_subset), "gt_images": len(gt),
                           "gt_without_completion": len(unscored),
                           "first_without_completion": unscored[:20]}},
        resized={"ground_truth_resized": len(resized)})
    record.update(run_record(s, need_inception=need_inc, random_used=random_used,
                             warnings=warnings, device=device, started=started,
                             finished=finished))
    result = summarise(runs, record, pairs)
    write_results(out_dir, result)
    return out_dir, result
