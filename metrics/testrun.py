"""``test.py --ckpt``: load the generator and the style encoder, evaluate them under the protocol
(:func:`metrics.eval_loop.evaluate`) and write ``results.json`` / ``results.csv`` / ``pairs.csv``
with the protocol record to a fresh results directory.

The checkpoint is read once (``models.checkpoint.load_generator``); with
``--allow-random-pretrained`` the stand-ins' seed and a trained stand-in encoder come from its
``config`` entry, read with the tensors memory-mapped (a header read: no tensor data). A damaged
file is the loader's one-sentence ``CheckpointError``.
"""
from __future__ import annotations

import datetime
import logging
import os
from typing import List, Optional, Tuple

from datasets.errors import ProtocolError
from datasets.lmdb_dataset import open_dataset
from datasets.protocols import as_pairing, make_mask_protocol
from models.checkpoint import load_generator, safe_load
from models.exegan import EXEGAN
from models.psp import load_style_encoder

from .eval_loop import build_evaluator, evaluate, require_file
from .evaluator import ALL_METRICS
from .standins import standin_seed, standin_style_encoder, trained_standin_path
from .results import remove_unfinished, write_results
from .settings import (TestSettings, banner, check_metric_files, check_out_dir, file_record,
                       make_out_dir, pair_patterns, precheck, resolve_device, run_record,
                       warn_resolution, warn_small_sets)

log = logging.getLogger("exegan.test")


def _checkpoint_config(ckpt) -> Optional[dict]:
    """The ``config`` entry of a read checkpoint (None when it has none)."""
    config = ckpt.get("config") if isinstance(ckpt, dict) else None
    return config if isinstance(config, dict) else None


def _check_inputs(s: TestSettings):
    """Everything a user can get wrong about the files, numbers and the device, before anything
    is loaded; returns the device."""
    src = s.sources
    check_out_dir(s.out)
    device = resolve_device(s.device)
    bad = [m for m in s.metrics if m not in ALL_METRICS]
    if bad:
        raise ProtocolError(f"Unknown metric(s) {bad}; choose from {', '.join(ALL_METRICS)}.")
    if s.repeats < 1 or s.batch < 1:
        raise ProtocolError(f"--repeats and --batch must be >= 1, got {s.repeats} and {s.batch}.")
    _check_numbers(s)
    require_file(s.ckpt, "EXE-GAN checkpoint", src.get("ckpt", "--ckpt"),
                 "give our checkpoint / export or the released EXE_GAN_model_256.pt")
    if not s.data:
        raise ProtocolError("No test images given; pass --data (an image folder or LMDB) or "
                            "--config with data.test.")
    if not os.path.exists(s.data):
        raise ProtocolError(f"Test data {s.data!r} ({src.get('data', '--data')}) does not exist; "
                            f"give the test image folder or LMDB.")
    if s.psp is None and not s.allow_random_pretrained:
        require_file(None, "pSp style encoder file", src.get("psp", "--psp"),
                     "the released psp_ffhq_encode.pt, see checkpoints/README.md")
    if s.psp is not None:
        require_file(s.psp, "pSp style encoder file", src.get("psp", "--psp"),
                     "put psp_ffhq_encode.pt there or fix the path")
    return device


def _load_model(s: TestSettings, device, random_used: List[str]):
    """(EXEGAN, seed of the stand-ins): the generator, and the style encoder from ``--psp``,
    the run's trained stand-in or a seeded random one (named in ``random_used``)."""
    log.info("loading generator %s ['%s']", s.ckpt, s.which)
    ckpt = safe_load(s.ckpt)  # read once: the generator and, for stand-ins, the run's config
    generator = load_generator(s.ckpt, device, which=s.which, checkpoint=ckpt)
    config = _checkpoint_config(ckpt)
    del ckpt
    start, n = generator.exemplar_start, generator.n_exemplar
    seed = 0
    if s.allow_random_pretrained:
        seed = int(s.standin_seed) if s.standin_seed is not None else standin_seed(config)
    if s.psp is not None:
        encoder = load_style_encoder(s.psp, start, n, device)
        if encoder.style_dim != generator.style_dim:
            raise ProtocolError(f"The pSp file {s.psp} gives {encoder.style_dim}-d codes but the "
                                f"generator in {s.ckpt} takes {generator.style_dim}-d ones; "
                                f"pair the checkpoint with its own style encoder.")
        return EXEGAN(generator, encoder).to(device), seed
    try:
        trained = trained_standin_path(s.ckpt, config)
    except FileNotFoundError as e:
        raise ProtocolError(str(e)) from None
    if trained is not None:
        # A demo run with pretrained.standin_encoder_steps > 0: its stand-in was trained, so it
        # is read from the run's checkpoints/standin_psp.pt instead of rebuilt from the seed.
        encoder = load_style_encoder(trained, start, n, device)
        random_used.append(f"pSp style encoder (the run's trained stand-in {trained})")
    else:
        encoder = standin_style_encoder(start, n, generator.n_latent, generator.style_dim,
                                        seed).to(device)
        random_used.append(f"pSp style encoder (stand-in seed {seed})")
    return EXEGAN(generator, encoder).to(device), seed


