"""Checking a resolved training config: numeric ranges (``RANGES``), enumerations
(``CHOICES``), cross-field rules, and settings the chosen mode would silently ignore.

``validate`` runs on every config ``training.config.load_config`` resolves (``--dry-run``
included); it reads the config by attribute and imports nothing of the schema.
"""
from __future__ import annotations

import inspect
import math
import os

from common.errors import UserError
from datasets.augment import POLICIES
from datasets.exemplars import EVAL_MODES
from datasets.masks import MASK_GENERATORS, make_mask_generator
from datasets.protocols import MASK_KINDS
from metrics.evaluator import ALL_METRICS
from models.stylegan2 import MODCONV_IMPLS

from .errors import ConfigError


# --------------------------------------------------------------------------------------------
# Ranges of the numeric keys (one place; validate() checks them all, --dry-run included)
# --------------------------------------------------------------------------------------------

# key -> (low, high, low_open, high_open, what the value means); None = unbounded on that side.
# tests/training/test_config.py checks that every int / float key of the schema is listed here.
RANGES: dict = {
    "model.size": (8, None, False, False, "the image side in pixels (a power of two)"),
    "model.style_dim": (1, None, False, False, ""),
    "model.n_mlp": (1, None, False, False, "mapping-network layers"),
    "model.channel_multiplier": (0, None, True, False, ""),
    "model.channel_max": (1, None, False, False, ""),
    "model.lr_mlp": (0, None, True, False, "the mapping network's learning-rate multiplier"),
    "data.num_workers": (0, None, False, False, "0 = load in the training process"),
    "data.demo_train": (1, None, False, False, ""),
    "data.demo_test": (0, None, False, False, ""),
    "data.demo_seed": (0, None, False, False, ""),
    "exemplar.self_prob": (0, 1, False, False, "a probability"),
    "pretrained.standin_encoder_steps": (0, None, False, False, "0 = the random stand-in"),
    "loss.lambda_adv": (0, None, False, False, ""),
    "loss.lambda_id": (0, None, False, False, ""),
    "loss.lambda_lpips": (0, None, False, False, ""),
    "loss.lambda_attr": (0, None, False, False, ""),
    "loss.r1_gamma": (0, None, False, False, "0 = no R1"),
    "loss.d_reg_every": (1, None, False, False, ""),
    "loss.path_weight": (0, None, False, False, "0 = no path-length regularization"),
    "loss.g_reg_every": (1, None, False, False, ""),
    "loss.path_decay": (0, 1, False, False, "a running-mean decay"),
    "loss.path_batch_shrink": (1, None, False, False, ""),
    "optim.lr": (0, None, True, False, "Adam's learning rate"),
    "optim.beta1": (0, 1, False, True, "an Adam beta"),
    "optim.beta2": (0, 1, False, True, "an Adam beta"),
    "optim.d_lr": (0, None, True, False, "D's learning rate, null = optim.lr"),
    "train.batch": (1, None, False, False, "the per-process batch"),
    "train.iters": (1, None, False, False, "the total number of iterations"),
    "train.seed": (0, None, False, False, ""),
    "train.mixing": (0, 1, False, False, "a probability"),
    "train.ema_kimg": (0, None, False, False, "0 = G_ema follows G without averaging"),
    "train.ema_batch": (1, None, False, False, ""),
    "train.threads": (0, None, False, False, "0 = PyTorch's default"),
    "train.ckpt_every": (0, None, False, False, "0 = only at the end"),
    "train.keep_last": (1, None, False, False, ""),
    "eval.every": (0, None, False, False, "0 = never"),
    "eval.n_images": (1, None, False, False, ""),
    "eval.batch": (1, None, False, False, ""),
    "eval.seed": (0, None, False, False, ""),
    "log.log_every": (0, None, False, False, "0 = never"),
    "log.sample_every": (0, None, False, False, "0 = never"),
    "log.n_samples": (1, None, False, False, ""),
    "dist.timeout_min": (1, None, False, False, "minutes"),
    "sketch.edge_threshold": (0, None, False, False, ""),
    "sketch.drop_prob": (0, 1, False, False, "a probability"),
}


