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
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import multiprocessing
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
from typing import Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import op  # noqa: E402
from common.cli import DefaultsHelpFormatter  # noqa: E402
from datasets.demo import make_demo_faces  # noqa: E402
from datasets.folder import ImageFolderDataset  # noqa: E402
from models import stylegan2  # noqa: E402
from models.exegan import EXEGAN  # noqa: E402
from training.config import apply_overrides, from_dict, validate  # noqa: E402
from training.data import StepBatchSampler  # noqa: E402
from training.distributed import DistInfo  # noqa: E402
from training.timing import PhaseTimer  # noqa: E402
from training.trainer import Trainer  # noqa: E402

SCHEMA = 2
# Defaults of --size / --repeats / --warmup. "paper" is the paper's training setting (256 px; batch
# 2 per device is --batch's default). A full 256-px iteration with the full-size pretrained
# networks takes about a minute on a 2-core CPU, so the CPU default is 64 px, which keeps every
# network and phase (the pSp encoder still sees 256x256: it resizes its input) and runs in a few
# minutes.
PRESETS = {"paper": {"size": 256, "repeats": 3, "warmup": 1},
           "cpu": {"size": 64, "repeats": 2, "warmup": 1},
           "tiny": {"size": 32, "repeats": 2, "warmup": 1}}
# Phases in table order: the trainer's timer's (training/timing.py), then inference.
LOOP_PHASES = ("prep", "d_main", "d_reg", "g_main", "g_reg", "ema", "iteration")
PHASES = LOOP_PHASES + ("inference", "inference_g")
DEFAULT_PHASES = PHASES

# Variant atoms: what each changes relative to the plain fp32 loop. Joined with '+'. "set": config
# overrides (a run gets the same with --set); the other keys switch a library implementation.
VARIANTS = {
    "base": {},                                         # fp32, ops 'auto', default threads
    "threads1": {"threads": 1},                         # one intra-op CPU thread
    "bf16": {"set": ["train.amp=bf16"]},                # the loop's bf16 autocast
    "channels_last": {"set": ["train.channels_last=true"]},  # NHWC networks and inputs
    "compile": {"compile": True, "set": ["train.compile=true"]},  # train.compile; compiled EXEGAN
    "tiled": {"upfirdn_kernel": "tiled"},               # the tiled upfirdn2d kernel, forced (no self-check)
    "general": {"upfirdn_kernel": "general"},           # the general upfirdn2d kernel only (the old default)
    "fused_adam": {"set": ["train.fused_adam=true"]},   # the fused CUDA Adam kernel
    "ops_ref": {"ops": "ref"},                          # pure-PyTorch custom ops on CUDA
    "ops_cuda": {"ops": "cuda"},                        # compiled custom ops (CUDA only)
    "naive_upfirdn": {"upfirdn": "naive"},              # baseline: the single-channel upfirdn2d
    "no_lpips": {"set": ["loss.lambda_lpips=0"]},       # weight 0: the term is skipped
    "no_id": {"set": ["loss.lambda_id=0"]},
    "no_attr": {"set": ["loss.lambda_attr=0"]},
    "modconv_grouped": {"modconv": "grouped"},          # per-sample weights, grouped conv
    "modconv_batched": {"modconv": "batched"},          # shared weight, modulated activations
    "modconv_auto": {"modconv": "auto"},                # per layer, the form with smaller tensors
}

log = logging.getLogger("benchmark")


class BenchmarkError(ValueError):
    """A benchmark setting that cannot run (unknown variant, CUDA without a GPU, ...)."""


# ----------------------------------------------------------------------------------------------
# Machine, memory, timing
# ----------------------------------------------------------------------------------------------

