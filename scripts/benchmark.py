"""Benchmark of EXE-GAN training and inference (the figures are in docs/benchmarks.md).

A sweep over variants of the training config: each variant builds the loop's own
``training.trainer.Trainer`` with ``train.time_phases`` on and runs ``Trainer.train_step``; the
phase times are the trainer's own timer's (``training/timing.py``: the figures a run writes to
stats.jsonl as ``time_<phase>_ms``) — prep (masks, exemplars, the exemplar's style codes and
identity features), D main, D reg (R1), G main (adversarial + attribute + identity + LPIPS), G reg
(path length), EMA and the whole iteration — as the median of ``--repeats`` steps after
``--warmup`` steps, at steps where R1 and path length both run. Inference (``models.EXEGAN.inpaint``
on G_ema, and G_ema alone) is timed with the same timer. Every measurement records the peak memory
of its timed runs: the process's peak RSS (``VmHWM`` of ``/proc/self/status``, reset through
``/proc/self/clear_refs`` first) and, on CUDA, ``torch.cuda.max_memory_allocated``; the loop's
phases share the peak of the timed steps.

The networks are the real ones at full width with random weights — G and D at the paper's
channel multiplier 2, and ``pretrained.standin_size: full`` (the pSp IR-SE50 style encoder, the
ResNet-101 ArcFace and the LPIPS VGG16, built in memory; no file is read). ``--tiny`` instead takes
the tiny configuration (32 px, narrow G/D, the tiny random stand-ins) for smoke runs.

Presets set the size and the number of runs: ``paper`` (256 px, batch 2 per device, 3 timed
runs; the default with ``--device cuda``), ``cpu`` (64 px, 2 timed runs, a few minutes on a 2-core
CPU; the default on CPU) and ``tiny``. ``--size``, ``--batch``, ``--repeats``, ``--warmup`` override.

``--variants a,b,...`` runs each variant in its own process (``multiprocessing`` with ``spawn``,
so peak memory, thread count and compiled code do not leak between them) and prints one table
with each phase's speed-up over the first variant. A variant is one name from ``VARIANTS`` or
several joined by ``+`` (``bf16+channels_last``); most are config overrides (``--set``), the rest
switch a library implementation (ops, upfirdn2d, modconv). ``--rounds N`` repeats the whole list N
times (A B A B ...) and pools the runs. On a busy machine ``--interleave`` gives paired figures
instead: one trainer in one process, the variants (library switches only: modconv_*,
naive_upfirdn, tiled, general, ops_*) switched around every timed step. Examples::

    python scripts/benchmark.py                                   # CPU preset: 64 px, base only
    python scripts/benchmark.py --preset paper --repeats 1        # 256 px, batch 2
    python scripts/benchmark.py --preset paper --interleave --variants base,modconv_auto
    python scripts/benchmark.py --variants base,threads1,bf16 --rounds 2
    python scripts/benchmark.py --tiny --variants base,naive_upfirdn
    python scripts/benchmark.py --device cuda --variants base,ops_ref,bf16,channels_last

The JSON (``--out``, default ``runs/bench/benchmark_<device>.json``) holds the machine, the
settings, the command line and, per variant, every phase's times, peak memory and the derived
figures (images/s, the amortised iteration with lazy regularisation).

This file runs the variants and holds the command line; ``scripts/benchmark_variants.py`` the
variant table and the trainer each variant builds, ``scripts/benchmark_report.py`` the derived
figures, the pooling of rounds and the table, ``scripts/benchmark_measure.py`` the machine, memory
and timing tools the other benchmarks share.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shlex
import sys
import tempfile
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from common.cli import DefaultsHelpFormatter  # noqa: E402
from datasets.demo import make_demo_faces  # noqa: E402
from datasets.folder import ImageFolderDataset  # noqa: E402
from models.exegan import EXEGAN  # noqa: E402
from scripts.benchmark_measure import (machine_info, measure, memory_peaks,  # noqa: E402
                                       reset_memory_peaks, time_summary, write_report)
from scripts.benchmark_report import derive, format_table, merge_rounds, ratios  # noqa: E402
from scripts.benchmark_variants import (DEFAULT_PHASES, LOOP_PHASES, PHASES, VARIANTS,  # noqa: E402
                                        BenchmarkError, build_trainer, config_summary, full_steps,
                                        library_switches, param_counts, parse_variant, step_inputs,
                                        timed_step)
from training.data import StepBatchSampler  # noqa: E402

SCHEMA = 2
# Defaults of --size / --repeats / --warmup. "paper" is the paper's training setting (256 px; batch
# 2 per device is --batch's default). A full 256-px iteration with the full-size pretrained
# networks takes about a minute on a 2-core CPU, so the CPU default is 64 px, which keeps every
# network and phase (the pSp encoder still sees 256x256: it resizes its input) and runs in a few
# minutes.
PRESETS = {"paper": {"size": 256, "repeats": 3, "warmup": 1},
           "cpu": {"size": 64, "repeats": 2, "warmup": 1},
           "tiny": {"size": 32, "repeats": 2, "warmup": 1}}

log = logging.getLogger("benchmark")


# ----------------------------------------------------------------------------------------------
# One variant in this process, or all of them interleaved in it (--interleave)
# ----------------------------------------------------------------------------------------------

def _check_device(device: torch.device) -> None:
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError("--device cuda was given but no CUDA device is visible; use --device cpu.")


def _new_result(opts, trainer, settings: dict, build_s: float) -> dict:
    return {"status": "ok", "settings": settings, "threads": torch.get_num_threads(), "pid": os.getpid(),
            "load_avg_start": os.getloadavg(), "build_s": build_s, "phases": {}, "errors": {},
            "notes": ["compile: each phase's first_warmup_s includes compiling it; R1 and path "
                      "length stay eager, inference runs EXEGAN.compile()"] if settings.get("compile") else [],
            "config": config_summary(trainer), "params_m": param_counts(trainer),
            "infer_batch": opts.infer_batch or trainer.cfg.train.batch}


def _time_loop(opts, trainer, device: torch.device, result: dict) -> None:
    """The trainer's own phase times over ``warmup + repeats`` full steps (R1 and path length
    run), the loop's phases sharing the peak memory of the timed steps."""
    wanted = [p for p in opts.phases if p in LOOP_PHASES]
    if not wanted:
        return
    real = step_inputs(opts, trainer.cfg.train.batch, trainer.cfg.model.size, device)
    step_at, runs, first = full_steps(trainer), [], None
    for i in range(opts.warmup + opts.repeats):
        if i == opts.warmup:
            rss_reset, rss_start = reset_memory_peaks(device)
        t = timed_step(trainer, step_at(i), real)
        if i == 0 and opts.warmup:
            first = t
        if i >= opts.warmup:
            runs.append(t)
    peaks = memory_peaks(device, rss_reset, rss_start)
    for p in wanted:
        result["phases"][p] = {**time_summary([r[p] for r in runs]),
                               "first_warmup_s": first.get(p) if first else None, **peaks}


