"""The any-size round trip: original image -> model-size input -> completed model-size output ->
result at the original size in which only hole pixels change (:func:`prepare`, :func:`paste_back`),
and the completions through it (:func:`complete`, :func:`complete_samples`, :func:`inpaint_one`).
Used by scripts/inpaint.py, scripts/style_mix.py (:mod:`inference.stylemix`) and the editor;
:mod:`inference.photo` does the same through an aligned face crop.

Resizing rules (the model runs at S x S):

* **image** -> hole pixels set to the known pixels' mean colour (below), padded to a square (the
  short side is extended on both sides by repeating its edge pixels; the padding counts as known),
  then resized to S x S with Pillow's **Lanczos** filter (the filter the datasets use); not
  resampled when already S x S.
* **mask** -> padded with "known", then reduced to S x S by **any-pooling**: a model pixel is a
  hole when any original pixel in its footprint is (``adaptive_max_pool2d``), so the model's hole
  covers every original hole pixel.
* **prediction** -> the completed S x S image (8-bit) is resized back to the padded square with
  Lanczos, the padding is cropped, and it is pasted **only where the original-resolution mask is a
  hole**: every known pixel of the output is the input's decoded 8-bit RGB value, bit for bit.

Before the image is resized its hole pixels are set to the mean colour of its known pixels: the
resize filter reaches about three model pixels around the hole, and what the hole held (an object
to remove, a scribble) should not leak into the known pixels the model reads there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from datasets.imaging import pil_to_tensor
from inference.errors import InferenceInputError
from inference.io import to_uint8

#: Resampling filter for images and predictions.
RESIZE_FILTER = Image.LANCZOS


@dataclass
class Prepared:
    """One image on its way to the model and back."""
    original: np.ndarray          # [H, W, 3] uint8, as decoded
    hole: np.ndarray              # [H, W] bool at the original resolution (True = hole)
    top: int                      # padding added above / left to make a square of side `side`
    left: int
    side: int
    image: torch.Tensor           # [3, S, S] in [-1, 1]
    mask: torch.Tensor            # [1, S, S] float, 1 = hole

    @property
    def size(self) -> int:
        return int(self.image.shape[-1])

    def paste(self, completed: torch.Tensor) -> np.ndarray:
        """The result at the original size (:func:`paste_back`)."""
        return paste_back(self, completed)


def _pad_square(a: np.ndarray, side: int, top: int, left: int, mode: str) -> np.ndarray:
    h, w = a.shape[:2]
    pads = [(top, side - h - top), (left, side - w - left)] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, pads, mode=mode) if mode == "edge" else np.pad(a, pads, mode="constant")


def any_pool(on: np.ndarray, size: int) -> torch.Tensor:
    """bool [N, N] -> float [1, S, S]: 1 where any pixel of the footprint is on."""
    t = torch.from_numpy(on.astype(np.float32))[None, None]
    if t.shape[-1] != size:
        t = F.adaptive_max_pool2d(t, size)
    return t[0]


def mean_colour(rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Mean colour [3] uint8 of the known pixels (mid grey when every pixel is a hole)."""
    if hole.all():
        return np.full(3, 128, np.uint8)
    return np.round(rgb[~hole].reshape(-1, 3).mean(0)).astype(np.uint8)


def prepare(original: np.ndarray, hole: np.ndarray, size: int) -> Prepared:
    """Model-size input for an image of any size (see the module docstring)."""
    h, w = hole.shape
    if not hole.any():
        raise InferenceInputError("the mask has no hole pixels (nothing to fill); white marks the hole "
                                  "(use --mask-hole black for black holes).")
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    filled = original.copy()
    filled[hole] = mean_colour(original, hole)
    square = _pad_square(filled, side, top, left, "edge")
    if side != size:
        square = np.asarray(Image.fromarray(square).resize((size, size), RESIZE_FILTER))
    image = pil_to_tensor(Image.fromarray(square))
    mask = any_pool(_pad_square(hole, side, top, left, "constant"), size)
    return Prepared(original, hole, top, left, side, image, mask)


