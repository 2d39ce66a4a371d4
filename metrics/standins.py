"""Every random stand-in of a pretrained network (demo and tests only), built in this one module.

``--allow-random-pretrained`` in test.py, ``pretrained.allow_random: true`` in training: a
missing weights file is replaced by a randomly initialised network built from a seed (the
training run's ``train.seed``), so that every process of a run, every resume and test.py build
the same one. Numbers computed with them carry no pretrained knowledge; the callers say so loudly.

* the pSp style encoder and ArcFace: tiny IR-SE networks (width 8, one unit per stage, the
  encoder at 32 px input), or the released architectures at full size
  (``pretrained.standin_size: full``, what scripts/benchmark.py times);
* the FID Inception and the LPIPS VGG16 trunk: full-size networks with random weights;
* the pixel-L1 stand-in of LPIPS (``pretrained.standin_lpips: pixel_l1``, no weights).

Here, in ``metrics/``, because it sits above ``models/`` and ``losses/`` (whose networks it
builds) and owns the Inception network; ``training/`` and test.py's run import every stand-in
from here. Each seeded one draws from its own stream key of ``common/seeding.py``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Mapping, Optional

import torch

from common import seeding
from losses.perceptual import load_lpips
from models.checkpoint import save_checkpoint
from models.identity import IdentityNet
from models.psp import StyleEncoder

from .inception import FIDInceptionV3

__all__ = ["standin_style_encoder", "standin_identity", "standin_inception", "standin_lpips",
           "PixelDistance", "save_standin_style_encoder", "trained_standin_path", "standin_seed",
           "seeded", "STANDIN_PSP_FILE", "STANDIN_WIDTH", "STANDIN_UNITS",
           "STANDIN_ENCODER_INPUT", "STANDIN_ID_DIM"]

STANDIN_WIDTH = 8                  # first-stage channels of the tiny IR-SE stand-ins
STANDIN_UNITS = (1, 1, 1, 1)
STANDIN_ENCODER_INPUT = 32         # the tiny stand-in style encoder resizes its input to 32x32
STANDIN_ID_DIM = 64
STANDIN_PSP_FILE = "standin_psp.pt"  # <run>/checkpoints/ (pretrained.allow_random only)


@contextlib.contextmanager
def seeded(seed: int):
    """Build modules from a fixed seed without disturbing the global RNG streams."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def standin_style_encoder(start: int, n: int, n_styles: int, style_dim: int, seed: int, *,
                          full_size: bool = False) -> StyleEncoder:
    """The pSp style encoder with random weights drawn from ``seed``: the tiny IR-SE one, or with
    ``full_size`` the released IR-SE50 (scripts/benchmark.py's timing)."""
    tiny = {} if full_size else dict(width=STANDIN_WIDTH, units=STANDIN_UNITS,
                                     input_size=STANDIN_ENCODER_INPUT)
    with seeded(seeding.derive_seed(seed, seeding.STANDIN_STYLE_ENCODER_KEY)):
        enc = StyleEncoder(start=start, n=n, n_styles=n_styles, style_dim=style_dim, **tiny)
        enc.set_latent_avg(torch.randn(n_styles, style_dim) * 0.1)
    return enc


def standin_identity(seed: int, kind: Optional[str] = None) -> IdentityNet:
    """ArcFace with random weights drawn from ``seed``: the tiny width-8 IR-SE one, or with a
    ``kind`` (``resnet101`` | ``ir_se50``) that architecture at full size."""
    with seeded(seeding.derive_seed(seed, seeding.STANDIN_IDENTITY_KEY)):
        if kind is not None:
            return IdentityNet(kind)
        return IdentityNet("ir_se50", feature_dim=STANDIN_ID_DIM, width=STANDIN_WIDTH,
                           units=STANDIN_UNITS)


def standin_inception(seed: int, resize: str = "pytorch_fid") -> FIDInceptionV3:
    """The FID Inception with random weights drawn from ``seed``; frozen, eval mode, on CPU."""
    with seeded(seeding.derive_seed(seed, seeding.STANDIN_INCEPTION_KEY)):
        return FIDInceptionV3(resize=resize).eval().requires_grad_(False)


def standin_lpips(seed: int, device):
    """LPIPS (VGG, v0.1 heads) with a VGG16 trunk of random weights drawn from ``seed``."""
    with seeded(seeding.derive_seed(seed, seeding.STANDIN_LPIPS_KEY)):
        return load_lpips(None, allow_random_backbone=True, device=device)


class PixelDistance(torch.nn.Module):
    """``pretrained.standin_lpips: pixel_l1`` (demo only): a stand-in for the LPIPS network with
    its call signature, ``forward(in0, in1) -> [B, 1, 1, 1]``, that is the mean absolute pixel
    difference per sample. A random VGG16 trunk knows nothing about faces; a pixel distance at
    least knows pixels, so the paper's LPIPS term (on self-exemplar samples, completed image vs
    the real one, SVGL-weighted) becomes an L1 reconstruction of the hole: the generator learns
    to paint what the exemplar codes and the context describe."""

    def forward(self, in0: torch.Tensor, in1: torch.Tensor) -> torch.Tensor:
        return (in0 - in1).abs().mean(dim=(1, 2, 3), keepdim=True)


def save_standin_style_encoder(encoder, path: str) -> str:
    """Write a (stand-in) StyleEncoder in the released pSp file layout - ``opts``, ``state_dict``
    with ``encoder.`` keys, ``latent_avg`` - so that ``models.load_style_encoder`` reads it back."""
    sd = {f"encoder.{k}": v.detach().cpu() for k, v in encoder.state_dict().items()}
    obj = {"opts": {"encoder_type": "GradualStyleEncoder", "input_nc": 3,
                    "note": "random stand-in of a pretrained.allow_random run, not a trained pSp"},
           "state_dict": sd, "latent_avg": encoder.latent_avg.detach().cpu().clone()}
    save_checkpoint(obj, path)
    return path


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
