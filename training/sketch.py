"""The training loop's side of the sketch-guided fine-tune (an application on top of EXE-GAN,
Lu et al., Neurocomputing 2025; the model is ``models/sketch.py``, the recipe docs/applications.md).

An add-on: only a run with ``sketch.enabled`` imports this module (the Trainer chooses it once,
``training.trainer.sketch_addon``, and hands it to the evaluation); a plain run builds its
networks and its gin without it. It gives

* :func:`build_networks` - G, G_ema and D come from ``sketch.base_checkpoint`` (ours or the
  authors' format, read once with ``models.checkpoint.safe_load`` and handed to its loaders) and
  G / G_ema are upgraded with
  ``models.sketch.upgrade_generator`` (zero sketch column: step 0 is the base model exactly);
  a resumed run builds the SketchGenerator shapes directly, the checkpoint then fills them;
* :func:`make_sketch` / :func:`gin_with_edges` - the gin builder of the loop's phases, the sample
  grids and (through :class:`EdgeSketchEXEGAN`) the in-loop metrics: edges of the ground truth
  inside the hole, emptied per sample with probability ``sketch.drop_prob`` when a seeded
  generator is given (training), never in evaluation (no generator: deterministic).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from models import Discriminator
from models.checkpoint import CheckpointError, CheckpointMismatchError, load_generator, safe_load
from models.sketch import SketchEXEGAN, SketchGenerator, extract_edges, sketch_gin, upgrade_generator

from .builders import build_networks as plain_networks, discriminator_kwargs, generator_kwargs


def _state_dict(base: dict, path: str, which: str) -> dict:
    sd = base.get(which) if isinstance(base, dict) else None
    if not isinstance(sd, dict):
        raise CheckpointError(f"sketch.base_checkpoint {path} has no '{which}' state dict; a sketch "
                              f"fine-tune starts from a training checkpoint with g, g_ema and d.")
    return sd


def _load_strict(model: torch.nn.Module, sd: dict, path: str, which: str) -> None:
    own = model.state_dict()
    bad = sorted(set(own) ^ set(sd)) + [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointMismatchError(
            f"sketch.base_checkpoint {path} ['{which}'] does not fit the model section of this config "
            f"(first differing entries {bad[:3]}); set model.* to the base run's architecture.")
    model.load_state_dict(sd, strict=True)


def build_networks(cfg, device, *, resuming: bool, log, base: Optional[dict] = None) -> tuple:
    """(G in train mode, G_ema in eval mode or None, D in train mode) on ``device``: from the
    base checkpoint (fresh run; ``base`` is its content when the caller read it already, else it
    is read here, once), or SketchGenerator shapes drawn as a plain run draws its networks, to be
    filled by the resumed checkpoint (G_ema None: the loop copies G)."""
    if resuming:
        G, D = plain_networks(cfg, device, generator_cls=SketchGenerator)
        return G, None, D
    path = cfg.sketch.base_checkpoint
    base = safe_load(path) if base is None else base
    expect = {k: v for k, v in generator_kwargs(cfg).items() if k != "lr_mlp"}  # what the file must match
    G = upgrade_generator(load_generator(path, device, which="g", checkpoint=base, **expect)).train()
    G_ema = upgrade_generator(load_generator(path, device, which="g_ema", checkpoint=base, **expect)).eval()
    # drawn, then overwritten (the caller forks the RNG around this); load_discriminator has no
    # checkpoint= (it would read the file again)
    D = Discriminator(**discriminator_kwargs(cfg)).to(device)
    _load_strict(D, _state_dict(base, path, "d"), path, "d")
    log.info("sketch fine-tune: G, G_ema and D from %s; G / G_ema upgraded with a zero-initialised "
             "sketch input channel", path)
    return G, G_ema, D.train()


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
    """What the in-loop evaluation of a fine-tune passes to ``metrics.eval_loop.evaluate``."""
    return EdgeSketchEXEGAN(generator, style_encoder, cfg)
