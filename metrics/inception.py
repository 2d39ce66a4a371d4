"""The FID feature network: Inception-v3 in the ``pt_inception-2015-12-05`` layout.

The paper (section 4) reports FID and U-IDS/P-IDS on Inception-v3 pool
features (2048-d). The standard FID weights are the TensorFlow graph ``inception-2015-12-05``
ported to PyTorch; its state dict (``pt_inception-2015-12-05-6726825d.pth``, the file read by
pytorch-fid; torch-fidelity reads the same layout) has 566 keys: 94 conv+batch-norm units,
each ``<name>.conv.weight`` + ``<name>.bn.{weight,bias,running_mean,running_var,
num_batches_tracked}``, plus ``fc.{weight,bias}`` (1008 classes). Our module names follow that
layout so the file loads with ``strict=True``.

That TF graph differs from torchvision's Inception-v3 in its pooling, and those differences
change the features, so they are reproduced here:

* the average-pool branches of the A, C and first E blocks (``Mixed_5b-d``, ``Mixed_6b-e``,
  ``Mixed_7b``) exclude the zero padding from the average (TF's ``SAME`` pooling), i.e.
  ``count_include_pad=False``;
* the pool branch of the last E block (``Mixed_7c``) is a 3x3 *max* pool, not an average.

Preprocessing. Our images are in [-1, 1]. Two resize conventions exist and give slightly
different FIDs (a few tenths at most; always report which one was used):

* ``resize="pytorch_fid"`` (default): ``F.interpolate(..., mode="bilinear",
  align_corners=False)`` to 299x299 (half-pixel centres), network input in [-1, 1]
  (pytorch-fid computes ``2 * x - 1`` from [0, 1], the same thing);
* ``resize="tf1"``: TensorFlow-1 ``resize_bilinear(align_corners=False)`` sampling
  (source coordinate = ``i * in / out``, no half-pixel offset), as torch-fidelity does to
  match the original TF FID code, with torch-fidelity's ``(v - 128) / 128`` normalisation of
  8-bit values ``v``.

``quantize=True`` (default) first rounds the image to 8-bit levels, which is what every
file-based FID tool sees after a PNG round trip; FIDs computed in memory then match FIDs
computed from saved PNGs.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import UserError
from common.torchfile import not_a_torch_file

from .fid import file_sha256

__all__ = [
    "FIDInceptionV3",
    "InceptionWeightsError",
    "load_inception",
    "STANDARD_WEIGHTS_NAME",
    "STANDARD_WEIGHTS_SHA256_PREFIX",
    "RESIZE_MODES",
]

log = logging.getLogger(__name__)

STANDARD_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
# torch.hub file names carry the first hex digits of the file's SHA-256.
STANDARD_WEIGHTS_SHA256_PREFIX = "6726825d"
RESIZE_MODES = ("pytorch_fid", "tf1")
FEATURE_DIM = 2048
INPUT_SIZE = 299


class InceptionWeightsError(UserError, ValueError):
    """The FID Inception weights file is missing or is not in the pt_inception layout."""


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

class BasicConv2d(nn.Module):
    """conv (no bias) -> batch norm (TF epsilon 1e-3) -> ReLU; keys ``conv.*`` and ``bn.*``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x):
    # TF 'SAME' average pooling divides by the number of real (unpadded) pixels.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool(x):
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b/c/d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        b3d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b3d, bp], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b/c/d/e)."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            b7d = layer(b7d)
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b7, b7d, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 outputs (Mixed_7b with avg pool, Mixed_7c with max pool)."""

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        # The FID graph's last block max-pools here (where the Inception paper averages);
        # reproducing it is what makes the features match the reference weights.
        self.pool = _tf_avg_pool if pool == "avg" else _max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        t = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(t), self.branch3x3_2b(t)], 1)
        t = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3d = torch.cat([self.branch3x3dbl_3a(t), self.branch3x3dbl_3b(t)], 1)
        bp = self.branch_pool(self.pool(x))
        return torch.cat([b1, b3, b3d, bp], 1)


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------

def _tf1_resize_axis(x: torch.Tensor, out_size: int, dim: int) -> torch.Tensor:
    """Bilinear resampling along one axis, TF1 ``align_corners=False`` (no half-pixel) rule."""
    in_size = x.shape[dim]
    if in_size == out_size:
        return x
    scale = in_size / out_size
    src = torch.arange(out_size, dtype=torch.float64, device=x.device) * scale
    lo = src.floor().long().clamp(max=in_size - 1)
    hi = (lo + 1).clamp(max=in_size - 1)
    frac = (src - lo.to(torch.float64)).to(x.dtype)
    shape = [1] * x.dim()
    shape[dim] = out_size
    frac = frac.view(shape)
    a = x.index_select(dim, lo)
    b = x.index_select(dim, hi)
    return a + (b - a) * frac


def tf1_resize_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize NCHW ``x`` to ``size`` x ``size`` as TF1's ``resize_bilinear`` (separable)."""
    return _tf1_resize_axis(_tf1_resize_axis(x, size, 2), size, 3)


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------

