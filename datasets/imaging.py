"""Image decoding shared by the folder dataset, the LMDB packer and the mask-file readers.

One code path turns any file into the model's input so that a folder and its LMDB pack give the
same pixels:

1. **Decode** with Pillow and apply the EXIF orientation (photos from phones are stored rotated).
2. **Convert to 8-bit RGB** (:func:`to_rgb`):
   - grayscale (``L``, ``1``) is replicated to three channels;
   - 16-bit grayscale (``I;16*``) is scaled to 8 bit by ``round(v / 257)`` (Pillow's own
     conversion clips at 255 instead, which would turn most of the image white);
     32-bit ``I`` is read as 16-bit data (values clipped to 0..65535), ``F`` as [0, 1] when its
     maximum is <= 1 and as [0, 255] otherwise;
   - 16-bit RGB(A) PNGs are reduced to 8 bit by Pillow itself when decoding (high byte);
   - palette images are expanded (with their transparency, if any);
   - anything with alpha (``RGBA``, ``LA``, ``PA``, palette + ``transparency``) is
     **alpha-composited onto a white background** (:data:`ALPHA_BACKGROUND`): transparent
     pixels often hold arbitrary colours, so dropping the alpha channel would show them;
   - CMYK / YCbCr / LAB / HSV go through Pillow's ``convert('RGB')``; ICC profiles are ignored.
3. **Centre-crop** non-square images to the largest centred square (the odd pixel, if any, is
   dropped on the right / bottom), then **resize** to ``size x size`` with Pillow's
   **Lanczos** filter (:data:`RESIZE_FILTER`; antialiased when downsampling). An image that is
   already ``size x size`` is not resampled at all.
4. **Tensor**: float32 ``[3, S, S]`` in [-1, 1] (``v / 127.5 - 1``).
"""
from __future__ import annotations

import os
import warnings
from typing import Iterable, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from common.imagefile import ALPHA_BACKGROUND, DECODE_ERRORS, load_rgb, to_rgb  # noqa: F401 (re-exported)
from datasets.errors import DatasetError

#: File extensions scanned by the folder dataset (matched case-insensitively).
IMAGE_EXTENSIONS: Tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: Resampling filter used to bring images to the model size.
RESIZE_FILTER = Image.LANCZOS


def scan_images(root: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> List[str]:
    """Relative POSIX paths of all image files under ``root``, sorted (deterministic order).

    Hidden files and folders (name starting with ``.``, e.g. macOS ``._x.jpg`` resource forks)
    are skipped. Symbolic links to folders are followed, and each real folder (by device and
    inode) is walked once: a link back to an ancestor (a loop) or a second link to the same
    folder would otherwise count its images again and again; one warning names them.
    """
    if not os.path.exists(root):
        raise DatasetError(f"Image folder '{root}' does not exist; check the dataset path.")
    if not os.path.isdir(root):
        raise DatasetError(f"'{root}' is not a folder; give the folder that holds the images.")
    exts = tuple(e.lower() for e in extensions)
    found = []
    st = os.stat(root)
    seen = {(st.st_dev, st.st_ino)}
    again: List[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        keep = []
        for d in sorted(dirnames):  # sorted: the first of two links to a folder is the one kept
            if d.startswith("."):
                continue
            try:
                st = os.stat(os.path.join(dirpath, d))
            except OSError:
                continue  # a broken link: os.walk would not enter it either
            if (st.st_dev, st.st_ino) in seen:
                again.append(os.path.relpath(os.path.join(dirpath, d), root).replace(os.sep, "/"))
                continue
            seen.add((st.st_dev, st.st_ino))
            keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(exts):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            found.append(rel.replace(os.sep, "/"))
    if again:
        warnings.warn(f"Image folder '{root}' reaches {len(again)} folder(s) a second time through "
                      f"symbolic links (a loop or a duplicate link: {first_lines(sorted(again))}); "
                      f"each folder's images are counted once.", stacklevel=2)
    found.sort()
    return found


def open_rgb(path: str, background: Sequence[int] = ALPHA_BACKGROUND) -> Image.Image:
    """Decode ``path`` fully, apply EXIF orientation and return an 8-bit RGB image.

    Raises :class:`DatasetError` (one sentence naming the file) when the file cannot be decoded.
    """
    try:
        return load_rgb(path, background)
    except DECODE_ERRORS as e:
        raise DatasetError(f"Cannot decode image '{path}' ({type(e).__name__}: {e}); "
                           "remove or replace the file.") from None


def check_header(path: str) -> None:
    """Cheap validity check (header + Pillow's ``verify``) without decoding the pixels.

    Catches non-image files, empty files and broken PNG chunks; a JPEG truncated in the middle
    of its pixel data passes and is caught when decoded.
    """
    try:
        with Image.open(path) as img:
            img.verify()
    except DECODE_ERRORS as e:
        raise DatasetError(f"Cannot read image '{path}' ({type(e).__name__}: {e}); "
                           "remove or replace the file.") from None


def center_crop_box(width: int, height: int) -> Tuple[int, int, int, int]:
    """Box (left, top, right, bottom) of the largest centred square."""
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return left, top, left + side, top + side


def center_crop_resize(img: Image.Image, size: int, resample=RESIZE_FILTER) -> Image.Image:
    """Centre-crop to a square, then resize to ``size x size`` (no-op when already that size)."""
    w, h = img.size
    if w != h:
        img = img.crop(center_crop_box(w, h))
    if img.size != (size, size):
        img = img.resize((size, size), resample=resample)
    return img


def load_image(path: str, size: int, background: Sequence[int] = ALPHA_BACKGROUND) -> Image.Image:
    """Decode + convert + crop + resize: the exact pixels every dataset class returns."""
    return center_crop_resize(open_rgb(path, background), size)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """8-bit RGB Pillow image -> float32 tensor [3, H, W] in [-1, 1]."""
    a = np.asarray(img, dtype=np.uint8)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an RGB image, got array of shape {a.shape}")
    t = torch.from_numpy(a.copy()).permute(2, 0, 1).float()
    return t / 127.5 - 1.0


def tensor_to_uint8(t: torch.Tensor) -> np.ndarray:
    """Tensor [3, H, W] in [-1, 1] -> uint8 array [H, W, 3] (inverse of :func:`pil_to_tensor`)."""
    a = ((t.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return a.permute(1, 2, 0).numpy()


def check_size(size) -> int:
    """Validate an image size argument (positive int)."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    return int(size)


def rel_stem(name: str) -> str:
    """'sub/001.png' -> 'sub/001' (the key used to pair exemplars and masks by file name)."""
    return os.path.splitext(name)[0]


def first_lines(items: Iterable[str], limit: int = 20) -> str:
    """Comma-separated list of at most ``limit`` items (+ a count of the rest)."""
    items = list(items)
    text = ", ".join(items[:limit])
    if len(items) > limit:
        text += f" (+{len(items) - limit} more)"
    return text