def _inference_fns(opts, trainer, device: torch.device, compiled: bool) -> dict:
    """{phase: callable}: ``EXEGAN.inpaint`` on G_ema, and G_ema alone on encoded codes."""
    model = EXEGAN(trainer.G_ema, trainer.pre.style_encoder)
    if compiled:
        model.compile()
    nb = opts.infer_batch or trainer.cfg.train.batch
    imgs = step_inputs(opts, nb, trainer.cfg.model.size, device)
    masks = trainer.draw_masks(1, nb)
    codes = model.encode_exemplars(imgs.flip(0))
    return {"inference": lambda: model.inpaint(imgs, masks, imgs.flip(0), seed=0),
            "inference_g": lambda: model.complete(imgs, masks, codes, seed=0)}


def _record_error(result: dict, phase: str, exc: Exception) -> None:
    result["errors"][phase] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    log.warning("  %s failed: %s", phase, result["errors"][phase])


def run_variant(opts, name: str) -> dict:
    """Build the loop's trainer for variant ``name`` and time the requested phases."""
    settings = parse_variant(name)
    device = torch.device(opts.device)
    _check_device(device)
    if settings.get("ops") == "cuda" and device.type != "cuda":
        return {"status": "skipped", "reason": "CPU tensors always take the reference ops; "
                "ops_cuda needs --device cuda", "settings": settings}
    threads = settings.get("threads", opts.threads)
    if threads:
        torch.set_num_threads(threads)
    with library_switches(settings):
        t_build = time.perf_counter()
        trainer = build_trainer(opts, settings, device)
        result = _new_result(opts, trainer, settings, time.perf_counter() - t_build)
        try:
            _time_loop(opts, trainer, device, result)
        except RuntimeError as exc:  # a variant that cannot run the step (e.g. an op on this device)
            _record_error(result, "iteration", exc)
        for p, fn in _inference_fns(opts, trainer, device, bool(settings.get("compile"))).items():
            if p in opts.phases:
                try:
                    result["phases"][p] = measure(fn, device, opts.repeats, opts.warmup)
                except RuntimeError as exc:
                    _record_error(result, p, exc)
    result["load_avg_end"] = os.getloadavg()
    derive(result)
    return result