def _status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_mib(field: str = "VmRSS") -> Optional[float]:
    kib = _status_kib(field)
    return None if kib is None else round(kib / 1024.0, 1)


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(), "mkldnn": torch.backends.mkldnn.is_available()}
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def write_report(report: dict, out: str) -> str:
    """Write the JSON report atomically (temp file, then rename); returns ``out``."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, out)
    return out


def _reset_peaks(device: torch.device) -> tuple:
    """Reset the peak counters; returns (peak-RSS reset worked, RSS now in MiB)."""
    ok = reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return ok, rss_mib()


def _peaks(device: torch.device, rss_reset: bool, rss_start) -> dict:
    out = {"peak_rss_mib": rss_mib("VmHWM") if rss_reset else None, "rss_start_mib": rss_start}
    if device.type == "cuda":
        out["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)
    return out


def _summary(times: list) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def measure(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> dict:
    """Median / min time of ``fn`` over ``repeats`` runs after ``warmup`` runs, timed by the
    training loop's phase timer (CUDA events / perf_counter), with the peak memory of the timed
    runs (the process's peak RSS; CUDA max allocated)."""
    timer = PhaseTimer(device, enabled=True)
    first, times = None, []
    for i in range(warmup + repeats):
        if i == warmup:
            rss_reset, rss_start = _reset_peaks(device)
        with timer.phase("run"):
            fn()
        t = timer.read()["run"][0]
        if i == 0 and warmup:
            first = t
        if i >= warmup:
            times.append(t)
    return {**_summary(times), "first_warmup_s": first, **_peaks(device, rss_reset, rss_start)}


# ----------------------------------------------------------------------------------------------
# The variant's training config and trainer
# ----------------------------------------------------------------------------------------------

def tiny_config_dict() -> dict:
    """The ``--tiny`` preset: configs/demo.yaml's 32-px networks and the loop's tiny stand-ins."""
    return {"model": {"size": 32, "style_dim": 64, "n_mlp": 2, "channel_multiplier": 0.25,
                      "channel_max": 64},
            "pretrained": {"allow_random": True},
            "loss": {"allow_random_backbone": True}}


def make_config(opts, settings: dict):
    """The training Config the benchmark runs: paper defaults + size/batch + variant settings,
    the phase timer on, random stand-ins of the pretrained networks (full size unless --tiny)."""
    data = tiny_config_dict() if opts.tiny else {"pretrained": {"allow_random": True, "standin_size": "full"},
                                                 "loss": {"allow_random_backbone": True}}
    data = apply_overrides(data, [])
    data.setdefault("model", {})
    if opts.size is not None:
        data["model"]["size"] = opts.size
    data["train"] = {"batch": opts.batch, "device": opts.device, "seed": opts.seed, "time_phases": True}
    # "All losses on": LPIPS only runs where the exemplar is the image itself, so the default
    # times that case (self_prob 1); --self-prob 0.2 times the paper's typical step instead.
    data["exemplar"] = {"self_prob": opts.self_prob}
    data["eval"] = {"every": 0}
    data = apply_overrides(data, list(opts.set or []) + list(settings.get("set", [])))
    cfg = from_dict(data)
    validate(cfg)
    return cfg


def build_trainer(opts, settings: dict, device: torch.device) -> Trainer:
    """The loop's Trainer for the benchmark config."""
    cfg = make_config(opts, settings)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    quiet = logging.getLogger("benchmark.trainer")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    # The random-LPIPS-trunk warning: the JSON records which networks are random stand-ins.
    logging.getLogger("losses.perceptual").disabled = True
    return Trainer(cfg, info, quiet)


def parse_variant(name: str) -> dict:
    """'bf16+channels_last' -> merged settings; unknown atoms are a BenchmarkError."""
    settings: dict = {"set": []}
    for atom in name.split("+"):
        atom = atom.strip()
        if atom not in VARIANTS:
            raise BenchmarkError(f"Unknown variant '{atom}' in '{name}'; choose from "
                                 f"{', '.join(VARIANTS)} (join several with '+').")
        for k, v in VARIANTS[atom].items():
            if k == "set":
                settings["set"] = settings["set"] + list(v)
            else:
                settings[k] = v
    return settings


@contextlib.contextmanager
def library_switches(settings: dict):
    """Select the op / model implementations a variant chooses (through the switches op and
    models.stylegan2 offer), for the duration of the block."""
    with contextlib.ExitStack() as stack:
        if settings.get("ops"):
            stack.enter_context(op.using_impl(settings["ops"]))
        if settings.get("upfirdn_kernel"):
            old_kernel = op.get_upfirdn2d_kernel()
            op.set_upfirdn2d_kernel(settings["upfirdn_kernel"])
            stack.callback(op.set_upfirdn2d_kernel, old_kernel)
        if settings.get("upfirdn") == "naive":
            old_naive = op.get_upfirdn2d_naive()
            op.set_upfirdn2d_naive(True)
            stack.callback(op.set_upfirdn2d_naive, old_naive)
        if settings.get("modconv"):
            old = stylegan2.get_modconv_impl()
            stylegan2.set_modconv_impl(settings["modconv"])
            stack.callback(stylegan2.set_modconv_impl, old)
        yield


def _config_summary(trainer) -> dict:
    cfg = trainer.cfg
    return {"size": cfg.model.size, "batch": cfg.train.batch, "amp": cfg.train.amp,
            "channels_last": cfg.train.channels_last,
            "d_reg_every": cfg.loss.d_reg_every, "g_reg_every": cfg.loss.g_reg_every,
            "loss_terms": list(trainer.objective.terms), "pretrained": list(trainer.pre.random)}


def _param_counts(trainer) -> dict:
    """Millions of parameters per network (shows the full-size networks are in use)."""
    def count(m):
        return 0.0 if m is None else sum(p.numel() for p in m.parameters()) / 1e6
    pre = trainer.pre
    return {"G": count(trainer.G), "D": count(trainer.D), "style_encoder": count(pre.style_encoder),
            "identity": count(pre.identity), "lpips": count(pre.lpips)}


def _inputs(opts, batch: int, size: int, device: torch.device):
    """Deterministic smooth 'images' in [-1, 1]: real [B,3,S,S] (exemplars come from the loop)."""
    g = torch.Generator().manual_seed(opts.seed)
    low = torch.rand(batch, 3, 8, 8, generator=g) * 2 - 1
    real = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (real + 0.05 * torch.randn(real.shape, generator=g)).clamp(-1, 1).to(device)


def full_steps(trainer) -> Callable[[int], int]:
    """i -> the i-th step at which R1 and path length both run (multiples of both intervals)."""
    L = trainer.cfg.loss
    every = math.lcm(L.d_reg_every, L.g_reg_every)
    return lambda i: i * every


def timed_step(trainer, step: int, real: torch.Tensor) -> dict:
    """One ``Trainer.train_step`` and its phase times in seconds, as the timer recorded them."""
    trainer.train_step(step, real)
    return {k: v[0] for k, v in trainer.timer.read().items()}


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
            "config": _config_summary(trainer), "params_m": _param_counts(trainer),
            "infer_batch": opts.infer_batch or trainer.cfg.train.batch}


