"""IR-SE backbone blocks shared by the pSp style encoder and the IR-SE50 ArcFace.

EXE-GAN (Lu et al., Neurocomputing 2025, Sec. 3.3) uses two frozen face networks in its losses:
the pSp ``GradualStyleEncoder`` (attribute loss) and an ArcFace identity network (identity loss).
pSp is built on the IR-SE50 backbone of ArcFace (Deng et al., CVPR 2019): an "improved residual"
(IR) network whose bottleneck units carry squeeze-and-excitation (SE, Hu et al., CVPR 2018).
Both users share the blocks in this file (docs/encoders.md describes both):

- input layer: Conv3x3(3 -> 64, no bias), BatchNorm, PReLU;
- body: four stages of IR-SE units (3, 4, 14, 3 units; depths 64, 128, 256, 512); the first unit
  of each stage has stride 2;
- unit: ``shortcut_layer`` = MaxPool2d(1, stride) when the channel count is kept, otherwise
  Conv1x1(stride, no bias) + BatchNorm; ``res_layer`` = BatchNorm, Conv3x3, PReLU,
  Conv3x3(stride), BatchNorm, SE(reduction 16); output = shortcut + residual.

Module names follow the released pSp / InsightFace files (``input_layer``, ``body.<i>``,
``shortcut_layer``, ``res_layer.5.fc1`` ...), so their state dicts load with ``strict=True``.
``width`` (the first stage depth, 64 in the real networks) and ``units`` shrink the network for
tests and the demo.

The file also holds the small weights-file helpers both loaders use: reading a file through
``models.checkpoint.safe_load`` (``weights_only=True`` with the project's allow-list) and strict
loading that reports mismatches in one sentence (``WeightsFileError``, a ``CheckpointError``).
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import torch
from torch import nn

from common.torchfile import not_a_torch_file
from models.checkpoint import CheckpointError, safe_load

IRSE50_UNITS = (3, 4, 14, 3)  # units per stage of IR-SE50 (50 = 3 * (3 + 4 + 14 + 3) + 2)
SE_REDUCTION = 16


class WeightsFileError(CheckpointError):
    """A pretrained-weights file is missing or does not match the network (a user-fixable error)."""


def stage_depths(width: int = 64) -> tuple[int, int, int, int]:
    """Output channels of the four stages: width * (1, 2, 4, 8) = 64, 128, 256, 512 by default."""
    return (width, 2 * width, 4 * width, 8 * width)


class SEModule(nn.Module):
    """Squeeze-and-excitation: x * sigmoid(fc2(relu(fc1(avgpool(x))))), 1x1 convs without bias."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION):
        super().__init__()
        # max(1, .) only matters for tiny test widths below 16; the real networks divide exactly.
        hidden = max(1, channels // reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))  # [B, C, 1, 1]
        return x * gate


class BottleneckIRSE(nn.Module):
    """One IR-SE unit: ``shortcut_layer(x) + res_layer(x)`` (stride applied in the second conv)."""

    def __init__(self, in_channels: int, depth: int, stride: int):
        super().__init__()
        if in_channels == depth:
            # A 1x1 max-pool is plain strided subsampling; it has no parameters.
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, 1, stride, bias=False),
                nn.BatchNorm2d(depth),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut_layer(x) + self.res_layer(x)


