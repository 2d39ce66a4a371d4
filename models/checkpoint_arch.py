"""The architecture a network's state dict implies, for checkpoints that record none
(:mod:`models.checkpoint`, docs/models.md, Checkpoints): the resolution from the number of
``convs`` (two per resolution above 4) or of noise buffers, style_dim and n_mlp from the mapping
network, channel multiplier and cap from the layer widths (64x64 layers have 256 * cm channels).
Missing keys raise ``KeyError``; the loaders turn it into their own message.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch


def _infer_multiplier(channels: Mapping[int, int]) -> tuple[float, int]:
    """(channel_multiplier, channel_max) that reproduce a {resolution: channels} table."""
    # ch[4] = min(cap, 512), so the widest layer is the cap (or an equivalent larger one).
    cmax = max(channels.values())
    # The spec's rule: 64x64 layers have 256 * cm channels; else any uncapped layer above 32.
    order = [64] + sorted(r for r in channels if r > 64)
    cm: float | None = None
    for r in order:
        if r in channels and channels[r] < cmax:
            cm = channels[r] / (16384 // r)
            break
    if cm is None:  # every layer is at the cap: any multiplier that reaches it is equivalent
        cm = 2.0
        while any(int(16384 // r * cm) < cmax for r in channels if r > 32):
            cm *= 2
    if float(cm).is_integer():
        cm = int(cm)
    return cm, cmax


def infer_generator_arch(sd: Mapping[str, torch.Tensor]) -> dict:
    """Generator constructor arguments implied by a state dict (exemplar slots from the size)."""
    n_convs = len({k.split(".")[1] for k in sd if k.startswith("convs.") and k.endswith(".conv.weight")})
    n_noise = len([k for k in sd if k.startswith("noises.noise_")])
    if n_convs:
        log_size = n_convs // 2 + 2
    elif n_noise:
        log_size = (n_noise - 1) // 2 + 2
    else:
        raise KeyError("no 'convs.*' or 'noises.*' keys")
    size = 2 ** log_size
    channels = {4: int(sd["conv1.conv.weight"].shape[1])} if "conv1.conv.weight" in sd else {}
    for k in range(log_size - 2):
        key = f"convs.{2 * k}.conv.weight"
        if key in sd:
            channels[2 ** (k + 3)] = int(sd[key].shape[1])
    arch: dict = {"size": size}
    if "style.1.weight" in sd:
        arch["style_dim"] = int(sd["style.1.weight"].shape[0])
        arch["n_mlp"] = len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)])
    if channels:
        arch["channel_multiplier"], arch["channel_max"] = _infer_multiplier(channels)
    arch["channels"] = channels
    return arch


def infer_discriminator_arch(sd: Mapping[str, torch.Tensor]) -> dict:
    """Discriminator constructor arguments implied by a state dict."""
    blocks = sorted({int(k.split(".")[1]) for k in sd
                     if k.startswith("encoder_convs.") and k.endswith(".conv2.1.weight")})
    if not blocks or "encoder_input_convs.0.weight" not in sd:
        raise KeyError("no 'encoder_input_convs.*' / 'encoder_convs.*.conv2' keys")
    size = 2 ** (len(blocks) + 2)
    channels = {size: int(sd["encoder_input_convs.0.weight"].shape[0])}
    for i in blocks:
        channels[size // 2 ** (i + 1)] = int(sd[f"encoder_convs.{i}.conv2.1.weight"].shape[0])
    cm, cmax = _infer_multiplier(channels)
    return {"size": size, "channel_multiplier": cm, "channel_max": cmax, "channels": channels}
