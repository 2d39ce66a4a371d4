"""Exemplar pairing: which face guides the inpainting of which image (paper section 3).

Training (:class:`TrainingPairing`): per iteration, with probability ``p_self`` (default 0.2,
the authors' 1/5) every image is its own exemplar — these are the steps where the LPIPS loss
to the real image applies — otherwise the exemplars are the batch reversed, so each image is
guided by another face. As in the authors' code the choice is made once per batch; the option
``per_sample=True`` decides it per image instead. The returned ``is_self`` flags mark the images
the LPIPS term applies to: with the per-batch choice, every image of a self-exemplar batch and
none of a reversed one (the middle image of an odd reversed batch is its own exemplar, but the
authors add no LPIPS on reversed batches); with the per-sample choice, every image whose
exemplar is itself (the middle image of an odd batch included).

Evaluation (:class:`EvalPairing`), all deterministic:

- ``reverse`` (alias ``reversed``): exemplar of image ``b`` is image ``B-1-b`` of the same batch,
  so the pairing depends on the batch size (test.py records it with the results);
- ``self``: each image is its own exemplar (reconstruction);
- ``folder``: a folder of exemplar images paired by file name (:mod:`datasets.pairing`) — image
  ``a/01.png`` takes the exemplar ``a/01.*`` (or ``01.*`` when that is unique; other namings
  through a pattern such as ``{name}_exe``); a missing one is a clear error.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Sequence, Tuple

import torch

from datasets.errors import DatasetError
from datasets.pairing import NamedFiles, NamePattern, pairing_key
from datasets.imaging import (ALPHA_BACKGROUND, check_size, load_image, pil_to_tensor,
                              scan_images)
from common.seeding import RngLike, as_rng


def _check_batch(images: torch.Tensor) -> int:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a tensor [B, C, H, W], got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    return images.shape[0]


def reverse_index(batch_size: int) -> torch.Tensor:
    """Exemplar index of each image under the reversed-batch pairing: ``B-1-b``."""
    return torch.arange(batch_size - 1, -1, -1)


class TrainingPairing:
    """``pairing(images, rng) -> (exemplars, is_self)``; ``is_self`` is a bool tensor [B]."""

    def __init__(self, p_self: float = 0.2, per_sample: bool = False):
        if not 0.0 <= p_self <= 1.0:
            raise ValueError(f"p_self must be in [0, 1], got {p_self!r}")
        self.p_self = float(p_self)
        self.per_sample = bool(per_sample)

    def draw(self, batch_size: int, rng: RngLike) -> Tuple[torch.Tensor, torch.Tensor]:
        """(exemplar index [B], is_self bool [B]) of a batch, one draw from ``rng``, on the host."""
        rng = as_rng(rng, "exemplar pairing")
        own, rev = torch.arange(batch_size), reverse_index(batch_size)
        if self.per_sample:
            use_self = torch.from_numpy(rng.random(batch_size) < self.p_self)
            idx = torch.where(use_self, own, rev)
            return idx, idx == own
        use_self = bool(rng.random() < self.p_self)
        return (own if use_self else rev), torch.full((batch_size,), use_self)

    def indices(self, batch_size: int, rng: RngLike) -> torch.Tensor:
        """Exemplar index of each image of a batch (one draw from ``rng``)."""
        return self.draw(batch_size, rng)[0]

    def __call__(self, images: torch.Tensor,
                 rng: RngLike) -> Tuple[torch.Tensor, torch.Tensor]:
        idx, is_self = self.draw(_check_batch(images), rng)
        return images[idx.to(images.device)], is_self.to(images.device)


class ExemplarFolder:
    """Exemplar images in a folder, looked up by the file name of the image they guide
    (:mod:`datasets.pairing`; ``pattern`` / ``image_pattern`` as for paired masks)."""

    def __init__(self, root: str, size: int, background=ALPHA_BACKGROUND, pattern=None,
                 image_pattern=None):
        self.root, self.size, self.background = root, check_size(size), background
        names = scan_images(root)
        if not names:
            raise DatasetError(f"Exemplar folder '{root}' contains no images; check the path.")
        self.image_pattern = image_pattern or NamePattern()
        self.files = NamedFiles(root, pattern, "exemplar", "Exemplar folder", names=names)

    def key_of(self, name: str) -> str:
        return pairing_key(name, self.image_pattern)

    def path_for(self, name: str) -> str:
        return self.files.path_for(self.key_of(name), self.image_pattern)

    def load(self, name: str) -> torch.Tensor:
        return pil_to_tensor(load_image(self.path_for(name), self.size, self.background))

    def check(self, names: Sequence[str]) -> None:
        """Fail early (before a long evaluation) if any image lacks its exemplar."""
        keys = [self.key_of(n) for n in names]
        missing = self.files.missing(keys)
        if missing:
            raise DatasetError(self.files.missing_message(missing, self.image_pattern,
                                                          all_keys=keys))


EVAL_MODES = ("reverse", "self", "folder")


class EvalPairing:
    """``pairing(images, names=None) -> exemplars`` for evaluation (no randomness).

    Args:
        mode: ``'reverse'`` (alias ``'reversed'``), ``'self'`` or ``'folder'``.
        folder: exemplar folder (``mode='folder'``).
        size: image size, needed to load folder exemplars (defaults to the batch's size).
        pattern, image_pattern: :class:`datasets.pairing.NamePattern` of the exemplar files and
            of the image names (``mode='folder'``; default: the same name).
    """

    def __init__(self, mode: str = "reverse", folder: Optional[str] = None,
                 size: Optional[int] = None, pattern=None, image_pattern=None):
        if mode == "reversed":
            warnings.warn("exemplar mode 'reversed' is the old name of 'reverse' (the same pairing); "
                          "write 'reverse'.", FutureWarning, stacklevel=2)
            mode = "reverse"
        if mode not in EVAL_MODES:
            raise ValueError(f"exemplar mode must be one of {EVAL_MODES}, got {mode!r}")
        if mode == "folder" and not folder:
            raise ValueError("exemplar mode 'folder' needs the exemplar folder path")
        self.mode, self.folder_root, self.size = mode, folder, size
        self.pattern, self.image_pattern = pattern, image_pattern
        self._folder: Optional[ExemplarFolder] = None
        if mode == "folder" and size is not None:
            self.folder_for(size)

    def folder_for(self, size: int) -> ExemplarFolder:
        """The exemplar folder read at ``size`` (``mode='folder'``)."""
        if self._folder is None or self._folder.size != size:
            self._folder = ExemplarFolder(self.folder_root, size, pattern=self.pattern,
                                          image_pattern=self.image_pattern)
        return self._folder

    def __call__(self, images: torch.Tensor,
                 names: Optional[Sequence[str]] = None) -> torch.Tensor:
        b = _check_batch(images)
        if self.mode == "self":
            return images
        if self.mode == "reverse":
            return images.flip(0)
        if names is None or len(names) != b:
            raise ValueError("exemplar mode 'folder' needs the file name of every image")
        folder = self.folder_for(images.shape[-1])
        return torch.stack([folder.load(n) for n in names]).to(images.device, images.dtype)

    def describe(self) -> dict:
        """Protocol record for result files."""
        d = {"mode": self.mode, "folder": self.folder_root}
        if self.mode == "folder":
            d["pair_by"] = {"exemplar": getattr(self.pattern, "template", "{name}"),
                            "image": getattr(self.image_pattern, "template", "{name}")}
        return d


def make_training_pairing(cfg) -> TrainingPairing:
    """From a dict ``{'self_prob' or 'p_self': 0.2, 'per_sample': False}`` or a pairing."""
    if isinstance(cfg, TrainingPairing):
        return cfg
    cfg = dict(cfg or {})
    p = cfg.pop("self_prob", cfg.pop("p_self", 0.2))
    return TrainingPairing(p, **cfg)


def pairs_for_eval(names: Sequence[str], mode: str, batch_size: int) -> List[Optional[str]]:
    """Name of the exemplar used for each image (``None`` = from the folder) — for protocol
    records. With ``reverse`` the last, partial batch is reversed on its own."""
    mode = "reverse" if mode == "reversed" else mode
    if mode == "self":
        return list(names)
    if mode == "folder":
        return [None] * len(names)
    out: List[Optional[str]] = []
    for start in range(0, len(names), batch_size):
        out.extend(reversed(names[start:start + batch_size]))
    return out
