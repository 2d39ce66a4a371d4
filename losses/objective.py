"""The generator objective of EXE-GAN (Lu et al. 2025), assembled in one place.

    L_G = lambda_adv   * mean_b softplus(-D(completed_b))                                (all)
        + lambda_lpips * sum_{b in S} LPIPS(SVGL(completed_b, M_w), real_b)              (S only)
        + lambda_id    * mean_b (1 - cos(ArcFace(completed_b), ArcFace(exemplar_b)))     (all)
        + lambda_attr  * MSE(E(SVGL(completed, M_r)), E(exemplar))  (mean over all elements)

with ``M_w`` the hole's confidence map, ``M_r = minmax((1 - M_w) * mask)`` its reverse map and
``S`` the self-exemplar samples (``self_mask``). Only the terms whose weight is > 0 are built,
so the LPIPS, identity and style networks are not needed (and not loaded) when their weight is
0. The lazy regularisers (R1, path length) are not part of this objective: the loop runs them in
their own phases (``losses/adversarial.py``).

LPIPS is a SUM over the self-exemplar samples, not a mean, as in the authors' code: they decide
once per batch whether the exemplar is the image itself (probability 1/5) and on those batches
add ``lambda_lpips * LPIPS(...).sum()`` over the whole batch; on the other batches nothing.
With the per-batch choice (``exemplar.per_sample: false``, ``self_mask`` all True or all False)
this objective is therefore exactly theirs: the LPIPS term is B times the batch mean on a
self-exemplar batch and 0 on a reversed one. With the per-sample choice (an option) it sums over
the samples that drew themselves, which has the same expected value and gradient per step. The
``terms['lpips']`` value logged is that sum (unweighted).
"""
import dataclasses
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn

from .adversarial import g_nonsaturating_loss
from .attribute import AttributeLoss
from .identity import IdentityLoss
from .perceptual import LPIPSLoss, load_lpips
from .weight_maps import ConfidenceMap, reverse_weight_map

__all__ = ['LossConfig', 'GeneratorObjective']

_WEIGHT_MAPS = (None, 'confidence', 'reverse')


