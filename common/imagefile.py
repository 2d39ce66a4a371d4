"""Decoding image and mask files with Pillow and NumPy only (no torch): the one code path that
turns a file into 8-bit RGB or a black-and-white mask, shared by the datasets, the inference
library and the torch-free ONNX command line (scripts/inpaint_onnx.py).

* :func:`to_rgb`: any Pillow mode to 8-bit RGB - grayscale replicated; 16-bit grayscale scaled by
  ``round(v / 257)``; 32-bit ``I`` read as 16-bit data, ``F`` as [0, 1] when its maximum is <= 1
  and as [0, 255] otherwise; palettes expanded; anything with alpha (or a transparency key)
  composited onto a white background; other modes through ``convert('RGB')``.
* :func:`load_rgb`: decode fully, apply the EXIF orientation (the image as displayed), to RGB.
* :func:`mask_bits`: a mask file read as grayscale and thresholded at half its value range, with
  the fraction of mid-grey pixels (between a quarter and three quarters of the range) that a
  caller refuses above a limit.
"""
from __future__ import annotations

import struct
from typing import Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps

#: Colour that transparent pixels are composited onto.
ALPHA_BACKGROUND: Tuple[int, int, int] = (255, 255, 255)

#: Pillow raises these for unreadable, truncated or malformed files.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
                 IndexError, TypeError, KeyError, struct.error)


def _composite(img: Image.Image, background: Sequence[int]) -> Image.Image:
    rgba = img.convert("RGBA")
    base = Image.new("RGBA", rgba.size, tuple(background) + (255,))
    return Image.alpha_composite(base, rgba).convert("RGB")


def to_rgb(img: Image.Image, background: Sequence[int] = ALPHA_BACKGROUND) -> Image.Image:
    """A decoded Pillow image of any mode as 8-bit RGB (see the module docstring)."""
    mode = img.mode
    if mode == "RGB":  # (a transparency key on RGB is ignored, as it always was here)
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(img)
        if mode == "F":
            a = a.astype(np.float64)
            scale = 255.0 if a.size and np.nanmax(a) <= 1.0 else 1.0
            a8 = np.clip(np.round(np.nan_to_num(a) * scale), 0, 255)
        else:
            a8 = np.round(np.clip(a.astype(np.float64), 0, 65535) / 257.0)
        return Image.fromarray(a8.astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    elif mode in ("L", "1") and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return _composite(img, background)
    return img.convert("RGB")


def load_rgb(path, background: Sequence[int] = ALPHA_BACKGROUND) -> Image.Image:
    """Decode ``path`` (a path or file object) fully, apply its EXIF orientation, as 8-bit RGB.
    Raises one of :data:`DECODE_ERRORS` for a file Pillow cannot decode."""
    with Image.open(path) as img:
        img.load()
        return to_rgb(ImageOps.exif_transpose(img), background)


def mask_bits(path) -> Tuple[np.ndarray, float]:
    """(bright, grey) of a mask file: bool [H, W], True where brighter than half the value range,
    and the fraction of mid-grey pixels. 8-bit files are compared as integers (v / 255 > 0.5 is
    v >= 128; 0.25 < v / 255 < 0.75 is 64 <= v <= 191), without a float copy. Raises one of
    :data:`DECODE_ERRORS` for a file Pillow cannot decode."""
    with Image.open(path) as img:
        img.load()
        if img.mode == "1":
            a, top = np.asarray(img, dtype=np.float64), 1.0
        elif img.mode.startswith("I;16") or img.mode == "I":
            a, top = np.asarray(img, dtype=np.float64), 65535.0
        elif img.mode == "F":
            a = np.asarray(img, dtype=np.float64)
            top = 1.0 if a.size and np.nanmax(a) <= 1.0 else 255.0
        else:
            if img.mode in ("LA", "RGBA", "PA", "P", "RGB", "CMYK", "YCbCr"):
                img = img.convert("RGB").convert("L") if img.mode != "LA" else img.getchannel(0)
            elif img.mode != "L":
                img = img.convert("L")
            a, top = np.asarray(img, dtype=np.uint8), 255.0
    if a.dtype == np.uint8:
        return a >= 128, float(np.count_nonzero((a >= 64) & (a <= 191))) / max(1, a.size)
    a = a / top
    return a > 0.5, float(np.mean((a > 0.25) & (a < 0.75)))
