"""Seeded randomness of the training loop, and capture/restore of every RNG state.

Every random draw of iteration ``step`` comes from streams seeded by ``(seed, rank, step,
purpose)`` — masks, exemplar choice, z noise, flips/augmentation — and the global RNGs (Python,
NumPy, torch CPU and CUDA, which drive dropout, noise injection and the mixing cut) are re-seeded
from the same key at the start of each iteration. Iteration ``step`` therefore draws the same
numbers whether the run got there straight or after a resume, and a resume needs nothing but the
step. The checkpoint still records every global RNG state (``models.checkpoint``'s
``capture_rng_state``) and a resume restores it, so that the resumed process starts in the very
state the saving process was in.

The exemplar decision (self vs reversed batch) leaves out the rank, so every rank of a
multi-GPU step makes the same choice and the step means what it means on one GPU.
"""
from __future__ import annotations

import random

import numpy as np
import torch

# Purposes of the per-step streams (part of the seed key; never renumber).
GLOBAL, MASK, EXEMPLAR, NOISE, AUGMENT, DATA = range(6)
SKETCH = 6  # per-sample empty-sketch draws of a sketch fine-tune (training/sketch.py)


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
