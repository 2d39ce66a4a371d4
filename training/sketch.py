"""The training loop's side of the sketch-guided fine-tune (an application on top of EXE-GAN,
Lu et al., Neurocomputing 2025; the model is ``models/sketch.py``, the recipe docs/applications.md).

An add-on: only a run with ``sketch.enabled`` imports this module (through
``training.config.sketch_addon``); a plain run builds its networks and its gin without it. It gives

* :func:`check_base` - before a run directory exists, the base checkpoint must be there;
* :func:`build_networks` - G, G_ema and D come from ``sketch.base_checkpoint`` (ours or the
  authors' format, read through ``models.checkpoint``) and G / G_ema are upgraded with
  ``models.sketch.upgrade_generator`` (zero sketch column: step 0 is the base model exactly);
  a resumed run builds the SketchGenerator shapes directly, the checkpoint then fills them;
* :func:`make_sketch` / :func:`gin_with_edges` - the gin builder of the loop's phases, the sample
  grids and (through :class:`EdgeSketchEXEGAN`) the in-loop metrics: edges of the ground truth
  inside the hole, emptied per sample with probability ``sketch.drop_prob`` when a seeded
  generator is given (training), never in evaluation (no generator: deterministic).
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch

from models.sketch import SketchEXEGAN, SketchGenerator, extract_edges, sketch_gin, upgrade_generator


def check_base(cfg) -> None:
    """One sentence when the fine-tune's base checkpoint is missing (before anything is created)."""
    from .config import ConfigError

    s = cfg.sketch
    if s.enabled and not (s.base_checkpoint and os.path.isfile(s.base_checkpoint)):
        raise ConfigError(f"sketch.base_checkpoint = {s.base_checkpoint!r} does not exist; a sketch "
                          f"fine-tune starts from a trained EXE-GAN checkpoint (with g, g_ema and d, "
                          f"e.g. runs/<run>/checkpoints/latest.pt), so point it at one.")


def build_networks(cfg, device, *, resuming: bool, log) -> tuple:
    """(G in train mode, G_ema in eval mode or None, D in train mode) on ``device``: from the
    base checkpoint (fresh run), or SketchGenerator shapes drawn as a plain run draws its
    networks, to be filled by the resumed checkpoint (G_ema None: the loop copies G)."""
    from models.checkpoint import load_discriminator, load_generator

    from .loop import build_networks as plain_networks, generator_kwargs

    m = cfg.model
    if resuming:
        G, D = plain_networks(cfg, device, generator_cls=SketchGenerator)
        return G, None, D
    path = cfg.sketch.base_checkpoint
    expect = {k: v for k, v in generator_kwargs(cfg).items() if k != "lr_mlp"}  # what the checkpoint must match
    G = upgrade_generator(load_generator(path, device, which="g", **expect)).train()
    G_ema = upgrade_generator(load_generator(path, device, which="g_ema", **expect)).eval()
    D = load_discriminator(path, device, which="d", size=m.size, channel_multiplier=m.channel_multiplier,
                           channel_max=m.channel_max).train()
    log.info("sketch fine-tune: G, G_ema and D from %s; G / G_ema upgraded with a zero-initialised "
             "sketch input channel", path)
    return G, G_ema, D


def make_sketch(cfg, real: torch.Tensor, mask: torch.Tensor,
                g: Optional[np.random.Generator] = None) -> torch.Tensor:
    """Training sketch [B, 1, S, S]: edges of ``real`` inside the hole; with ``g`` (the step's
    seeded stream) each sample's sketch is emptied with probability ``sketch.drop_prob``."""
    s = cfg.sketch
    sk = extract_edges(real, mask, threshold=s.edge_threshold, blur=s.edge_blur, thin=s.edge_thin)
    if g is not None and s.drop_prob > 0:
        keep = torch.from_numpy(g.random(real.shape[0]) >= s.drop_prob).to(sk.device, sk.dtype)
        sk = sk * keep.view(-1, 1, 1, 1)
    return sk


def gin_with_edges(cfg, real: torch.Tensor, mask: torch.Tensor,
             g: Optional[np.random.Generator] = None) -> torch.Tensor:
    """The fine-tune's generator input [B, 5, S, S] for the loop and the sample grids."""
    return sketch_gin(real, mask, make_sketch(cfg, real, mask, g))


class EdgeSketchEXEGAN(SketchEXEGAN):
    """The in-loop metrics' model: every completion gets the ground truth's edge sketch
    (:func:`make_sketch` without drops), as the loop's training steps do."""

    def __init__(self, generator, style_encoder, cfg):
        super().__init__(generator, style_encoder)
        self._cfg = cfg

    def complete(self, images, masks, codes, *, sketch=None, **kwargs):
        if sketch is None:
            sketch = make_sketch(self._cfg, images, masks)
        return super().complete(images, masks, codes, sketch=sketch, **kwargs)


def eval_model(cfg, generator, style_encoder):
    """What the in-loop evaluation of a fine-tune passes to ``metrics.protocol.evaluate``."""
    return EdgeSketchEXEGAN(generator, style_encoder, cfg)
