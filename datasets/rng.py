"""Explicit, serialisable random state for everything the data pipeline draws.

Masks, exemplar choices and augmentations draw from a ``numpy.random.Generator`` that the caller
owns (never from global state), so a training run can store the generator's state in its
checkpoint and resume the exact same sequence. The state is a plain dict of str/int (PCG64's
128-bit integers included), which ``torch.save`` / ``torch.load(weights_only=True)`` and JSON
both round-trip.
"""
from __future__ import annotations

from typing import Union

import numpy as np

RngLike = Union[np.random.Generator, int, np.integer]


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
    import copy
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