def make_input_layer(width: int = 64) -> nn.Sequential:
    """Conv3x3(3 -> width, no bias), BatchNorm, PReLU: keys ``0.weight``, ``1.*``, ``2.weight``."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.PReLU(width),
    )


def make_body(width: int = 64, units: Sequence[int] = IRSE50_UNITS) -> nn.Sequential:
    """The four IR-SE stages as one flat ``nn.Sequential`` (keys ``<i>.*``, i over all units)."""
    if len(units) != 4 or any(int(u) < 1 for u in units):
        raise ValueError(f"units must list four positive unit counts, got {tuple(units)}.")
    blocks = []
    in_channels = width
    for depth, n_units in zip(stage_depths(width), units):
        for i in range(int(n_units)):
            blocks.append(BottleneckIRSE(in_channels, depth, 2 if i == 0 else 1))
            in_channels = depth
    return nn.Sequential(*blocks)


def stage_end_indices(units: Sequence[int] = IRSE50_UNITS) -> tuple[int, int, int, int]:
    """Index in ``body`` of the last unit of each stage: (2, 6, 20, 23) for IR-SE50."""
    ends, total = [], 0
    for n_units in units:
        total += int(n_units)
        ends.append(total - 1)
    return tuple(ends)


def infer_irse_config(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> tuple[int, tuple[int, ...]]:
    """Read (width, units) of an IR-SE backbone from its state dict.

    ``width`` is the input layer's channel count; ``units`` groups consecutive body units of equal
    depth (the output channels of ``res_layer.1``). Raises KeyError/ValueError when the layout is
    not an IR-SE backbone; callers turn that into a ``WeightsFileError`` naming the file.
    """
    width = int(state_dict[f"{prefix}input_layer.0.weight"].shape[0])
    depths = []
    i = 0
    while f"{prefix}body.{i}.res_layer.1.weight" in state_dict:
        depths.append(int(state_dict[f"{prefix}body.{i}.res_layer.1.weight"].shape[0]))
        i += 1
    units: list[int] = []
    for d, expected in zip(_group_sizes(depths), stage_depths(width)):
        if d[0] != expected:
            raise ValueError(f"stage depth {d[0]} does not follow width {width} (expected {expected})")
        units.append(d[1])
    if len(units) != 4 or sum(units) != len(depths):
        raise ValueError(f"expected four stages of depths {stage_depths(width)}, found depths {depths}")
    return width, tuple(units)


def _group_sizes(values: Sequence[int]) -> list[tuple[int, int]]:
    """Run-length encode: [64, 64, 128] -> [(64, 2), (128, 1)]."""
    groups: list[tuple[int, int]] = []
    for v in values:
        if groups and groups[-1][0] == v:
            groups[-1] = (v, groups[-1][1] + 1)
        else:
            groups.append((v, 1))
    return groups


# ----------------------------------------------------------------------------------------------
# Weights-file helpers shared by the pSp and identity loaders.

def read_weights_file(path: str | os.PathLike | None, *, what: str, config_key: str,
                      expected_file: str, mmap: bool = False) -> object:
    """Load ``path`` with ``torch.load(weights_only=True)`` on the CPU, or raise one clear error.

    ``what`` names the network, ``config_key`` the config entry that sets the path and
    ``expected_file`` the released file the user should put there; ``mmap`` maps the tensors
    from the file (:func:`models.checkpoint.safe_load`).
    """
    if path is None or not os.path.isfile(os.fspath(path)):
        raise WeightsFileError(
            f"{what} weights not found at {str(path)!r}: download the released {expected_file} "
            f"and point the config key `{config_key}` at it (nothing is downloaded at run time).")
    why = not_a_torch_file(path)
    if why is not None:
        raise WeightsFileError(f"{what} file {os.fspath(path)!r} is not a PyTorch checkpoint ({why}); "
                               f"expected {expected_file}.")
    try:
        return safe_load(os.fspath(path), mmap=mmap)   # weights_only=True plus the project's allow-list
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a usable weights file"
        raise WeightsFileError(
            f"{what} file {os.fspath(path)!r} could not be read as a PyTorch weights file "
            f"({type(exc).__name__}: {_first_line(exc)}); expected {expected_file}.") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, path: str | os.PathLike,
                what: str, hint: str = "", assign: bool = False) -> None:
    """``module.load_state_dict(state_dict, strict=True, assign=assign)`` with a one-sentence error
    on mismatch (``assign``: the module takes the file's tensors instead of copying them).

    The error names the file, the first few missing / unexpected keys and the first shape mismatch
    (expected vs found), plus an optional ``hint`` on what to change.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong_shape = [(k, tuple(own[k].shape), tuple(state_dict[k].shape)) for k in own
                   if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:3])})")
        if wrong_shape:
            k, exp, got = wrong_shape[0]
            parts.append(f"{len(wrong_shape)} shape mismatches (first: {k} expected {exp}, found {got})")
        raise WeightsFileError(
            f"{what} file {os.fspath(path)!r} does not match the network: {'; '.join(parts)}"
            + (f" - {hint}" if hint else "") + ".")
    module.load_state_dict(dict(state_dict), strict=True, assign=assign)


def freeze(module: nn.Module) -> None:
    """No parameter of ``module`` takes gradients; gradients still flow through it to its input."""
    for p in module.parameters():
        p.requires_grad_(False)