def _time_loop(opts, trainer, device: torch.device, result: dict) -> None:
    """The trainer's own phase times over ``warmup + repeats`` full steps (R1 and path length
    run), the loop's phases sharing the peak memory of the timed steps."""
    wanted = [p for p in opts.phases if p in LOOP_PHASES]
    if not wanted:
        return
    real = _inputs(opts, trainer.cfg.train.batch, trainer.cfg.model.size, device)
    step_at, runs, first = full_steps(trainer), [], None
    for i in range(opts.warmup + opts.repeats):
        if i == opts.warmup:
            rss_reset, rss_start = _reset_peaks(device)
        t = timed_step(trainer, step_at(i), real)
        if i == 0 and opts.warmup:
            first = t
        if i >= opts.warmup:
            runs.append(t)
    peaks = _peaks(device, rss_reset, rss_start)
    for p in wanted:
        result["phases"][p] = {**_summary([r[p] for r in runs]),
                               "first_warmup_s": first.get(p) if first else None, **peaks}


def _inference_fns(opts, trainer, device: torch.device, compiled: bool) -> dict:
    """{phase: callable}: ``EXEGAN.inpaint`` on G_ema, and G_ema alone on encoded codes."""
    model = EXEGAN(trainer.G_ema, trainer.pre.style_encoder)
    if compiled:
        model.compile()
    nb = opts.infer_batch or trainer.cfg.train.batch
    imgs = _inputs(opts, nb, trainer.cfg.model.size, device)
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
    real = _inputs(opts, opts.batch, next(iter(trainers.values()))[0].cfg.model.size, device)
    runs, done = {n: [] for n in names}, {n: 0 for n in names}
    for rep in range(opts.warmup + opts.repeats):
        for n in (names if rep % 2 == 0 else names[::-1]):
            key = tuple(settings[n]["set"])
            trainer = trainers[key][0]
            with library_switches(settings[n]):
                rss_reset, rss_start = _reset_peaks(device)
                t = timed_step(trainer, full_steps(trainer)(done[n]), real)
                for p in ("inference", "inference_g"):
                    if p in opts.phases:
                        with trainer.timer.phase(p):
                            infer[key][p]()
                t.update({p: v[0] for p, v in trainer.timer.read().items()})
                done[n] += 1
            if rep >= opts.warmup:
                runs[n].append((t, _peaks(device, rss_reset, rss_start)))
    for n in names:
        for p in opts.phases:
            if all(p in t for t, _ in runs[n]):
                peaks = [pk for _, pk in runs[n]]
                m = _summary([t[p] for t, _ in runs[n]])
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