def _range_text(low, high, low_open, high_open) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    return f"{'<' if high_open else '<='} {high}"


def check_ranges(cfg) -> None:
    """Every key of RANGES within its range, else one sentence naming the key."""
    for key, (low, high, low_open, high_open, what) in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is None:
            continue
        bad = (not math.isfinite(value)
               or (low is not None and (value <= low if low_open else value < low))
               or (high is not None and (value >= high if high_open else value > high)))
        if bad:
            note = f" ({what})" if what else ""
            raise ConfigError(f"{key} must be {_range_text(low, high, low_open, high_open)}{note}, "
                              f"got {value}.")


# --------------------------------------------------------------------------------------------
# Enumerations (one place; validate() checks them all, --dry-run included)
# --------------------------------------------------------------------------------------------

def _mask_kinds() -> tuple:
    # "mixed", the old name of free_form, is renamed by training.config.from_dict before this.
    return tuple(k for k in MASK_GENERATORS if k != "mixed")


def _eval_masks() -> tuple:
    return MASK_KINDS + ("files",)  # the alias of irregular that make_mask_protocol reads


def _eval_exemplars() -> tuple:
    return EVAL_MODES


# key -> the valid values (a tuple, or a function giving them from the code that reads the key).
# tests/training/test_config.py checks that the errors list them.
CHOICES: dict = {
    "data.kind": ("folder", "demo"),
    "mask.kind": _mask_kinds,
    "pretrained.identity_kind": ("resnet101", "ir_se50"),
    "pretrained.standin_lpips": ("random_vgg", "pixel_l1"),
    "pretrained.standin_size": ("tiny", "full"),
    "train.amp": ("off", "bf16"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.modconv": MODCONV_IMPLS,
    "eval.mask": _eval_masks,
    "eval.exemplar": _eval_exemplars,
    "dist.backend": ("auto", "nccl", "gloo"),
}


def choices_of(key: str) -> tuple:
    valid = CHOICES[key]
    return tuple(valid() if callable(valid) else valid)


def check_choices(cfg) -> None:
    """Every key of CHOICES one of its values, else one sentence listing them."""
    for key in CHOICES:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        valid = choices_of(key)
        if value not in valid:
            raise ConfigError(f"{key} must be one of {', '.join(valid)}, got {value!r}.")


def check_mask_options(cfg) -> None:
    """mask.options are the keyword arguments of mask.kind's generator: build it once, so that a
    misspelt or out-of-range option fails now and not at the first step."""
    cls = MASK_GENERATORS[cfg.mask.kind]
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(k for k in cfg.mask.options if k not in params and k != "per_sample")
    if unknown:
        raise ConfigError(f"mask.options has unknown key(s) {', '.join(unknown)} for mask.kind "
                          f"{cfg.mask.kind}; its options are {', '.join(params)}.")
    try:
        make_mask_generator(dict(cfg.mask.options, kind=cfg.mask.kind))
    except UserError as e:
        raise ConfigError(f"mask.options: {str(e).rstrip('.')}.") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"mask.options for mask.kind {cfg.mask.kind} are not usable: "
                          f"{str(e).rstrip('.')}; see docs/datasets.md for each kind's options.") from None