def model_sketch(prep: Prepared, strokes: np.ndarray) -> torch.Tensor:
    """User strokes (bool [H, W], original resolution) -> [1, S, S] in {0, 1}: restricted to the
    hole, padded like the image and any-pooled, so a 1-pixel stroke survives the downscale."""
    on = strokes & prep.hole
    return any_pool(_pad_square(on, prep.side, prep.top, prep.left, "constant"), prep.size)



def paste_back(prep: Prepared, completed: torch.Tensor) -> np.ndarray:
    """Completed model-size image [3, S, S] -> result [H, W, 3] uint8 at the original size whose
    known pixels are ``prep.original``'s exactly."""
    up = to_uint8(completed)
    if prep.side != prep.size:
        up = np.asarray(Image.fromarray(up).resize((prep.side, prep.side), RESIZE_FILTER))
    h, w = prep.hole.shape
    up = up[prep.top:prep.top + h, prep.left:prep.left + w]
    return np.where(prep.hole[..., None], up, prep.original)


def with_hole(original: np.ndarray, hole: np.ndarray, fill=(255, 255, 255)) -> np.ndarray:
    """The input as the model sees it: hole pixels painted ``fill`` (for the sheets)."""
    out = original.copy()
    out[hole] = fill
    return out


def complete(model, prep, codes: torch.Tensor, *, seed: int, truncation: float,
             sketch: Optional[torch.Tensor] = None) -> np.ndarray:
    """One result [H, W, 3] uint8 at the original size: ``model.complete`` on the model-size input
    with exemplar ``codes`` [1, n, style_dim] (from ``model.encode_exemplars``, computed once per
    exemplar rather than once per sample as ``inpaint`` / ``style_mix`` would), z and noise drawn
    from ``seed``; then ``prep.paste``. ``prep`` is a :class:`Prepared` (the any-size round trip) or
    an :class:`inference.photo.AlignedPhoto` (the round trip through an aligned face crop): both
    carry ``image`` [3, S, S], ``mask`` [1, S, S] and ``paste``. ``sketch`` [1, S, S] needs a
    SketchEXEGAN."""
    dev = model.device
    kw = {} if sketch is None else {"sketch": sketch[None].to(dev)}
    out = model.complete(prep.image[None].to(dev), prep.mask[None].to(dev), codes.to(dev),
                         seed=seed, truncation=truncation, **kw)[0]
    return prep.paste(out)


def complete_samples(model, prep, codes: torch.Tensor, *, seeds: Sequence[int], truncation: float,
                     sketch: Optional[torch.Tensor] = None) -> List[np.ndarray]:
    """:func:`complete` for each seed of ``seeds`` (K results of one input); a model with
    ``complete_many`` (the onnxruntime model of :mod:`inference.runtime`) runs the K in one batch,
    with the same results as K single runs."""
    if not hasattr(model, "complete_many"):
        return [complete(model, prep, codes, seed=s, truncation=truncation, sketch=sketch) for s in seeds]
    kw = {} if sketch is None else {"sketch": sketch[None]}
    outs = model.complete_many(prep.image[None], prep.mask[None], codes, seeds=list(seeds),
                               truncation=truncation, **kw)
    return [prep.paste(out[0]) for out in outs]


def inpaint_one(model, prep, exemplar: torch.Tensor, *, samples: int, seed: int, truncation: float,
                sketch: Optional[torch.Tensor] = None) -> List[np.ndarray]:
    """K results [H, W, 3] uint8 at the original size; sample k is drawn with seed + k. ``prep`` is a
    :class:`Prepared` or, with --align, an :class:`inference.photo.AlignedPhoto`; ``exemplar``
    [3, S, S] in [-1, 1].

    Equal to ``model.inpaint(image, mask, exemplar, seed=seed + k)`` pasted back (the tests check
    it); the exemplar is encoded once for all K samples (and onnxruntime runs the K in one batch).
    What scripts/inpaint.py and the editor's plain mode run.
    """
    codes = model.encode_exemplars(exemplar[None])
    return complete_samples(model, prep, codes, seeds=[seed + k for k in range(samples)],
                            truncation=truncation, sketch=sketch)