def derive(result: dict) -> None:
    """images/s and the amortised iteration (lazy regularisation: R1 every d_reg_every steps,
    path length every g_reg_every steps) from a variant's phase medians."""
    ph, c = result["phases"], result["config"]
    B = c["batch"]
    d = {}
    med = {k: v["median_s"] for k, v in ph.items()}
    if "iteration" in med:
        d["iteration_images_per_s"] = B / med["iteration"]
    if all(k in med for k in ("prep", "d_main", "g_main", "ema")):
        am = med["prep"] + med["d_main"] + med["g_main"] + med["ema"]
        if "d_reg" in med:
            am += med["d_reg"] / c["d_reg_every"]
        if "g_reg" in med:
            am += med["g_reg"] / c["g_reg_every"]
        d["amortised_iteration_s"] = am
        d["amortised_images_per_s"] = B / am
    nb = result.get("infer_batch", B)
    if "inference" in med:
        d["inference_images_per_s"] = nb / med["inference"]
    if "inference_g" in med:
        d["inference_g_images_per_s"] = nb / med["inference_g"]
    peaks = [v["peak_rss_mib"] for v in ph.values() if v.get("peak_rss_mib") is not None]
    if peaks:
        d["peak_rss_mib"] = max(peaks)
    cuda = [v["cuda_max_allocated_mib"] for v in ph.values() if "cuda_max_allocated_mib" in v]
    if cuda:
        d["cuda_max_allocated_mib"] = max(cuda)
    result["derived"] = d


def merge_rounds(results: list) -> dict:
    """One variant's results from several rounds (processes) -> one result whose phase times are
    all the rounds' timed runs together (median over all of them, peak memory the maximum)."""
    ok = [r for r in results if r.get("status") == "ok"]
    if len(ok) <= 1:
        return ok[0] if ok else results[0]
    out = dict(ok[0])
    out["rounds"] = len(ok)
    out["load_avg_start"] = [r["load_avg_start"] for r in ok]
    out["load_avg_end"] = [r["load_avg_end"] for r in ok]
    out["errors"] = {k: v for r in ok for k, v in r.get("errors", {}).items()}
    phases = {}
    for name in PHASES:
        runs = [r["phases"][name] for r in ok if name in r.get("phases", {})]
        if not runs:
            continue
        times = [t for m in runs for t in m["times_s"]]
        merged = {"median_s": statistics.median(times), "min_s": min(times), "times_s": times,
                  "first_warmup_s": [m.get("first_warmup_s") for m in runs],
                  "round_medians_s": [m["median_s"] for m in runs]}
        for key in ("peak_rss_mib", "cuda_max_allocated_mib", "rss_start_mib"):
            vals = [m[key] for m in runs if m.get(key) is not None]
            if vals:
                merged[key] = max(vals)
        phases[name] = merged
    out["phases"] = phases
    derive(out)
    return out


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
# Reporting
# ----------------------------------------------------------------------------------------------

