"""Reading the inputs of inference: photos, masks and sketches at their own resolution, exemplars at
the model size, and the warnings about masks that are valid but implausible.

* **photo** -> decoded 8-bit RGB at its own size, EXIF orientation applied (the image as a viewer
  shows it), alpha composited on white (:func:`datasets.imaging.open_rgb`);
* **mask / sketch** -> bool at the photo's size; a pixel is on when it is brighter than half the
  value range (``white_is_on=False`` flips that); more than 25 % mid-grey pixels is an error
  (:func:`datasets.mask_files.read_mask_file`);
* **exemplar** -> centre-cropped to a square and resized to S x S with Lanczos, as the datasets read
  faces (:func:`read_exemplar`); an unaligned exemplar goes through :mod:`inference.photo` instead.
"""
from __future__ import annotations

import sys
from typing import List

import numpy as np
import torch

from datasets.imaging import load_image, open_rgb, pil_to_tensor
from datasets.mask_files import read_mask_file
from inference.errors import InferenceInputError


def read_rgb(path: str) -> np.ndarray:
    """Decoded 8-bit RGB [H, W, 3] (EXIF orientation applied, alpha composited on white)."""
    return np.asarray(open_rgb(path), dtype=np.uint8).copy()


def read_binary(path: str, shape: tuple, what: str, option: str, white_is_on: bool = True) -> np.ndarray:
    """A black-and-white file as bool [H, W] (True = white, or black with ``white_is_on=False``),
    thresholded at half of its value range; it must have the image's size ``shape``."""
    on = read_mask_file(path, hole_value=1 if white_is_on else 0)
    if on.shape != tuple(shape):
        raise InferenceInputError(f"{option} {path} is {on.shape[1]}x{on.shape[0]} but its image is "
                                  f"{shape[1]}x{shape[0]}; give {article(what)} {what} of the image's "
                                  f"size (width x height).")
    return on


def article(word: str) -> str:
    """'a' or 'an' before ``word`` (by its first letter: an exemplar, a mask)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


#: Masks whose hole covers more than this fraction of the image get a warning.
LARGE_HOLE = 0.70


class MaskWarning(str):
    """The sentence about a valid but implausible mask, with its ``kind`` ("inverted" or
    "large_hole") so that callers choose by kind, never by the text."""

    kind: str

    def __new__(cls, kind: str, message: str) -> "MaskWarning":
        self = super().__new__(cls, message)
        self.kind = kind
        return self


def mask_warnings(hole: np.ndarray, hole_colour: str = "white",
                  flip: str = "pass --mask-hole {other}") -> List[MaskWarning]:
    """Warnings about a mask that is valid but implausible (empty list when it looks fine):

    * ``large_hole``: the hole covers more than ``LARGE_HOLE`` of the image (little is left to go on);
    * ``inverted``: the hole covers most of the image and runs round its whole border while the
      known pixels form an island inside - what a hole drawn in the other colour gives.

    ``hole_colour`` is the colour the mask was read with; ``flip`` says how to read it the other
    way (``{other}`` is the other colour): the command line's flag, or the editor's checkbox.
    """
    frac = float(hole.mean())
    out = []
    border = np.concatenate([hole[0], hole[-1], hole[1:-1, 0], hole[1:-1, -1]])
    if frac > 0.5 and float(border.mean()) > 0.95:
        other = "black" if hole_colour == "white" else "white"
        out.append(MaskWarning("inverted", f"the mask looks inverted: the hole covers {100 * frac:.0f} % of the "
                                           f"image and surrounds the known pixels; if {other} marks the hole in "
                                           f"your masks, {flip.format(other=other)}."))
    elif frac > LARGE_HOLE:
        out.append(MaskWarning("large_hole", f"the hole covers {100 * frac:.0f} % of the image (more than "
                                             f"{100 * LARGE_HOLE:.0f} %); with so little of the face known "
                                             f"the results will be poor."))
    return out


def warn(message: str) -> None:
    """One ``warning: ...`` line on stderr (the run goes on)."""
    print(f"warning: {message}", file=sys.stderr)


def read_exemplar(path: str, size: int) -> torch.Tensor:
    """Exemplar [3, S, S] in [-1, 1]: centre crop + Lanczos, as the datasets read images."""
    return pil_to_tensor(load_image(path, size))


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> [H, W, 3] uint8 (rounded)."""
    a = ((t.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return a.permute(1, 2, 0).numpy()