@dataclass
class LossConfig:
    """Loss weights and regularisation schedule (config section ``loss``); paper defaults."""
    lambda_adv: float = 1.0      # non-saturating G loss on the completed image
    lambda_id: float = 0.1       # identity loss (ArcFace cosine)
    lambda_lpips: float = 0.5    # LPIPS summed over self-exemplar samples, SVGL with M_w
    lambda_attr: float = 0.1     # attribute loss (style-encoder MSE), SVGL with the reverse map
    r1_gamma: float = 10.0       # D reg: r1_gamma / 2 * R1 * d_reg_every
    d_reg_every: int = 16
    path_weight: float = 2.0     # G reg: path_weight * g_reg_every * penalty
    g_reg_every: int = 4
    path_decay: float = 0.01     # running-mean decay of the path length
    path_batch_shrink: int = 2   # the loop runs the path-length reg on B // path_batch_shrink
    lpips_vgg_path: Optional[str] = None  # torchvision vgg16-397923af.pth
    allow_random_backbone: bool = False   # tests/demo only: random LPIPS trunk, loud warning
    attr_slots: Optional[List[int]] = None  # slot subset phi for the attribute loss (None = all)
    id_weight_map: Optional[str] = None     # None (paper) | 'confidence' | 'reverse'

    def __post_init__(self):
        for name in ('lambda_adv', 'lambda_id', 'lambda_lpips', 'lambda_attr', 'r1_gamma',
                     'path_weight'):
            if getattr(self, name) < 0:
                raise ValueError(f'loss.{name} must be >= 0, got {getattr(self, name)}.')
        for name in ('d_reg_every', 'g_reg_every', 'path_batch_shrink'):
            if int(getattr(self, name)) < 1:
                raise ValueError(f'loss.{name} must be >= 1, got {getattr(self, name)}.')
        if self.id_weight_map not in _WEIGHT_MAPS:
            raise ValueError(f'loss.id_weight_map must be one of {_WEIGHT_MAPS}, got '
                             f'{self.id_weight_map!r}.')

    @classmethod
    def from_dict(cls, d):
        """Build from a plain dict (the YAML ``loss`` section); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f'Unknown loss config keys {unknown}; known keys: {sorted(names)}.')
        return cls(**d)


def _as_config(cfg):
    if cfg is None:
        return LossConfig()
    if isinstance(cfg, LossConfig):
        return cfg
    if isinstance(cfg, dict):
        return LossConfig.from_dict(cfg)
    raise TypeError(f'Expected a LossConfig or dict, got {type(cfg).__name__}.')


class GeneratorObjective(nn.Module):
    """``forward(...) -> (total, terms)``: the weighted generator loss and its unweighted terms.

    Constructor: ``GeneratorObjective(cfg, *, lpips=None, id_net=None, style_encoder=None)``
    with ``cfg`` a ``LossConfig`` (or dict), ``lpips`` an ``lpips.LPIPS`` from ``load_lpips``,
    ``id_net`` a ``models.IdentityNet`` and ``style_encoder`` a ``models.StyleEncoder``. A network
    is required only when its weight is > 0 and ignored otherwise. ``from_config`` also loads
    LPIPS from ``cfg.lpips_vgg_path``.

    ``forward(fake_pred, completed, real, exemplar, mask, self_mask, exemplar_codes=None,
    exemplar_id=None)``:
        fake_pred: D(completed) logits [B, 1].
        completed: ``real * (1 - mask) + G(...) * mask`` [B, 3, H, W] in [-1, 1].
        real, exemplar: [B, 3, H, W] in [-1, 1] (no gradient).
        mask: [B, 1, H, W], 1 = hole.
        self_mask: bool [B], True where the exemplar is the image itself.
        exemplar_codes / exemplar_id: optional precomputed style codes / identity features of
            the exemplar (else computed here without gradient).
    Returns ``total`` (scalar with graph) and ``terms``: detached scalars ``adv``, ``lpips``,
    ``id``, ``attr`` (only the built ones; unweighted, so ``total = sum lambda_k * terms[k]``)
    and ``total``.

    The objective holds frozen networks only; it has nothing to checkpoint.
    """

    def __init__(self, cfg=None, *, lpips=None, id_net=None, style_encoder=None):
        super().__init__()
        self.cfg = cfg = _as_config(cfg)
        self.weights = {}
        if cfg.lambda_adv > 0:
            self.weights['adv'] = cfg.lambda_adv
        self.lpips = self.identity = self.attribute = None
        if cfg.lambda_lpips > 0:
            if lpips is None:
                raise ValueError(f'loss.lambda_lpips = {cfg.lambda_lpips} needs an LPIPS network: '
                                 f'pass lpips=load_lpips(...) or set loss.lambda_lpips=0.')
            self.lpips = LPIPSLoss(lpips)
            self.weights['lpips'] = cfg.lambda_lpips
        if cfg.lambda_id > 0:
            if id_net is None:
                raise ValueError(f'loss.lambda_id = {cfg.lambda_id} needs an identity network: '
                                 f'pass id_net=models.load_identity_net(...) or set '
                                 f'loss.lambda_id=0.')
            self.identity = IdentityLoss(id_net)
            self.weights['id'] = cfg.lambda_id
        if cfg.lambda_attr > 0:
            if style_encoder is None:
                raise ValueError(f'loss.lambda_attr = {cfg.lambda_attr} needs the style encoder: '
                                 f'pass style_encoder=models.load_style_encoder(...) or set '
                                 f'loss.lambda_attr=0.')
            self.attribute = AttributeLoss(style_encoder, slots=cfg.attr_slots)
            self.weights['attr'] = cfg.lambda_attr
        self.confidence = ConfidenceMap()

    @classmethod
    def from_config(cls, cfg=None, *, id_net=None, style_encoder=None, device='cpu'):
        """Like the constructor, loading LPIPS from ``cfg.lpips_vgg_path`` when its weight > 0."""
        cfg = _as_config(cfg)
        lpips = None
        if cfg.lambda_lpips > 0:
            lpips = load_lpips(cfg.lpips_vgg_path, allow_random_backbone=cfg.allow_random_backbone,
                               device=device)
        return cls(cfg, lpips=lpips, id_net=id_net, style_encoder=style_encoder).to(device)

    @property
    def terms(self):
        """Names of the built terms, in the order they are summed."""
        return list(self.weights)

    def _needs_maps(self):
        return (self.lpips is not None or self.attribute is not None
                or (self.identity is not None and self.cfg.id_weight_map is not None))

    def forward(self, fake_pred, completed, real, exemplar, mask, self_mask,
                exemplar_codes=None, exemplar_id=None):
        B = completed.shape[0]
        if completed.dim() != 4 or completed.shape[1] != 3:
            raise ValueError(f'GeneratorObjective: completed must be [B, 3, H, W], got '
                             f'{tuple(completed.shape)}.')
        for name, t in (('real', real), ('exemplar', exemplar)):
            if t is not None and t.shape != completed.shape:
                raise ValueError(f'GeneratorObjective: {name} has shape {tuple(t.shape)}, '
                                 f'completed has {tuple(completed.shape)}.')
        if mask.shape != (B, 1) + tuple(completed.shape[2:]):
            raise ValueError(f'GeneratorObjective: mask must be [B, 1, H, W] = '
                             f'{[B, 1] + list(completed.shape[2:])}, got {list(mask.shape)}.')
        # Kept where it is: the training loop passes it on the host, so that selecting the
        # self-exemplar samples below needs no device synchronisation.
        self_mask = torch.as_tensor(self_mask).reshape(-1).bool()
        if self_mask.numel() != B:
            raise ValueError(f'GeneratorObjective: self_mask must have {B} entries, got '
                             f'{self_mask.numel()}.')

        M_w = M_r = None
        if self._needs_maps():
            M_w = self.confidence(mask.to(completed.dtype))  # [B, 1, H, W], no grad
            M_r = reverse_weight_map(mask.to(completed.dtype), M_w)

        values = {}
        if 'adv' in self.weights:
            values['adv'] = g_nonsaturating_loss(fake_pred)
        if self.lpips is not None:
            idx = self_mask.nonzero().flatten()
            if idx.numel() > 0:
                idx = idx.to(completed.device, non_blocking=True)
                # The authors' reduction: the SUM over the (self-exemplar) batch, not the mean.
                values['lpips'] = self.lpips(completed[idx], real[idx], weight_map=M_w[idx],
                                             reduction='sum')
            else:
                values['lpips'] = completed.new_zeros(())
        if self.identity is not None:
            id_map = {None: None, 'confidence': M_w, 'reverse': M_r}[self.cfg.id_weight_map]
            if exemplar_id is not None:
                values['id'] = self.identity(completed, exemplar_feat=exemplar_id,
                                             weight_map=id_map)
            else:
                values['id'] = self.identity(completed, exemplar, weight_map=id_map)
        if self.attribute is not None:
            if exemplar_codes is not None:
                values['attr'] = self.attribute(completed, exemplar_codes=exemplar_codes,
                                                weight_map=M_r)
            else:
                values['attr'] = self.attribute(completed, exemplar, weight_map=M_r)

        total = completed.new_zeros(())
        for name, w in self.weights.items():
            total = total + w * values[name]
        terms = {k: v.detach() for k, v in values.items()}
        terms['total'] = total.detach()
        return total, terms
