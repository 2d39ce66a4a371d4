"""The frozen ArcFace identity network behind EXE-GAN's identity loss.

EXE-GAN (Lu et al., Neurocomputing 2025, Sec. 3.3) keeps the completed face close to the
exemplar's identity with L_id = 1 - cos(F(completed), F(exemplar)), F a pretrained ArcFace
(Deng et al., CVPR 2019) face-recognition network. This file provides F as ``IdentityNet``:
frozen, always in ``eval()`` mode, gradients flowing to its input, features L2-normalised.

Two backbones:

- ``kind='resnet101'`` - the authors' released ``Arcface.pth``: a plain torchvision
  ``resnet101(num_classes=256)`` state dict (keys ``conv1``, ``bn1``, ``layer1..4``, ``fc``);
  256-d features.
- ``kind='ir_se50'`` - an IR-SE50 ArcFace in the InsightFace_Pytorch layout (the layout of the
  widely used ``model_ir_se50.pth``); 512-d features:

      input_layer   Conv3x3(3->64, no bias) . BatchNorm2d(64) . PReLU(64)       (models/irse.py)
      body.0..23    IR-SE units, stages of 3, 4, 14, 3 (depths 64, 128, 256, 512), 112 -> 7 px
      output_layer  0 BatchNorm2d(512) . 1 Dropout(0.6) . 2 Flatten .
                    3 Linear(512*7*7 -> 512) . 4 BatchNorm1d(512)

Input handling, for both: images in [-1, 1] go in as they are (no other normalisation) and are
resized bilinearly to 112x112 with ``align_corners=False`` (PyTorch's default, half-pixel
centres) when they are not already that size, exactly as the authors' identity loss calls
``F.interpolate(x, size=112, mode='bilinear')``. (At 112 px that resize is the identity, so
skipping it changes nothing.) Resizing with ``align_corners=True`` instead, the pSp encoder's
convention, samples a slightly different grid: with the released ArcFace on real faces that
moved the embeddings by up to 8e-4 and the identity loss by ~10 %, so that convention is not
offered. The state dict of ``IdentityNet.backbone`` is exactly the file's.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.resnet import Bottleneck, ResNet

from models.irse import (IRSE50_UNITS, WeightsFileError, freeze, infer_irse_config, load_strict,
                         make_body, make_input_layer, read_weights_file, stage_depths)

KINDS = ("resnet101", "ir_se50")
RESNET101_LAYERS = (3, 4, 23, 3)
CONFIG_KEY = "pretrained.identity"
KIND_KEY = "pretrained.identity_kind"
RELEASED_FILES = {"resnet101": "Arcface.pth", "ir_se50": "model_ir_se50.pth"}
INPUT_SIZE = 112


class IRSEArcFace(nn.Module):
    """IR-SE ArcFace backbone (InsightFace_Pytorch layout): 112x112 image -> un-normalised embedding."""

    def __init__(self, width: int = 64, units: Sequence[int] = IRSE50_UNITS, feature_dim: int = 512,
                 drop_ratio: float = 0.6):
        super().__init__()
        out_channels = stage_depths(width)[-1]
        self.input_layer = make_input_layer(width)
        self.body = make_body(width, units)
        spatial = INPUT_SIZE // 16   # four stride-2 stages: 112 -> 7
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(out_channels * spatial * spatial, feature_dim),
            nn.BatchNorm1d(feature_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.body(self.input_layer(x)))   # [B, feature_dim]


def make_resnet(layers: Sequence[int] = RESNET101_LAYERS, num_classes: int = 256) -> ResNet:
    """torchvision's Bottleneck ResNet; ``layers=(3, 4, 23, 3)`` is exactly ``resnet101(num_classes=...)``."""
    return ResNet(Bottleneck, list(layers), num_classes=num_classes)