def run_test(s: TestSettings) -> Tuple[str, dict]:
    """Run one ``test.py`` evaluation; returns (results directory, results dict).

    Everything a user can get wrong is checked before the long part starts (and before the
    results directory is created): files, folders, mask and exemplar sets, image count.
    """
    device = _check_inputs(s)
    need_inc = check_metric_files(s)
    patterns = pair_patterns(s)
    random_used: List[str] = []
    model, standin_seed = _load_model(s, device, random_used)
    if s.compile:
        model.compile()
    size = model.size

    # -- data and protocol ---------------------------------------------------------------------
    dataset = _open_test_set(s.data, size)
    n = s.n_images
    if n is not None and s.n_images_at_most and n > len(dataset):
        log.warning("the config asks for %d test images but %s has %d: using all %d.", n,
                    s.data, len(dataset), len(dataset))
        n = len(dataset)
    mask_spec = make_mask_protocol(s.masks, s.mask_dir, hole_value=s.hole_value,
                                   buckets=s.buckets, pattern=patterns["mask"],
                                   image_pattern=patterns["image"])
    pairing = as_pairing((s.exemplars, s.exemplar_dir), size, patterns["exemplar"],
                         patterns["image"])
    warnings = [w for w in (warn_resolution(dataset, size, s.data),
                            warn_small_sets(len(dataset) if n is None else n, s.metrics)) if w]

    # -- metric networks -----------------------------------------------------------------------
    evaluator, rnd = build_evaluator(
        s.metrics, device, inception=s.inception, lpips_vgg=s.lpips_vgg,
        allow_random=s.allow_random_pretrained, seed=standin_seed, resize=s.fid_resize,
        inception_key=s.sources.get("inception", "--inception"),
        lpips_key=s.sources.get("lpips_vgg", "--lpips-vgg"))
    random_used += rnd
    if random_used:
        banner("EVALUATING WITH RANDOMLY INITIALISED STAND-INS (--allow-random-pretrained or "
               "pretrained.allow_random): "
               + ", ".join(random_used) + ".\nThese numbers are meaningless: use this for tests "
               "and the demo only. Real evaluation needs the files under checkpoints/.")

    # -- run -----------------------------------------------------------------------------------
    started = datetime.datetime.now(datetime.timezone.utc)
    # Validate protocol against the images before creating anything on disk: evaluate()
    # checks again, but an early failure should leave no empty results directory behind.
    precheck(mask_spec, pairing, dataset, n, size)
    name = f"{os.path.splitext(os.path.basename(s.ckpt))[0]}-{mask_spec.kind}-{pairing.mode}"
    existed = s.out is not None and os.path.isdir(s.out)
    out_dir = make_out_dir(s, name)
    log.info("results directory: %s", out_dir)
    try:
        return _evaluate_into(s, out_dir, model, dataset, mask_spec, pairing, evaluator, n, started,
                              need_inc, random_used, warnings, device)
    except BaseException:
        remove_unfinished(out_dir, existed)
        raise


def _open_test_set(path: str, size: int):
    return open_dataset(path, size, hflip=False)


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
        files={"checkpoint": {**file_record(s.ckpt), "entry": s.which}, "psp": file_record(s.psp)},
        data={"path": os.path.abspath(s.data), "kind": type(dataset).__name__,
              "n_available": len(dataset)},
        compiled=bool(s.compile)))
    write_results(out_dir, result)
    return out_dir, result
