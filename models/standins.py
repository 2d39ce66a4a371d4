"""Randomly initialised, seeded *tiny* stand-ins of the pretrained networks (demo and tests only).

``pretrained.allow_random: true`` in training, ``--allow-random-pretrained`` in test.py: an IR-SE
style encoder of width 8 with one unit per stage at 32 px input, and a width-8 IR-SE ArcFace.
They are built from a seed (``common.seeding.derive_seed``), so every process of a run, every
resume and test.py rebuild the same ones. Numbers computed with them carry no pretrained
knowledge. Used by ``training.pretrained`` and ``metrics.testrun`` alike (hence here, below both).
"""
from __future__ import annotations

import contextlib
import os
from typing import Optional

import torch

from common import seeding as rng
from models.checkpoint import safe_load, save_checkpoint
from models.identity import IdentityNet
from models.psp import StyleEncoder

STANDIN_WIDTH = 8                  # first-stage channels of the IR-SE stand-ins
STANDIN_UNITS = (1, 1, 1, 1)
STANDIN_ENCODER_INPUT = 32         # the stand-in style encoder resizes its input to 32x32
STANDIN_ID_DIM = 64
STANDIN_PSP_FILE = "standin_psp.pt"  # <run>/checkpoints/ (pretrained.allow_random only)


@contextlib.contextmanager
def seeded(seed: int):
    """Build modules from a fixed seed without disturbing the global RNG streams."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def standin_style_encoder(start: int, n: int, n_styles: int, style_dim: int, seed: int):
    with seeded(rng.derive_seed(seed, 0x5E)):
        enc = StyleEncoder(start=start, n=n, n_styles=n_styles, style_dim=style_dim,
                           width=STANDIN_WIDTH, units=STANDIN_UNITS, input_size=STANDIN_ENCODER_INPUT)
        enc.set_latent_avg(torch.randn(n_styles, style_dim) * 0.1)
    return enc


def save_standin_style_encoder(encoder, path: str) -> str:
    """Write a (stand-in) StyleEncoder in the released pSp file layout - ``opts``, ``state_dict``
    with ``encoder.`` keys, ``latent_avg`` - so that ``models.load_style_encoder`` reads it back."""
    sd = {f"encoder.{k}": v.detach().cpu() for k, v in encoder.state_dict().items()}
    obj = {"opts": {"encoder_type": "GradualStyleEncoder", "input_nc": 3,
                    "note": "random stand-in of a pretrained.allow_random run, not a trained pSp"},
           "state_dict": sd, "latent_avg": encoder.latent_avg.detach().cpu().clone()}
    save_checkpoint(obj, path)
    return path


def trained_standin_beside(ckpt_path: str) -> Optional[str]:
    """The trained stand-in style encoder a checkpoint's generator was trained with, or None.

    A run with ``pretrained.standin_encoder_steps > 0`` trains its stand-in encoder, so the
    encoder cannot be rebuilt from the seed like the random one: it is the run's
    ``checkpoints/standin_psp.pt``, beside the checkpoint (``export.pt``, ``latest.pt``, ...).
    Raises FileNotFoundError (one sentence naming ``--psp``) when that file is missing; returns
    None for checkpoints of other runs (or unreadable ones: the caller's loader reports those).
    """
    try:
        cfg = safe_load(ckpt_path).get("config") or {}
    except Exception:
        return None
    if not int((cfg.get("pretrained") or {}).get("standin_encoder_steps") or 0) > 0:
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(ckpt_path)), STANDIN_PSP_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{ckpt_path} was trained with a trained stand-in style encoder "
            f"(pretrained.standin_encoder_steps > 0) and {path} is missing; pass the run's "
            f"checkpoints/{STANDIN_PSP_FILE} with --psp.")
    return path


def standin_identity(seed: int):
    with seeded(rng.derive_seed(seed, 0x1D)):
        return IdentityNet("ir_se50", feature_dim=STANDIN_ID_DIM, width=STANDIN_WIDTH, units=STANDIN_UNITS)