def validate(cfg) -> None:
    """Cross-field checks that a user can fix."""
    check_ranges(cfg)
    check_choices(cfg)
    s = cfg.model.size
    if s < 8 or s & (s - 1):
        raise ConfigError(f"model.size must be a power of two >= 8, got {s}.")
    if cfg.train.diffaug:
        bad = [p.strip() for p in cfg.train.diffaug_policy.split(",") if p.strip() not in POLICIES]
        if bad:
            raise ConfigError(f"train.diffaug_policy has unknown parts {bad}; use a comma-separated "
                              f"subset of {', '.join(POLICIES)}.")
    if cfg.eval.every > 0:
        bad = [m for m in cfg.eval.metrics if m not in ALL_METRICS]
        if bad:
            raise ConfigError(f"eval.metrics has unknown metrics {bad}; choose from {', '.join(ALL_METRICS)}.")
        known = set(cfg.eval.metrics) | {"l1_hole", "psnr_hole"} | (
            {"u_ids", "p_ids"} if "ids" in cfg.eval.metrics else set())
        if cfg.eval.best_metric not in known:
            raise ConfigError(f"eval.best_metric '{cfg.eval.best_metric}' is not computed; pick one of "
                              f"{', '.join(sorted(known))} or add it to eval.metrics.")
    slots = cfg.model.exemplar_slots
    n_latent = 2 * int(math.log2(s)) - 2
    if slots is not None and not (len(slots) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                          for v in slots) and slots[0] >= 0 and slots[1] >= 1
                                  and slots[0] + slots[1] <= n_latent):
        raise ConfigError(f"model.exemplar_slots must be null or [start, n] with start >= 0, n >= 1 and "
                          f"start + n <= {n_latent} (the w slots at model.size {s}), got {slots}.")
    check_mask_options(cfg)
    e = cfg.eval
    kind = {"files": "irregular"}.get(e.mask, e.mask)
    if kind in ("irregular", "paired") and not e.mask_dir:
        raise ConfigError(f"eval.mask {e.mask} reads mask files: set eval.mask_dir to their folder, or "
                          f"choose a generated protocol (center, free_form, large).")
    if e.exemplar == "folder" and not e.exemplar_folder:
        raise ConfigError("eval.exemplar folder reads exemplar images: set eval.exemplar_folder to "
                          "their folder, or use eval.exemplar reverse or self.")
    if cfg.pretrained.standin_lpips != "random_vgg" and not cfg.pretrained.allow_random:
        raise ConfigError("pretrained.standin_lpips chooses a stand-in of the LPIPS network, used only "
                          "with pretrained.allow_random=true; drop it or set allow_random.")
    if cfg.pretrained.standin_size != "tiny" and not cfg.pretrained.allow_random:
        raise ConfigError("pretrained.standin_size chooses the size of the random stand-ins, used only "
                          "with pretrained.allow_random=true; drop it or set allow_random.")
    if cfg.pretrained.standin_encoder_steps > 0 and not (cfg.pretrained.allow_random
                                                          and cfg.data.kind == "demo"):
        raise ConfigError(f"pretrained.standin_encoder_steps = {cfg.pretrained.standin_encoder_steps} "
                          "trains the stand-in style encoder on the demo faces, so it needs "
                          "pretrained.allow_random=true and data.kind=demo; set it to 0 otherwise.")
    check_ignored(cfg)


# --------------------------------------------------------------------------------------------
# Settings the chosen mode does not read are an error, not silence
# --------------------------------------------------------------------------------------------

def check_ignored(cfg) -> None:
    """A key set to something other than its default that the chosen mode never reads."""
    d, e, dflt = cfg.data, cfg.eval, type(cfg.data)()
    if d.kind == "demo":
        for key, used in (("train", os.path.join(d.demo_root, "train")),
                          ("test", os.path.join(d.demo_root, "test"))):
            value = getattr(d, key)
            if value != getattr(dflt, key) and os.path.normpath(str(value)) != os.path.normpath(used):
                raise ConfigError(
                    f"data.{key} = {value!r} is not read when data.kind is demo (the demo faces in "
                    f"{used} are); set data.kind=folder to use {value!r} (an image folder or an LMDB "
                    f"pack), or drop data.{key}.")
    else:
        for key in ("demo_root", "demo_train", "demo_test", "demo_seed"):
            if getattr(d, key) != getattr(dflt, key):
                raise ConfigError(f"data.{key} = {getattr(d, key)!r} is only read when data.kind is demo "
                                  f"(it is {d.kind!r}); drop it or set data.kind=demo.")
    if e.mask_dir is not None and e.mask not in ("irregular", "paired"):
        raise ConfigError(f"eval.mask_dir = {e.mask_dir!r} is only read by the irregular and paired mask "
                          f"protocols (eval.mask is {e.mask!r}); drop it or set eval.mask.")
    if e.exemplar_folder is not None and e.exemplar != "folder":
        raise ConfigError(f"eval.exemplar_folder = {e.exemplar_folder!r} is only read when eval.exemplar "
                          f"is folder (it is {e.exemplar!r}); drop it or set eval.exemplar=folder.")
