"""``test.py --ckpt``: load the generator and the style encoder, evaluate them under the protocol
(``metrics.protocol.evaluate``) and write ``results.json`` / ``results.csv`` / ``pairs.csv`` with
the protocol record to a fresh results directory.
"""
from __future__ import annotations

import datetime
import logging
import os
from typing import List, Optional, Tuple

from datasets.errors import ProtocolError
from datasets.protocols import as_pairing, make_mask_protocol

from .evaluator import ALL_METRICS
from .protocol import _require, build_evaluator, evaluate
from .results import _write_results, remove_unfinished
from .settings import (TestSettings, _banner, _check_metric_files, _check_out_dir, _device,
                       _file_record, _make_out_dir, _patterns, _precheck, run_record,
                       warn_resolution, warn_small_sets)

log = logging.getLogger("exegan.test")


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
    _check_numbers(s)
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
    pairing = as_pairing((s.exemplars, s.exemplar_dir), generator.size, patterns["exemplar"],
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
    existed = s.out is not None and os.path.isdir(s.out)
    out_dir = _make_out_dir(s, name)
    log.info("results directory: %s", out_dir)
    try:
        return _evaluate_into(s, out_dir, model, dataset, mask_spec, pairing, evaluator, n, started,
                              need_inc, random_used, warnings, device)
    except BaseException:
        remove_unfinished(out_dir, existed)
        raise


def _check_numbers(s: TestSettings) -> None:
    """Counts and seeds, named by the flag the user typed, before anything is loaded."""
    if s.n_images is not None and s.n_images < 1:
        where = "eval.n_images of the config" if s.n_images_at_most else "--n-images"
        raise ProtocolError(f"{where} must be >= 1 (the number of test images to evaluate), got "
                            f"{s.n_images}; leave it out to evaluate every image.")
    for flag, value in (("--seed", s.seed), ("--mask-seed", s.mask_seed)):
        if value is not None and value < 0:
            raise ProtocolError(f"{flag} must be >= 0, got {value}.")


def _evaluate_into(s, out_dir, model, dataset, mask_spec, pairing, evaluator, n, started,
                   need_inc, random_used, warnings, device) -> Tuple[str, dict]:
    result = evaluate(model, dataset, mask_spec, pairing, evaluator=evaluator, n_images=n,
                      batch=s.batch, seed=s.seed, mask_seed=s.mask_seed, repeats=s.repeats,
                      truncation=s.truncation, progress=s.progress,
                      save_dir=out_dir if s.save_images else None, record_pairs=True)
    finished = datetime.datetime.now(datetime.timezone.utc)

    record = result["protocol"]
    record.update(run_record(
        s, need_inception=need_inc, random_used=random_used, warnings=warnings, device=device,
        started=started, finished=finished,
        files={"checkpoint": {**_file_record(s.ckpt), "entry": s.which}, "psp": _file_record(s.psp)},
        data={"path": os.path.abspath(s.data), "kind": type(dataset).__name__,
              "n_available": len(dataset)},
        compiled=bool(s.compile)))
    _write_results(out_dir, result)
    return out_dir, result