def ratios(variants: dict, baseline: str) -> dict:
    """Speed-up of every variant's phases over the baseline: baseline median / variant median."""
    base = variants.get(baseline, {}).get("phases", {})
    out = {}
    for name, v in variants.items():
        r = {}
        for p, m in v.get("phases", {}).items():
            if p in base and m["median_s"] > 0:
                r[p] = base[p]["median_s"] / m["median_s"]
        bd, vd = variants.get(baseline, {}).get("derived", {}), v.get("derived", {})
        if "amortised_iteration_s" in bd and "amortised_iteration_s" in vd:
            r["amortised_iteration"] = bd["amortised_iteration_s"] / vd["amortised_iteration_s"]
        if bd.get("peak_rss_mib") and vd.get("peak_rss_mib"):
            r["peak_rss"] = vd["peak_rss_mib"] / bd["peak_rss_mib"]  # memory: variant / baseline
        out[name] = r
    return out


def format_table(report: dict) -> str:
    variants = report["variants"]
    names = list(variants)
    baseline = names[0]
    rat = report["ratios"]
    rows = [["phase"] + names]
    for p in PHASES:
        if not any(p in variants[n].get("phases", {}) or p in variants[n].get("errors", {}) for n in names):
            continue
        row = [p]
        for n in names:
            v = variants[n]
            if p in v.get("phases", {}):
                cell = f"{v['phases'][p]['median_s'] * 1000:.0f} ms"
                if n != baseline and p in rat.get(n, {}):
                    cell += f" (x{rat[n][p]:.2f})"
            elif v.get("status") != "ok":
                cell = v.get("status", "?")
            else:
                cell = "error" if p in v.get("errors", {}) else "-"
            row.append(cell)
        rows.append(row)
    extra = [("amortised iter", "amortised_iteration_s", lambda x: f"{x * 1000:.0f} ms", "amortised_iteration"),
             ("iter images/s", "iteration_images_per_s", lambda x: f"{x:.3f}", None),
             ("infer images/s", "inference_images_per_s", lambda x: f"{x:.2f}", None),
             ("G_ema images/s", "inference_g_images_per_s", lambda x: f"{x:.2f}", None),
             ("peak RSS", "peak_rss_mib", lambda x: f"{x:.0f} MiB", "peak_rss"),
             ("CUDA max alloc", "cuda_max_allocated_mib", lambda x: f"{x:.0f} MiB", None)]
    for label, key, fmt, rkey in extra:
        if not any(key in variants[n].get("derived", {}) for n in names):
            continue
        row = [label]
        for n in names:
            d = variants[n].get("derived", {})
            cell = fmt(d[key]) if key in d else "-"
            if rkey and n != baseline and rkey in rat.get(n, {}):
                cell += f" (x{rat[n][rkey]:.2f})"
            row.append(cell)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    s = report["settings"]
    head = (f"EXE-GAN benchmark: {s['device']}, size {s['size']}, batch {s['batch']}, "
            f"{s['repeats']} timed runs after {s['warmup']} warm-up x {s['rounds']} round(s) (median); ratios = speed-up "
            f"over '{baseline}' (peak RSS: variant / baseline)"
            + ("; variants interleaved in one process" if report.get("interleaved") else ""))
    out = [head] + lines
    for n in names:
        for p, e in variants[n].get("errors", {}).items():
            out.append(f"  [{n}] {p}: {e}")
        if variants[n].get("status") == "skipped":
            out.append(f"  [{n}] skipped: {variants[n].get('reason')}")
        if variants[n].get("status") == "error":
            out.append(f"  [{n}] error: {variants[n].get('error')}")
        if variants[n].get("settings", {}).get("compile"):
            firsts = {p: m.get("first_warmup_s") for p, m in variants[n].get("phases", {}).items()}
            out.append(f"  [{n}] first (compiling) call per phase: " + ", ".join(
                f"{p} {t if isinstance(t, (int, float)) else max(x for x in t if x):.1f} s"
                for p, t in firsts.items() if t))
    if report.get("data"):
        out.append("data loading (images/s by DataLoader workers): " + ", ".join(
            f"{w}: {v['images_per_s']:.1f}" for w, v in report["data"].items()))
    return "\n".join(out)


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
