"""Every random stand-in of a pretrained network (demo and tests only), from one module.

``--allow-random-pretrained`` in test.py, ``pretrained.allow_random: true`` in training: a
missing weights file is replaced by a randomly initialised network built from a seed (the
training run's ``train.seed``), so that every process of a run, every resume and test.py build
the same one. Numbers computed with them carry no pretrained knowledge; the callers say so loudly.

* the pSp style encoder and ArcFace: the tiny IR-SE networks of ``models/standins.py``
  (re-exported here; they live below ``training/`` and ``metrics/`` because both build them);
* the FID Inception and the LPIPS VGG16 trunk: full-size networks with random weights (here:
  the Inception network belongs to ``metrics/``, so ``models/`` cannot build it).

Each draws from its own stream key of ``common/seeding.py``.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional

from common import seeding
from losses.perceptual import load_lpips
from models.standins import (STANDIN_PSP_FILE, seeded, standin_identity,  # noqa: F401  (re-exported)
                             standin_style_encoder)

from .inception import FIDInceptionV3

__all__ = ["standin_style_encoder", "standin_identity", "standin_inception", "standin_lpips",
           "trained_standin_path", "standin_seed", "seeded", "STANDIN_PSP_FILE"]


def standin_inception(seed: int, resize: str = "pytorch_fid") -> FIDInceptionV3:
    """The FID Inception with random weights drawn from ``seed``; frozen, eval mode, on CPU."""
    with seeded(seeding.derive_seed(seed, seeding.STANDIN_INCEPTION_KEY)):
        return FIDInceptionV3(resize=resize).eval().requires_grad_(False)


def standin_lpips(seed: int, device):
    """LPIPS (VGG, v0.1 heads) with a VGG16 trunk of random weights drawn from ``seed``."""
    with seeded(seeding.derive_seed(seed, seeding.STANDIN_LPIPS_KEY)):
        return load_lpips(None, allow_random_backbone=True, device=device)


def trained_standin_path(ckpt_path: str, config: Optional[Mapping]) -> Optional[str]:
    """The trained stand-in style encoder beside a checkpoint, or None.

    ``config`` is the checkpoint's ``config`` entry, already read by the caller (None for files
    without one). A run with ``pretrained.standin_encoder_steps > 0`` trained its stand-in
    encoder, so the encoder cannot be rebuilt from the seed: it is the run's
    ``checkpoints/standin_psp.pt`` beside the checkpoint. Raises FileNotFoundError (one sentence
    naming ``--psp``) when that file is missing.
    """
    pretrained = (config or {}).get("pretrained") or {}
    if not int(pretrained.get("standin_encoder_steps") or 0) > 0:
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(ckpt_path)), STANDIN_PSP_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{ckpt_path} was trained with a trained stand-in style encoder "
            f"(pretrained.standin_encoder_steps > 0) and {path} is missing; pass the run's "
            f"checkpoints/{STANDIN_PSP_FILE} with --psp.")
    return path


def standin_seed(config: Optional[Mapping]) -> int:
    """The seed a training run built its stand-ins from: ``train.seed`` of its config (0 when
    the checkpoint records none, e.g. the authors' files)."""
    return int(((config or {}).get("train") or {}).get("seed", 0))

