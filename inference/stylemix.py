"""Exemplar style mixing through the any-size round trip (the paper's style-mixing results, Sec. 4):
one image completed with the exemplar codes of w slots i..j taken from exemplar B and every other
exemplar slot from exemplar A, as ``EXEGAN.style_mix(..., layers=range(i, j + 1))`` computes it,
pasted back at the original size (:mod:`inference.roundtrip`). scripts/style_mix.py runs it over a
grid of (i, j); the editor's style-mixing mode runs it for K seeds.

Slots are generator w+ slot numbers inside the exemplar range [start, start + n) (4..13 at 256 px);
code ``k`` of an exemplar drives slot ``start + k`` (docs/architecture.md, "Exemplar slots").
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from inference.errors import InferenceInputError
from inference.roundtrip import complete


def mix_codes(codes_a: torch.Tensor, codes_b: torch.Tensor, exemplar_start: int, first: int,
              last: int) -> torch.Tensor:
    """A's exemplar codes [B, n, style_dim] with w slots first..last (inclusive) taken from B: what
    ``EXEGAN.style_mix(..., layers=range(first, last + 1))`` feeds the generator."""
    codes = codes_a.clone()
    idx = [i - exemplar_start for i in range(first, last + 1)]
    codes[:, idx] = codes_b[:, idx]
    return codes


def mix(model, prep, ex_a: torch.Tensor, ex_b: torch.Tensor, first: int, last: int, *, seed: int,
        truncation: float, codes: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> np.ndarray:
    """Result [H, W, 3] uint8 with exemplar slots first..last (inclusive; empty when last < first)
    from B, the others from A; equal to ``EXEGAN.style_mix`` pasted back (the tests check it).
    ``codes`` = (codes of A, codes of B) to skip re-encoding the exemplars for every cell."""
    g = model.generator
    lo, hi = g.exemplar_start, g.exemplar_start + g.n_exemplar
    if not (last < first or lo <= first <= last < hi):
        raise InferenceInputError(f"slots {first}..{last} are outside the exemplar slots {lo}..{hi - 1}.")
    if codes is None:
        codes = (model.encode_exemplars(ex_a[None]), model.encode_exemplars(ex_b[None]))
    mixed = mix_codes(codes[0], codes[1], lo, first, last)
    return complete(model, prep, mixed, seed=seed, truncation=truncation)
