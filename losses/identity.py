"""Identity loss — EXE-GAN, Lu et al. 2025.

``L_id = 1 - cos(F(completed), F(exemplar))`` with ``F`` a frozen ArcFace backbone
(``models.IdentityNet``: images in [-1, 1], bilinear resize to 112x112 with
``align_corners=False`` as the authors' ``F.interpolate(x, size=112, mode='bilinear')``, and L2
normalisation inside). The batch reduction is the mean over samples, as theirs. We
L2-normalise the features again here, so the loss is a true cosine distance for any backbone
that returns unnormalised features; for ``IdentityNet`` it is a no-op. Per sample the
loss lies in [0, 2] (0 = same direction, 2 = opposite).

The paper applies it to the completed image without a weight map; an optional SVGL weight map
is supported (``weight_map``) for experiments.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .svgl import svgl

__all__ = ['IdentityLoss']


class IdentityLoss(nn.Module):
    """``forward(pred, exemplar=None, *, exemplar_feat=None, weight_map=None, reduction='mean')``.

    Args:
        pred: completed image [B, 3, H, W] in [-1, 1] (receives the gradient).
        exemplar: exemplar image [B, 3, H', W']; its features are computed without gradient.
        exemplar_feat: precomputed exemplar features [B, D] (e.g. ``loss.exemplar_features(ex)``
            once per batch), used instead of ``exemplar``.
        weight_map: optional SVGL map for ``pred`` ([B, 1, H, W]).
    Returns:
        the batch mean, or [B] with ``reduction='none'``.

    ``id_net`` is kept frozen and in eval mode, even when a parent module calls ``.train()``
    (its batch-norm statistics must not move).
    """

    def __init__(self, id_net):
        super().__init__()
        self.id_net = id_net
        self.id_net.requires_grad_(False)
        self.id_net.eval()

    def train(self, mode=True):
        super().train(mode)
        self.id_net.eval()
        return self

    @torch.no_grad()
    def exemplar_features(self, exemplar):
        """Normalised identity features [B, D] of the exemplar (no gradient)."""
        return F.normalize(self.id_net(exemplar).flatten(1), dim=1)

    def forward(self, pred, exemplar=None, *, exemplar_feat=None, weight_map=None,
                reduction='mean'):
        if (exemplar is None) == (exemplar_feat is None):
            raise ValueError('IdentityLoss: pass exactly one of exemplar or exemplar_feat.')
        if exemplar_feat is None:
            exemplar_feat = self.exemplar_features(exemplar)
        else:
            exemplar_feat = F.normalize(exemplar_feat.detach().flatten(1), dim=1)
        if weight_map is not None:
            pred = svgl(pred, weight_map)
        feat = F.normalize(self.id_net(pred).flatten(1), dim=1)  # [B, D]
        if feat.shape != exemplar_feat.shape:
            raise ValueError(f'IdentityLoss: features of pred {tuple(feat.shape)} and exemplar '
                             f'{tuple(exemplar_feat.shape)} differ in shape.')
        loss = 1 - (feat * exemplar_feat).sum(1)  # [B], in [0, 2]
        if reduction == 'none':
            return loss
        if reduction == 'mean':
            return loss.mean()
        raise ValueError(f"IdentityLoss: reduction must be 'mean' or 'none', got {reduction!r}.")
