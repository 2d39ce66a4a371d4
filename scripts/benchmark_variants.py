"""The benchmark's variants and the trainer each one runs (``scripts/benchmark.py``): the phases
in table order, the variant atoms (config overrides or library switches, joined with '+'), the
training config of a variant, the loop's ``Trainer`` built from it, the switches applied around a
step, and one timed ``Trainer.train_step``.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

import op  # noqa: E402
from models import stylegan2  # noqa: E402
from training.config import apply_overrides, from_dict, validate  # noqa: E402
from training.distributed import DistInfo  # noqa: E402
from training.trainer import Trainer  # noqa: E402

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

class BenchmarkError(ValueError):
    """A benchmark setting that cannot run (unknown variant, CUDA without a GPU, ...)."""


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


def config_summary(trainer) -> dict:
    cfg = trainer.cfg
    return {"size": cfg.model.size, "batch": cfg.train.batch, "amp": cfg.train.amp,
            "channels_last": cfg.train.channels_last,
            "d_reg_every": cfg.loss.d_reg_every, "g_reg_every": cfg.loss.g_reg_every,
            "loss_terms": list(trainer.objective.terms), "pretrained": list(trainer.pre.random)}


def param_counts(trainer) -> dict:
    """Millions of parameters per network (shows the full-size networks are in use)."""
    def count(m):
        return 0.0 if m is None else sum(p.numel() for p in m.parameters()) / 1e6
    pre = trainer.pre
    return {"G": count(trainer.G), "D": count(trainer.D), "style_encoder": count(pre.style_encoder),
            "identity": count(pre.identity), "lpips": count(pre.lpips)}


def step_inputs(opts, batch: int, size: int, device: torch.device):
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
