"""Hole masks: the paper's training masks, the evaluation masks, and mask files.

Every mask is a float tensor ``[1, H, W]`` with **1 = hole, 0 = known**, exactly binary. All
generators share one call signature::

    mask = generator(size, rng)              # size: int S or (H, W); rng: numpy Generator or seed
    mask = generator(size, rng, index=i)     # mask files: the i-th file (fixed evaluation lists)
    mask = generator(size, name="a/01.png")  # paired files: the mask of that image

and :func:`make_mask_generator` builds one from a config (``kind: free_form | center | large |
files | paired``). :class:`MaskSampler` draws a batch ``[B, 1, H, W]`` for the training loop
from a generator it owns, with a serialisable RNG state for resuming. This module is the
factory, the batch sampling and the tensor check; the generators live in
:mod:`datasets.mask_generators` (the drawn kinds and the base class) and
:mod:`datasets.mask_files` (the file kinds, reading a mask file, the hole-ratio buckets).

Kinds (hole ratio = fraction of hole pixels; ranges measured over 1000 masks, see
``docs/datasets.md``):

- ``free_form`` (alias ``mixed``): the 256 setting's training masks —
  1–4 free-form brush strokes plus 0–3 axis-aligned rectangles. Strokes follow the usual
  free-form generator: 4–12 vertices, each segment turning by ``2π/5 ± 2π/15`` (alternating
  direction), segment length ~ N(d/8, d/16) clipped to [0, d/4] with d the image diagonal,
  width U[12, 40] px, round joints. Rectangles have sides U[S/10, S/2.5]. All lengths are given
  at 256 px and scale with the image. Masks outside ``hole_range`` (default 5–60 %) are redrawn;
  the result has median ~26 %, 5th–95th percentile ~9–44 %.
- ``center``: a centred square of side S/2 (evaluation; ratio 25 %).
- ``large``: CoModGAN-style large masks for the 512 setting — up to 9 boxes of side
  < S/2 and up to 4 of side < S (each may hang half over the border), plus up to 19 brush strokes
  of 4–18 vertices and width U[12, 48] px at 512 (scaled with the image), randomly mirrored.
  Redrawn until the ratio is inside ``hole_range`` (default (0, 1]: CoModGAN's training
  setting); the result is heavy: median ~68 %, 5th–95th percentile ~31–90 %.
- ``files`` (alias ``irregular``): mask files such as the NVIDIA irregular mask test set,
  grouped by hole ratio into the buckets 0–10 %, 10–20 %, …, 50–60 % (:data:`BUCKETS`).
- ``paired``: one mask file per image, matched by file name (relative path without extension).

Mask files are read as grayscale, thresholded at half of their value range (8- or 16-bit),
centre-cropped to a square like the images, and resized with nearest neighbour. Which side of
the threshold is the hole is the explicit option ``hole_value``: ``1`` (default) = **white is
hole**, the NVIDIA irregular-mask convention; ``0`` = black is hole. A file that is not binary
(more than 25 % of its pixels in the middle half of the range) raises :class:`MaskError`.

DEVIATION: the authors draw one mask per iteration and share it across the batch; we draw one
per sample by default (``MaskSampler(per_sample=True)``); ``per_sample=False`` is theirs.
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence, Union

import numpy as np
import torch

from common.seeding import as_rng, rng_from_state, rng_state
from datasets.errors import MaskError
from datasets.mask_files import MaskFiles, PairedMasks
from datasets.mask_generators import (CenterMask, FreeFormMasks, LargeMasks, MaskGenerator, SizeLike,
                                      _hw)


def validate_mask(mask: torch.Tensor, size: Optional[SizeLike] = None,
                  batch: Optional[int] = None, what: str = "mask") -> torch.Tensor:
    """Check a mask tensor ``[1, H, W]`` or ``[B, 1, H, W]``: floating, exactly 0/1, right size.

    Raises :class:`MaskError` with one sentence naming ``what`` otherwise; returns ``mask``.
    """
    if not isinstance(mask, torch.Tensor):
        raise MaskError(f"{what} must be a torch tensor, got {type(mask).__name__}.")
    if mask.dim() not in (3, 4) or mask.shape[-3] != 1:
        raise MaskError(f"{what} must have shape [1, H, W] or [B, 1, H, W], "
                        f"got {list(mask.shape)}.")
    if not mask.is_floating_point():
        raise MaskError(f"{what} must be a float tensor (1 = hole, 0 = known), got {mask.dtype}.")
    if size is not None and tuple(mask.shape[-2:]) != _hw(size):
        raise MaskError(f"{what} is {mask.shape[-2]}x{mask.shape[-1]} but the images are "
                        f"{_hw(size)[0]}x{_hw(size)[1]}; give masks of the image size.")
    if batch is not None and (mask.dim() != 4 or mask.shape[0] != batch):
        raise MaskError(f"{what} has shape {list(mask.shape)}, expected a batch of {batch}.")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise MaskError(f"{what} must be binary (0 = known, 1 = hole); it holds values in "
                        f"[{mask.min().item():.3g}, {mask.max().item():.3g}].")
    return mask



# ----------------------------------------------------------------------------------------------
# Factory and batch sampling

_KINDS = {"free_form": FreeFormMasks, "mixed": FreeFormMasks, "center": CenterMask,
          "large": LargeMasks, "files": MaskFiles, "irregular": MaskFiles,
          "paired": PairedMasks}
MASK_GENERATORS = _KINDS  # kind name -> generator class ("mixed": the old name of free_form)


def make_mask_generator(cfg) -> MaskGenerator:
    """Build a generator from a kind name, a dict ``{'kind': ..., **options}`` or a generator.

    Kinds: ``free_form`` (alias ``mixed``), ``center``, ``large``, ``files`` (alias
    ``irregular``; needs ``root``), ``paired`` (needs ``root``). Other keys are passed to the
    class (e.g. ``hole_range``, ``hole_value``, ``bucket``).
    """
    if isinstance(cfg, MaskGenerator):
        return cfg
    if isinstance(cfg, str):
        cfg = {"kind": cfg}
    cfg = dict(cfg)
    kind = cfg.pop("kind", None)
    if kind not in _KINDS:
        raise ValueError(f"mask kind must be one of {sorted(_KINDS)}, got {kind!r}")
    if kind == "mixed":
        warnings.warn("mask kind 'mixed' is the old name of 'free_form' (the same masks); write "
                      "'free_form'.", FutureWarning, stacklevel=2)
    for key in ("per_sample",):  # sampler options, not generator options
        cfg.pop(key, None)
    return _KINDS[kind](**cfg)


def batch_masks(generator: MaskGenerator, batch_size: int, size: SizeLike,
                rng: Optional[np.random.Generator] = None, *, per_sample: bool = True,
                indices: Optional[Sequence[int]] = None,
                names: Optional[Sequence[str]] = None) -> torch.Tensor:
    """Masks for a batch, float ``[B, 1, H, W]``.

    ``per_sample=False`` draws one mask and repeats it (the authors' behaviour). ``indices`` /
    ``names`` pass each sample's file index / image name to file-based generators.
    """
    if per_sample or indices is not None or names is not None:
        masks = [generator(size, rng,
                           index=None if indices is None else indices[b],
                           name=None if names is None else names[b])
                 for b in range(batch_size)]
        return torch.stack(masks)
    return generator(size, rng)[None].expand(batch_size, -1, -1, -1).contiguous()


class MaskSampler:
    """Training-loop helper: ``sampler(batch_size) -> [B, 1, S, S]`` from its own RNG.

    ``state_dict()`` / ``load_state_dict()`` hold the RNG state (plain ints/strings, fine for
    ``torch.save`` + ``weights_only=True``), so a resumed run draws the same masks as an
    uninterrupted one. In multi-process training give each rank its own seed, e.g.
    ``seed = base_seed * 1000 + rank`` or :func:`common.seeding.derive_rng`.
    """

    def __init__(self, generator, size: int, seed: Union[int, np.random.Generator] = 0,
                 per_sample: bool = True):
        self.generator = make_mask_generator(generator)
        self.size = size
        self.per_sample = per_sample
        self.rng = as_rng(seed, "MaskSampler")

    def __call__(self, batch_size: int) -> torch.Tensor:
        return batch_masks(self.generator, batch_size, self.size, self.rng,
                           per_sample=self.per_sample)

    def state_dict(self) -> dict:
        return {"rng": rng_state(self.rng)}

    def load_state_dict(self, state: dict) -> None:
        self.rng = rng_from_state(state["rng"])
