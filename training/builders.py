"""The trained networks of a run and their optimiser settings, built from the config: G and D
(``models/generator.py``, ``models/discriminator.py``; paper Sec. 3.1, 3.3), Adam's
implementation flags and the opt-in NHWC memory layout.

Shared by the Trainer (``training/trainer.py``) and the sketch add-on (``training/sketch.py``),
which builds the same shapes with its own generator class.
"""
from __future__ import annotations

import torch

from models import Discriminator, Generator

from .config import Config


def generator_kwargs(cfg: Config) -> dict:
    """The Generator's constructor arguments from the ``model`` section."""
    m = cfg.model
    return dict(size=m.size, style_dim=m.style_dim, n_mlp=m.n_mlp, channel_multiplier=m.channel_multiplier,
                channel_max=m.channel_max, lr_mlp=m.lr_mlp,
                exemplar_slots=tuple(m.exemplar_slots) if m.exemplar_slots else None)


def discriminator_kwargs(cfg: Config) -> dict:
    """The Discriminator's constructor arguments from the ``model`` section."""
    m = cfg.model
    return dict(size=m.size, channel_multiplier=m.channel_multiplier, channel_max=m.channel_max)


def build_networks(cfg: Config, device, generator_cls=Generator) -> tuple:
    """(G, D) in train mode on ``device``, drawn from the current (seeded) torch RNG, G first."""
    G = generator_cls(**generator_kwargs(cfg)).to(device)
    D = Discriminator(**discriminator_kwargs(cfg)).to(device)
    return G, D


def adam_impl(cfg: Config, device: torch.device) -> dict:
    """Adam's implementation flags: on CUDA the multi-tensor ("foreach") kernels, which is
    PyTorch's own default there, or the single fused kernel with train.fused_adam; the same
    update up to float rounding. On CPU PyTorch's default."""
    if device.type != "cuda":
        return {}
    return {"fused": True} if cfg.train.fused_adam else {"foreach": True}


@torch.no_grad()
def set_memory_format(module: torch.nn.Module, memory_format=torch.channels_last) -> None:
    """Every 4-D parameter and buffer of ``module`` in ``memory_format`` (NHWC by default), in
    place (the Parameter objects stay, so optimizers and DDP keep theirs).
    ``Module.to(memory_format=...)`` refuses the modulated convolutions' 5-D weights."""
    for t in list(module.parameters()) + list(module.buffers()):
        if t.ndim == 4:
            t.data = t.data.contiguous(memory_format=memory_format)


def requires_grad(module: torch.nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)
