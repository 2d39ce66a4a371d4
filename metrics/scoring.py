"""``test.py --pred DIR [DIR ...] --gt DIR``: score completions that already exist (this model's or
another method's outputs) with the same Evaluator, hole metrics and results files as
:func:`metrics.testrun.run_test`; each ``--pred`` folder is one repeat.
"""
from __future__ import annotations

import datetime
import hashlib
import logging
import os
import sys
from typing import Dict, Optional, Tuple

import torch

from datasets.errors import ProtocolError
from datasets.protocols import ALL_BUCKET, check_holes

from .evaluator import STD_DDOF, aggregate_repeats
from .protocol import (PROTOCOL_VERSION, STD_RECORD, _hole_keys, _hole_scores, _results_with_holes,
                       build_evaluator)
from .results import _write_results, remove_unfinished
from .settings import (TestSettings, _banner, _check_metric_files, _check_out_dir, _device,
                       _make_out_dir, _patterns, run_record, warn_small_sets)

log = logging.getLogger("exegan.test")


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
    import numpy as np
    from PIL import Image
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
    from datasets.imaging import rel_stem, scan_images
    from datasets.pairing import NAME, roles_named, suggest_roles
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
    made: list = []
    try:
        return _score_folders(s, made)
    except BaseException:
        if made:  # a late failure (e.g. a metric that cannot take the images' size)
            remove_unfinished(*made[0])
        raise


def _score_folders(s: TestSettings, made: list) -> Tuple[str, dict]:
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
            from datasets.imaging import rel_stem, scan_images
            from datasets.pairing import suggest_roles
            roles = ("gt", "pred") + (("mask",) if s.mask_dir and os.path.realpath(s.mask_dir)
                                      == os.path.realpath(d) else ())
            hint = suggest_roles([rel_stem(n) for n in scan_images(d)], roles) or \
                "gt={name}_real pred={name}_out"
            raise ProtocolError(f"--pred and --gt are the same folder '{d}' with the same name "
                                f"pattern, so every image would be scored against itself; tell "
                                f"them apart with --pair-by (e.g. {hint}).")
    preds = [files(d, "pred", "completion", "--pred") for d in s.pred]
    keys = sorted(preds[0].keys())
    gt = files(s.data, "image", "ground-truth image", "--gt")
    missing = gt.missing(keys)
    if missing:
        raise ProtocolError(gt.missing_message(missing, patterns["pred"], "pred", keys))
    for d, p in zip(s.pred[1:], preds[1:]):
        missing = p.missing(keys)
        if missing:
            raise ProtocolError(p.missing_message(missing, patterns["pred"], "pred", keys))
    masks = None
    if s.mask_dir:
        masks = files(s.mask_dir, "mask", "mask", "--masks")
        missing = masks.missing(keys)
        if missing:
            raise ProtocolError(masks.missing_message(missing, patterns["pred"], "pred", keys))
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
    if unscored:
        msg = (f"--allow-subset: {len(unscored)} of {len(gt)} ground-truth image(s) have no "
               f"completion and are not scored (e.g. '{unscored[0]}')")
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
            check_holes(m[None], [path], size)
            mask_tensors[k] = m

    evaluator, random_used = build_evaluator(
        s.metrics, device, inception=s.inception, lpips_vgg=s.lpips_vgg,
        allow_random=s.allow_random_pretrained, seed=0, resize=s.fid_resize,
        inception_key=s.sources.get("inception", "--inception"),
        lpips_key=s.sources.get("lpips_vgg", "--lpips-vgg"))
    if random_used:
        _banner("SCORING WITH RANDOMLY INITIALISED STAND-INS: " + ", ".join(random_used)
                + ".\nThese numbers are meaningless: use this for tests only.")
    existed = s.out is not None and os.path.isdir(s.out)
    out_dir = _make_out_dir(s, "scored-" + os.path.basename(os.path.normpath(s.pred[0])))
    made.append((out_dir, existed))
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
        "subset": {"allow_subset": bool(s.allow_subset), "gt_images": len(gt),
                   "gt_without_completion": len(unscored),
                   "first_without_completion": unscored[:20]},
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
        **run_record(s, need_inception=need_inc, random_used=random_used, warnings=warnings,
                     device=device, started=started, finished=finished),
    }
    result = {"summary": aggregate_repeats([x["results"] for x in runs]), "repeats": runs,
              "protocol": record, "pairs": pairs}
    _write_results(out_dir, result)
    return out_dir, result
