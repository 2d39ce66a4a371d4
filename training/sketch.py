"""The training loop's side of the sketch-guided fine-tune (an application on top of EXE-GAN,
Lu et al., Neurocomputing 2025; the model is ``models/sketch.py``, the recipe docs/applications.md).

With ``sketch.enabled``:

* :func:`check_base` - before a run directory exists, the base checkpoint must be there;
* :func:`build_networks` - G, G_ema and D come from ``sketch.base_checkpoint`` (ours or the
  authors' format, read through ``models.checkpoint``) and G / G_ema are upgraded with
  ``models.sketch.upgrade_generator`` (zero sketch column: step 0 is the base model exactly);
  a resumed run builds the SketchGenerator shapes directly, the checkpoint then fills them;
* :func:`make_sketch` / :func:`make_gin` - the one gin builder of the loop's phases, the sample
  grids and (through :class:`EdgeSketchEXEGAN`) the in-loop metrics: edges of the ground truth
  inside the hole, emptied per sample with probability ``sketch.drop_prob`` when a seeded
  generator is given (training), never in evaluation (no generator: deterministic).

Without it, :func:`make_gin` is the paper's ``cat(real * (1 - mask), mask - 0.5)``.
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


def generator_kwargs(cfg) -> dict:
    m = cfg.model
    return dict(size=m.size, style_dim=m.style_dim, n_mlp=m.n_mlp, channel_multiplier=m.channel_multiplier,
                channel_max=m.channel_max, lr_mlp=m.lr_mlp,
                exemplar_slots=tuple(m.exemplar_slots) if m.exemplar_slots else None)


def build_networks(cfg, device, *, resuming: bool, log) -> tuple:
    """(G in train mode, G_ema in eval mode, D in train mode) on ``device``.

    Plain networks drawn from the current (seeded) torch RNG without a sketch; with one, from the
    base checkpoint (fresh run) or SketchGenerator shapes to be filled by the resumed checkpoint.
    """
    from models import Discriminator, Generator
    from models.checkpoint import load_discriminator, load_generator

    m = cfg.model
    kw = generator_kwargs(cfg)
    if not cfg.sketch.enabled or resuming:
        G = (SketchGenerator if cfg.sketch.enabled else Generator)(**kw).to(device)
        D = Discriminator(m.size, channel_multiplier=m.channel_multiplier, channel_max=m.channel_max).to(device)
        return G, None, D
    path = cfg.sketch.base_checkpoint
    expect = {k: v for k, v in kw.items() if k != "lr_mlp"}  # what the checkpoint must match
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


def make_gin(cfg, real: torch.Tensor, mask: torch.Tensor,
             g: Optional[np.random.Generator] = None) -> torch.Tensor:
    """The generator input of the loop and the sample grids (4 channels, 5 with a sketch)."""
    if not cfg.sketch.enabled:
        return torch.cat([real * (1 - mask), mask - 0.5], 1)
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
    """What the in-loop evaluation passes to ``metrics.protocol.evaluate``."""
    if cfg.sketch.enabled:
        return EdgeSketchEXEGAN(generator, style_encoder, cfg)
    return (generator, style_encoder)
