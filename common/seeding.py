"""Every seed and random stream of the repository, in one module.

**Data pipeline** (masks, exemplar choices, augmentations): draws come from a
``numpy.random.Generator`` that the caller owns (never from global state), so a training run can
store the generator's state in its checkpoint and resume the exact same sequence. The state is a
plain dict of str/int (PCG64's 128-bit integers included), which ``torch.save`` /
``torch.load(weights_only=True)`` and JSON both round-trip (:func:`rng_state`,
:func:`rng_from_state`).

**Training loop**: every random draw of iteration ``step`` comes from streams seeded by ``(seed,
rank, step, purpose)`` — masks, exemplar choice, z noise, flips/augmentation — and the global
RNGs (Python, NumPy, torch CPU and CUDA, which drive dropout, noise injection and the mixing
cut) are re-seeded from the same key at the start of each iteration (:func:`seed_globals`).
Iteration ``step`` therefore draws the same numbers whether the run got there straight or after a
resume, and a resume needs nothing but the step. The checkpoint still records every global RNG
state (``models.checkpoint``'s ``capture_rng_state``) and a resume restores it, so that the
resumed process starts in the very state the saving process was in. The exemplar decision (self
vs reversed batch) leaves out the rank, so every rank of a multi-GPU step makes the same choice
and the step means what it means on one GPU.

**Evaluation protocol** and the random stand-in networks derive their seeds with the same
:func:`derive_seed`, each with its own stream key (``*_KEY`` below, listed in :data:`SEED_KEYS`).
"""
from __future__ import annotations

import copy
import random
from typing import Union

import numpy as np
import torch

RngLike = Union[np.random.Generator, int, np.integer]

# Purposes of the training loop's per-step streams (part of the seed key; never renumber).
GLOBAL, MASK, EXEMPLAR, NOISE, AUGMENT, DATA = range(6)
SKETCH = 6  # per-sample empty-sketch draws of a sketch fine-tune (training/sketch.py)

# Stream keys: the second key of ``derive_seed(seed, KEY, ...)`` / ``derive_rng(seed, KEY, ...)``,
# one per purpose (values distinct, tests/test_seeding.py; never renumber: a new value changes
# the numbers drawn).
EVAL_NOISE_KEY = 0x5A             # evaluation: z and noise maps of batch k (metrics/eval_loop.py)
EVAL_MASK_KEY = 0x4D              # evaluation: generated mask of image i (datasets/protocols.py)
EVAL_DEAL_KEY = 0x4445            # evaluation: dealing irregular mask files per bucket (same)
STANDIN_STYLE_ENCODER_KEY = 0x5E  # random stand-in pSp style encoder (metrics/standins.py)
STANDIN_IDENTITY_KEY = 0x1D       # random stand-in ArcFace (metrics/standins.py)
STANDIN_INCEPTION_KEY = 0x1C      # random stand-in FID Inception (metrics/standins.py)
STANDIN_LPIPS_KEY = 0x1F          # random stand-in LPIPS VGG16 trunk (metrics/standins.py)
STANDIN_TRAINING_KEY = 0x5F       # training the demo's stand-in style encoder (training/pretrained.py)
INITIAL_WEIGHTS_KEY = 0x6E        # the networks' initial weights of a training run (training/trainer.py)
SAMPLE_GRID_KEY = 0x53            # the sample grids' masks and z (training/in_loop_eval.py)

#: Every stream key by name (the uniqueness test reads this).
SEED_KEYS = {name: value for name, value in dict(globals()).items()
             if name.endswith("_KEY") and isinstance(value, int)}


# ------------------------------------------------------------------------- seeds and streams
def derive_seed(*keys: int) -> int:
    """A 63-bit seed from a tuple of non-negative ints (NumPy SeedSequence hashing)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31 | int(state[1]) >> 1) & ((1 << 63) - 1)


def generator(*keys: int) -> torch.Generator:
    """A CPU torch.Generator seeded from `keys` (draw on CPU, then move: same numbers on any device)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(*keys))
    return g


def seed_globals(*keys: int) -> None:
    """Re-seed Python, NumPy and torch (CPU + all CUDA devices) from `keys`."""
    s = derive_seed(*keys)
    random.seed(s)
    np.random.seed(s % (2 ** 32))
    torch.manual_seed(s)


# ------------------------------------------------------- numpy generators of the data pipeline
def as_rng(rng: RngLike, what: str = "this draw") -> np.random.Generator:
    """A numpy Generator from a Generator (returned as is) or an integer seed."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"{what} needs a seed (int) or a numpy.random.Generator, got {rng!r}")


def derive_rng(seed: int, *keys: int) -> np.random.Generator:
    """Independent stream for ``(seed, *keys)``, e.g. ``derive_rng(seed, rank)`` per process."""
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


def rng_state(rng: np.random.Generator) -> dict:
    """Serialisable snapshot of ``rng`` (a copy; later draws do not change it)."""
    return copy.deepcopy(rng.bit_generator.state)


def set_rng_state(rng: np.random.Generator, state: dict) -> np.random.Generator:
    """Restore a snapshot from :func:`rng_state` into ``rng`` (in place); returns ``rng``."""
    if state.get("bit_generator") != type(rng.bit_generator).__name__:
        raise ValueError(f"RNG state is for {state.get('bit_generator')!r}, "
                         f"not {type(rng.bit_generator).__name__!r}")
    rng.bit_generator.state = state
    return rng


def rng_from_state(state: dict) -> np.random.Generator:
    """A new Generator continuing from a snapshot taken with :func:`rng_state`."""
    bit_gen = getattr(np.random, state["bit_generator"])()
    bit_gen.state = state
    return np.random.Generator(bit_gen)