class FIDInceptionV3(nn.Module):
    """Inception-v3 (FID variant) mapping images in [-1, 1] to 2048-d pool features.

    ``forward(images [B,3,H,W] in [-1,1]) -> [B, 2048]``. Any input size is resized to 299.
    Always use it in eval mode (``load_inception`` does that): batch norm in train mode
    ruins the features.
    """

    def __init__(self, resize: str = "pytorch_fid", quantize: bool = True):
        super().__init__()
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        self.resize = resize
        self.quantize = quantize
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        # Unused for FID; kept so the reference file (which has it) loads strictly.
        self.fc = nn.Linear(FEATURE_DIM, 1008)

    @property
    def preprocessing(self) -> str:
        """A short tag naming the preprocessing, used in cache keys and protocol records."""
        return f"{self.resize}{'+uint8' if self.quantize else ''}@{INPUT_SIZE}"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [-1,1] -> [B,3,299,299] network input."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B,3,H,W], got shape {tuple(images.shape)}")
        x = images.to(torch.float32).clamp(-1.0, 1.0)
        if self.resize == "tf1":
            # torch-fidelity's pipeline: 8-bit values v in [0,255], TF1 resize, (v-128)/128.
            v = (x + 1.0) * 127.5
            if self.quantize:
                v = v.round()
            v = tf1_resize_bilinear(v, INPUT_SIZE)
            return (v - 128.0) / 128.0
        if self.quantize:
            x = ((x + 1.0) * 127.5).round() / 127.5 - 1.0
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                              align_corners=False)
        return x

    def features_from_input(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed [B,3,299,299] -> pool features [B, 2048]."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)               # [B, 64, 73, 73]
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)               # [B, 192, 35, 35]
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,
                      self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,
                      self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)                                           # ... -> [B, 2048, 8, 8]
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)     # [B, 2048]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features_from_input(self.preprocess(images))

    def train(self, mode: bool = True):
        # Batch norm must use the stored TF statistics; a stray .train() (e.g. a parent
        # module switched to training) would silently ruin every feature.
        return super().train(False)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def load_inception(path: Optional[str], device="cpu", *, resize: str = "pytorch_fid",
                   quantize: bool = True,
                   config_key: str = "pretrained.inception") -> FIDInceptionV3:
    """Build the FID Inception and load ``path`` strictly; returns a frozen eval module.

    ``config_key`` only shapes the error message (the setting the user should fix).
    """
    if not path or not os.path.isfile(path):
        raise InceptionWeightsError(
            f"FID Inception weights not found at {path!r}: set {config_key} to a local copy of "
            f"{STANDARD_WEIGHTS_NAME} (the pytorch-fid / torch-fidelity FID weights; see "
            f"checkpoints/README.md), nothing is downloaded.")
    why = not_a_torch_file(path)
    if why is not None:
        raise InceptionWeightsError(
            f"{path!r} is not a PyTorch checkpoint ({why}); {config_key} must point at "
            f"{STANDARD_WEIGHTS_NAME}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or a pickle needing non-tensor globals
        raise InceptionWeightsError(
            f"cannot read FID Inception weights {path!r} as a PyTorch state dict ({exc}); "
            f"{config_key} must point at {STANDARD_WEIGHTS_NAME}.") from exc
    if not isinstance(state, dict):
        raise InceptionWeightsError(
            f"{path!r} holds a {type(state).__name__}, not a state dict; {config_key} must point "
            f"at {STANDARD_WEIGHTS_NAME}.")
    model = FIDInceptionV3(resize=resize, quantize=quantize)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    bad_shape = [k for k in expected if k in state and tuple(state[k].shape)
                 != tuple(expected[k].shape)]
    if missing or unexpected or bad_shape:
        raise InceptionWeightsError(
            f"{path!r} is not in the pt_inception-2015-12-05 layout ({len(state)} keys, expected "
            f"{len(expected)}); missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape "
            f"{bad_shape[:5]}; {config_key} must point at {STANDARD_WEIGHTS_NAME}.")
    model.load_state_dict(state, strict=True)
    model.eval().requires_grad_(False)
    # Recorded in cache keys and result files: FIDs from different weights never mix.
    model.weights_path = os.path.abspath(path)
    model.weights_sha256 = file_sha256(path)
    if not model.weights_sha256.startswith(STANDARD_WEIGHTS_SHA256_PREFIX):
        log.warning("%s loads but is not the standard FID Inception file (sha256 %s..., "
                    "expected %s...): FIDs will not be comparable with published numbers.",
                    path, model.weights_sha256[:8], STANDARD_WEIGHTS_SHA256_PREFIX)
    return model.to(device)
