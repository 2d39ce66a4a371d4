"""Attribute loss — EXE-GAN, Lu et al. 2025.

The style encoder E (pSp, frozen) maps the completed image and the exemplar to their exemplar
style codes; the loss pulls the completed image's codes to the exemplar's:

    L_attr = 1 / (B * |phi|_0 * D) * sum_b sum_i phi_i * ||w_bi - w^_bi||^2,
    w = E(SVGL(completed, M_r)),  w^ = E(exemplar)

with i over the code slots returned by ``style_encoder`` (``n_exemplar`` slots of dimension
D = 512), ``phi`` the optional 0/1 slot selection (all ones by default) and ``M_r`` the reverse
weight map ``(1 - M_w) * mask`` (see ``weight_maps.reverse_weight_map``), so that gradients
mostly reach the hole's centre. This is the paper's ``1/|phi|_0 sum_i phi_i ||w_i - w^_i||^2``
form divided by B * D as well, i.e. exactly ``F.mse_loss`` over the selected slots — the
element-wise mean the authors' MSE computes, to which lambda_attr = 0.1 is tuned.
"""
import torch
from torch import nn

from .svgl import svgl

__all__ = ['AttributeLoss']


class AttributeLoss(nn.Module):
    """MSE between style codes of the completed image and of the exemplar.

    ``forward(completed, exemplar=None, *, exemplar_codes=None, weight_map=None,
    reduction='mean')``.

    Args (constructor):
        style_encoder: module mapping [B, 3, H, W] in [-1, 1] to codes [B, n, D].
        slots: optional slot subset phi — a sequence of indices into the n returned slots, or a
            boolean sequence of length n. ``None`` uses every slot.
    Args (forward):
        completed: completed image [B, 3, H, W] (receives the gradient).
        exemplar: exemplar image; its codes are computed without gradient.
        exemplar_codes: precomputed exemplar codes [B, n, D] (``exemplar_codes(exemplar)``).
        weight_map: the SVGL map for ``completed`` — the reverse map ``M_r``.
    Returns:
        the mean over batch, selected slots and code dims, or [B] (mean over selected slots and
        dims) with ``reduction='none'``.

    The style encoder is kept frozen and in eval mode even when a parent calls ``.train()``.
    """

    def __init__(self, style_encoder, slots=None):
        super().__init__()
        self.style_encoder = style_encoder
        self.style_encoder.requires_grad_(False)
        self.style_encoder.eval()
        self.slots = None if slots is None else list(slots)
        if self.slots is not None and len(self.slots) == 0:
            raise ValueError('AttributeLoss: slots is empty; pass None to use every slot.')

    def train(self, mode=True):
        super().train(mode)
        self.style_encoder.eval()
        return self

    def _select(self, codes):
        if self.slots is None:
            return codes
        n = codes.shape[1]
        if all(isinstance(s, bool) for s in self.slots):
            if len(self.slots) != n:
                raise ValueError(f'AttributeLoss: boolean slot mask has length {len(self.slots)} '
                                 f'but the style encoder returns {n} slots.')
            idx = [i for i, keep in enumerate(self.slots) if keep]
            if not idx:
                raise ValueError('AttributeLoss: the boolean slot mask selects no slot.')
        else:
            idx = [int(s) for s in self.slots]
            bad = [i for i in idx if not 0 <= i < n]
            if bad:
                raise ValueError(f'AttributeLoss: slot indices {bad} out of range for {n} slots.')
        return codes[:, idx]

    @torch.no_grad()
    def exemplar_codes(self, exemplar):
        """Style codes [B, n, D] of the exemplar (no gradient)."""
        return self.style_encoder(exemplar)

    def forward(self, completed, exemplar=None, *, exemplar_codes=None, weight_map=None,
                reduction='mean'):
        if (exemplar is None) == (exemplar_codes is None):
            raise ValueError('AttributeLoss: pass exactly one of exemplar or exemplar_codes.')
        if exemplar_codes is None:
            exemplar_codes = self.exemplar_codes(exemplar)
        if weight_map is not None:
            completed = svgl(completed, weight_map)
        codes = self.style_encoder(completed)  # [B, n, D]
        if codes.shape != exemplar_codes.shape:
            raise ValueError(f'AttributeLoss: codes of the completed image {tuple(codes.shape)} '
                             f'and of the exemplar {tuple(exemplar_codes.shape)} differ in shape.')
        se = (self._select(codes) - self._select(exemplar_codes.detach())).pow(2)
        if reduction == 'none':
            return se.flatten(1).mean(1)
        if reduction == 'mean':
            return se.mean()
        raise ValueError(f"AttributeLoss: reduction must be 'mean' or 'none', got {reduction!r}.")