def run_interleaved(opts, names: list) -> dict:
    """All variants in this process, their timed steps interleaved (A B B A A B ...), so that slow
    drifts of the machine's load hit every variant alike: paired comparisons for a busy machine.
    Variants with the same training config share one trainer (the library switches are switched
    around each step); each other config gets its own trainer, built here. Variants that change
    the process (threads, compile) need their own process. Each timed step resets the peak-RSS
    counter first: a variant's peak RSS is the process's largest over its own steps (every
    trainer of the process included)."""
    settings = {n: parse_variant(n) for n in names}
    for n, st in settings.items():
        fixed = sorted(k for k in ("threads", "compile") if st.get(k))
        if fixed:
            raise BenchmarkError(f"--interleave runs every variant in one process; '{n}' changes "
                                 f"{', '.join(fixed)}, which needs its own process (drop --interleave).")
    device = torch.device(opts.device)
    _check_device(device)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    trainers, infer, results = {}, {}, {}
    for n in names:
        key = tuple(settings[n]["set"])
        if key not in trainers:
            t_build = time.perf_counter()
            trainers[key] = (build_trainer(opts, settings[n], device), time.perf_counter() - t_build)
            infer[key] = _inference_fns(opts, trainers[key][0], device, compiled=False)
        results[n] = _new_result(opts, trainers[key][0], settings[n], trainers[key][1])
    real = step_inputs(opts, opts.batch, next(iter(trainers.values()))[0].cfg.model.size, device)
    runs, done = {n: [] for n in names}, {n: 0 for n in names}
    for rep in range(opts.warmup + opts.repeats):
        for n in (names if rep % 2 == 0 else names[::-1]):
            key = tuple(settings[n]["set"])
            trainer = trainers[key][0]
            with library_switches(settings[n]):
                rss_reset, rss_start = reset_memory_peaks(device)
                t = timed_step(trainer, full_steps(trainer)(done[n]), real)
                for p in ("inference", "inference_g"):
                    if p in opts.phases:
                        with trainer.timer.phase(p):
                            infer[key][p]()
                t.update({p: v[0] for p, v in trainer.timer.read().items()})
                done[n] += 1
            if rep >= opts.warmup:
                runs[n].append((t, memory_peaks(device, rss_reset, rss_start)))
    for n in names:
        for p in opts.phases:
            if all(p in t for t, _ in runs[n]):
                peaks = [pk for _, pk in runs[n]]
                m = time_summary([t[p] for t, _ in runs[n]])
                m["peak_rss_mib"] = max((pk["peak_rss_mib"] for pk in peaks if pk["peak_rss_mib"]), default=None)
                if device.type == "cuda":
                    m["cuda_max_allocated_mib"] = max(pk["cuda_max_allocated_mib"] for pk in peaks)
                results[n]["phases"][p] = m
        results[n]["interleaved"] = True
        results[n]["load_avg_end"] = os.getloadavg()
        derive(results[n])
    return results