class IdentityNet(nn.Module):
    """Frozen ArcFace: images [B, 3, H, W] in [-1, 1] -> L2-normalised features [B, D].

    ``kind`` picks the backbone (``resnet101``: D = 256 by default; ``ir_se50``: D = 512).
    ``resnet_layers`` / ``width`` / ``units`` shrink the backbone for tests and the demo.
    """

    def __init__(self, kind: str = "resnet101", *, feature_dim: int | None = None,
                 resnet_layers: Sequence[int] = RESNET101_LAYERS, width: int = 64,
                 units: Sequence[int] = IRSE50_UNITS):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"identity network kind must be one of {KINDS}, got {kind!r}.")
        self.kind = kind
        if kind == "resnet101":
            self.feature_dim = int(feature_dim or 256)
            self.backbone: nn.Module = make_resnet(resnet_layers, self.feature_dim)
        else:
            self.feature_dim = int(feature_dim or 512)
            self.backbone = IRSEArcFace(width, units, self.feature_dim)
        freeze(self)
        self.eval()

    def train(self, mode: bool = True) -> "IdentityNet":
        # Frozen network: batch-norm keeps its running statistics, dropout stays off.
        return super().train(False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.dim() != 4 or img.shape[1] != 3:
            raise ValueError(f"IdentityNet expects images [B, 3, H, W] in [-1, 1], got {tuple(img.shape)}.")
        if img.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            # The authors' resize: bilinear, align_corners=False (half-pixel centres).
            img = F.interpolate(img, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                                align_corners=False)
        return F.normalize(self.backbone(img), dim=1)   # [B, D], unit L2 norm


# ----------------------------------------------------------------------------------------------
# Loading the released files.

def _resnet_config(sd: Mapping[str, torch.Tensor]) -> dict:
    layers = []
    for stage in range(1, 5):
        n = 0
        while f"layer{stage}.{n}.conv1.weight" in sd:
            n += 1
        layers.append(n)
    if min(layers) == 0 or "layer1.0.conv3.weight" not in sd:
        raise ValueError(f"not a Bottleneck ResNet (blocks per stage {layers})")
    return dict(resnet_layers=tuple(layers), feature_dim=int(sd["fc.weight"].shape[0]))


def _irse_config(sd: Mapping[str, torch.Tensor]) -> dict:
    width, units = infer_irse_config(sd)
    return dict(width=width, units=units, feature_dim=int(sd["output_layer.3.weight"].shape[0]))


def load_identity_net(path: str | os.PathLike | None, kind: str = "resnet101",
                      device: torch.device | str = "cpu") -> IdentityNet:
    """Build the frozen IdentityNet from a state-dict file (``Arcface.pth`` for ``resnet101``).

    The backbone size (ResNet blocks per stage / IR-SE width and units, feature size) is read from
    the tensors, so tiny test networks load too; the weights load strictly. A ``module.`` prefix
    (files saved from DataParallel) is removed first.
    """
    if kind not in KINDS:
        raise WeightsFileError(f"`{KIND_KEY}` must be one of {', '.join(KINDS)}, got {kind!r}.")
    what = f"ArcFace identity network ({kind})"
    expected = RELEASED_FILES[kind]
    sd = read_weights_file(path, what=what, config_key=CONFIG_KEY, expected_file=expected)
    if not isinstance(sd, Mapping) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        raise WeightsFileError(
            f"{what} file {os.fspath(path)!r} is not a plain state dict of tensors; expected {expected}.")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}

    looks_irse = "input_layer.0.weight" in sd
    looks_resnet = "conv1.weight" in sd and "fc.weight" in sd
    if kind == "resnet101" and looks_irse or kind == "ir_se50" and looks_resnet:
        other = "ir_se50" if looks_irse else "resnet101"
        raise WeightsFileError(
            f"{what} file {os.fspath(path)!r} holds a {other} network: set `{KIND_KEY}: {other}` "
            f"or point `{CONFIG_KEY}` at {expected}.")
    try:
        config = _resnet_config(sd) if kind == "resnet101" else _irse_config(sd)
    except (KeyError, ValueError, IndexError) as exc:
        raise WeightsFileError(
            f"{what} file {os.fspath(path)!r} does not hold a {kind} network "
            f"({type(exc).__name__}: {exc}); expected {expected}.") from None
    net = IdentityNet(kind, **config)
    load_strict(net.backbone, sd, path=path, what=what)
    return net.to(device)
