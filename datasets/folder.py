"""Image-folder dataset: the training and test images of the paper (CelebA-HQ, FFHQ) as files.

Scans a folder recursively for PNG / JPEG / BMP / WebP / TIFF files in sorted order and returns
each one as a float tensor ``[3, S, S]`` in [-1, 1]: converted to RGB, centre-cropped to a square
and resized with Lanczos (the exact rules are in :mod:`datasets.imaging`). The file of item ``i``
is ``dataset.paths[i]`` (absolute) / ``dataset.names[i]`` (relative to the root, POSIX).

Corrupt files: the constructor checks every file's header (cheap; ``validate='full'`` decodes
everything instead, ``'none'`` skips the check). With ``on_error='skip'`` (default) bad files are
left out and listed by path in one warning; with ``on_error='raise'`` the first bad file raises a
:class:`~datasets.errors.DatasetError` naming it. A file that passes the header check but fails to
decode later (e.g. a JPEG truncated inside its pixel data) raises under ``'raise'``; under
``'skip'`` it is reported once by path and the next readable image is returned in its place, so
indices stay valid inside a running DataLoader.
"""
from __future__ import annotations

import os
import warnings
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.errors import DatasetError
from datasets.imaging import (ALPHA_BACKGROUND, IMAGE_EXTENSIONS, check_header, check_size,
                              first_lines, load_image, open_rgb, pil_to_tensor, scan_images)


class FlipMixin:
    """Optional horizontal flip, reproducible when a seed is given.

    With ``seed`` set, the flip of item ``i`` in epoch ``e`` is a pure function of
    ``(seed, e, i)`` — independent of DataLoader workers and of the order items are read in;
    call :meth:`set_epoch` each epoch to vary it. Without a seed the global torch RNG decides
    (DataLoader seeds it per worker).
    """

    hflip: bool = False
    seed: Optional[int] = None
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def should_flip(self, index: int) -> bool:
        if not self.hflip:
            return False
        if self.seed is None:
            return bool(torch.rand(()) < 0.5)
        return bool(np.random.default_rng([int(self.seed), self.epoch, int(index)]).random() < 0.5)

    def maybe_flip(self, image: torch.Tensor, index: int) -> torch.Tensor:
        return image.flip(-1) if self.should_flip(index) else image


class ImageFolderDataset(FlipMixin, Dataset):
    """Images under ``root`` (recursive) as tensors ``[3, size, size]`` in [-1, 1].

    Args:
        root: folder to scan.
        size: output side length S.
        hflip: flip horizontally with probability 0.5.
        on_error: ``'skip'`` (leave out corrupt files, warn once listing them) or ``'raise'``.
        validate: ``'header'`` (default), ``'full'`` (decode every file up front) or ``'none'``.
        seed: makes ``hflip`` reproducible (see :class:`FlipMixin`).
        extensions: file extensions to include.
        background: RGB colour transparent pixels are composited onto.
    """

    def __init__(self, root: str, size: int, hflip: bool = False, on_error: str = "skip", *,
                 validate: str = "header", seed: Optional[int] = None,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 background: Sequence[int] = ALPHA_BACKGROUND):
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if validate not in ("header", "full", "none"):
            raise ValueError(f"validate must be 'header', 'full' or 'none', got {validate!r}")
        self.root = os.path.abspath(root)
        self.size = check_size(size)
        self.hflip = bool(hflip)
        self.on_error = on_error
        self.seed = seed
        self.background = tuple(background)

        names = scan_images(root, extensions)
        if not names:
            raise DatasetError(f"Image folder '{root}' contains no images "
                               f"({', '.join(extensions)}); check the dataset path.")
        good: List[str] = []
        self.bad: List[str] = []  # absolute paths of files left out
        for name in names:
            path = os.path.join(self.root, name)
            try:
                if validate == "header":
                    check_header(path)
                elif validate == "full":
                    open_rgb(path, self.background)
            except DatasetError:
                if on_error == "raise":
                    raise
                self.bad.append(path)
                continue
            good.append(name)
        if self.bad:
            warnings.warn(f"Skipped {len(self.bad)} unreadable image(s) in '{root}': "
                          f"{first_lines(self.bad)}", stacklevel=2)
        if not good:
            raise DatasetError(f"Image folder '{root}' has no readable images "
                               f"({len(self.bad)} file(s) failed to decode).")
        self.names: List[str] = good
        self.paths: List[str] = [os.path.join(self.root, n) for n in good]
        self._warned = set()

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> torch.Tensor:
        """Item ``index``, unflipped (:class:`DatasetError` if the file cannot be decoded)."""
        return pil_to_tensor(load_image(self.paths[index], self.size, self.background))

    def __getitem__(self, index: int) -> torch.Tensor:
        n = len(self.paths)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        for offset in range(n):
            j = (index + offset) % n
            try:
                image = self.load(j)
            except DatasetError as e:
                if self.on_error == "raise":
                    raise
                if j not in self._warned:
                    self._warned.add(j)
                    warnings.warn(f"{e} Using the next image instead.", stacklevel=2)
                continue
            return self.maybe_flip(image, index)
        raise DatasetError(f"No image in '{self.root}' could be decoded.")

    def __repr__(self) -> str:
        return (f"ImageFolderDataset(root='{self.root}', size={self.size}, n={len(self)}, "
                f"hflip={self.hflip}, skipped={len(self.bad)})")