def _variant_process(opts, name: str, out: str) -> None:
    """The body of one variant's own process (``multiprocessing`` spawn): its result to ``out``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = _safe_run_variant(opts, name)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(res, f)


def _run_isolated(opts, name: str) -> dict:
    """Run one variant in a fresh process and read its result back."""
    with tempfile.TemporaryDirectory(prefix="exegan-bench-") as tmp:
        out = os.path.join(tmp, "variant.json")
        proc = multiprocessing.get_context("spawn").Process(target=_variant_process, args=(opts, name, out))
        proc.start()
        proc.join()
        if proc.exitcode != 0 or not os.path.isfile(out):
            return {"status": "error", "error": f"the variant's process exited with code {proc.exitcode}"}
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def _safe_run_variant(opts, name: str) -> dict:
    try:
        return run_variant(opts, name)
    except BenchmarkError:
        raise
    except Exception as exc:  # a variant that cannot be built is reported in the JSON, not fatal
        log.exception("variant %s failed", name)
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"}


# ----------------------------------------------------------------------------------------------
# Data loading
# ----------------------------------------------------------------------------------------------

def bench_data(opts, size: int, batch: int, workers_list) -> dict:
    """images/s of the loop's DataLoader (ImageFolderDataset + StepBatchSampler) on demo faces,
    per number of workers, measured after the first batch (worker start-up excluded)."""
    n_batches = max(4, opts.data_batches)
    out = {}
    with tempfile.TemporaryDirectory(prefix="exegan-bench-data-") as tmp:
        faces = make_demo_faces(os.path.join(tmp, "faces"), n=max(16, 2 * batch), size=size, seed=0, n_test=8)
        ds = ImageFolderDataset(faces.train, size, hflip=False)
        for w in workers_list:
            sampler = StepBatchSampler(len(ds), batch, 1, 0, 0, 0, n_batches + 1)
            loader = DataLoader(ds, batch_sampler=sampler, num_workers=w,
                                pin_memory=opts.device.startswith("cuda"))
            t0 = time.perf_counter()
            it = iter(loader)
            next(it)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            n = 0
            for x in it:
                n += x.shape[0]
            dt = time.perf_counter() - t0
            out[str(w)] = {"images_per_s": n / dt, "first_batch_s": first, "images": n}
    return out



# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Time EXE-GAN's training phases and inference (median of several runs) and "
                    "write JSON; see docs/benchmarks.md.",
        formatter_class=DefaultsHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="size / repeats / warm-up defaults: 'paper' (256 px, the default on CUDA), "
                        "'cpu' (64 px, a few minutes on a 2-core CPU; the default on CPU), 'tiny' "
                        "(= --tiny); explicit --size / --repeats / --warmup win")
    p.add_argument("--size", type=int, default=None, help="resolution (default: the preset's)")
    p.add_argument("--batch", type=int, default=2, help="per-device training batch")
    p.add_argument("--infer-batch", type=int, default=None, help="inference batch (default: --batch)")
    p.add_argument("--tiny", action="store_true",
                   help="smoke preset: 32-px narrow G/D and the loop's tiny pretrained stand-ins")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per phase, median reported (default: the preset's)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per phase first (default: the preset's)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the whole list of variants this many times, interleaved (A B A B), "
                        "each time in fresh processes; the medians pool every round's runs")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = PyTorch's default)")
    p.add_argument("--variants", default="base",
                   help=f"comma-separated; each one of {', '.join(VARIANTS)} or several joined by '+'")
    p.add_argument("--phases", default=",".join(DEFAULT_PHASES), help="comma-separated subset of "
                   + ", ".join(PHASES))
    p.add_argument("--self-prob", type=float, default=1.0,
                   help="exemplar.self_prob; 1 makes every step a self-exemplar step (LPIPS on)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="training-config override for every variant, e.g. loss.lambda_id=0")
    p.add_argument("--data-workers", default="", help="also time the DataLoader with these worker "
                   "counts, e.g. '0,2' (empty = skip)")
    p.add_argument("--data-batches", type=int, default=8, help="batches per data-loading measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON path (default runs/bench/benchmark_<device>.json)")
    p.add_argument("--interleave", action="store_true",
                   help="paired comparison for a busy machine: every variant in this process (one "
                        "trainer per training config), their timed steps alternating (not threads1 "
                        "or compile)")
    p.add_argument("--in-process", action="store_true",
                   help="run the variants in this process instead of one subprocess each")
    return p


def _check_opts(opts) -> None:
    if opts.preset is None:
        opts.preset = "tiny" if opts.tiny else "cpu" if opts.device == "cpu" else "paper"
    opts.tiny = opts.tiny or opts.preset == "tiny"
    for key, value in PRESETS[opts.preset].items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    opts.phases = [p.strip() for p in opts.phases.split(",") if p.strip()]
    bad = [p for p in opts.phases if p not in PHASES]
    if bad:
        raise BenchmarkError(f"Unknown phases {bad}; choose from {', '.join(PHASES)}.")
    if opts.repeats < 1 or opts.warmup < 0 or opts.rounds < 1:
        raise BenchmarkError("--repeats and --rounds must be >= 1 and --warmup >= 0.")
    opts.variant_list = [v.strip() for v in opts.variants.split(",") if v.strip()]
    if not opts.variant_list:
        raise BenchmarkError("--variants is empty; pass e.g. --variants base.")
    for v in opts.variant_list:
        parse_variant(v)
    opts.data_workers_list = [int(w) for w in opts.data_workers.split(",") if w.strip()]


def main(argv: Optional[list] = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        _check_opts(opts)
        device = torch.device(opts.device)
        _check_device(device)
    except BenchmarkError as e:
        raise SystemExit(f"benchmark: {e}")
    report = {"schema": SCHEMA, "interleaved": bool(opts.interleave),
              "command": "python scripts/benchmark.py " + " ".join(shlex.quote(a) for a in argv),
              "machine": machine_info(device),
              "settings": {"device": str(device), "preset": opts.preset, "size": opts.size, "batch": opts.batch,
                           "infer_batch": opts.infer_batch or opts.batch, "tiny": opts.tiny,
                           "repeats": opts.repeats, "warmup": opts.warmup, "rounds": opts.rounds,
                           "threads": opts.threads,
                           "self_prob": opts.self_prob, "set": opts.set, "phases": opts.phases,
                           "seed": opts.seed},
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "variants": {}}
    isolate = (len(opts.variant_list) > 1 or opts.rounds > 1) and not opts.in_process
    per_round: dict = {name: [] for name in opts.variant_list}
    t0 = time.perf_counter()
    try:
        for r in range(opts.rounds):
            if opts.interleave:
                res = run_interleaved(opts, opts.variant_list)
                for name in opts.variant_list:
                    per_round[name].append(res[name])
                continue
            for name in opts.variant_list:
                log.info("variant %s (round %d/%d)", name, r + 1, opts.rounds)
                t1 = time.perf_counter()
                res = _run_isolated(opts, name) if isolate else _safe_run_variant(opts, name)
                res["wall_s"] = time.perf_counter() - t1
                per_round[name].append(res)
    except BenchmarkError as e:
        raise SystemExit(f"benchmark: {e}")
    report["wall_s"] = time.perf_counter() - t0
    for name in opts.variant_list:
        report["variants"][name] = merge_rounds(per_round[name])
    if opts.data_workers_list:
        report["data"] = bench_data(opts, opts.size, opts.batch, opts.data_workers_list)
    report["baseline"] = opts.variant_list[0]
    report["ratios"] = ratios(report["variants"], opts.variant_list[0])

    out = write_report(report, opts.out or os.path.join("runs", "bench", f"benchmark_{device.type}.json"))
    print(format_table(report))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
