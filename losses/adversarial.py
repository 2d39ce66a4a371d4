"""Adversarial losses and lazy regularisers — StyleGAN2 (Karras et al. 2020) as EXE-GAN trains it.

- D main: logistic loss ``softplus(D(fake)) + softplus(-D(real))``.
- G main: non-saturating loss ``softplus(-D(fake))``.
- D reg: R1 penalty ``E ||grad_x D(x)||^2`` on real images (gamma = 10, every 16 steps).
- G reg: path-length regularisation with a running mean of the path length (weight 2, every 4
  steps).

Lazy regularisation is explicit: the functions here return the *plain* penalties; the loop runs
them only every ``interval`` steps and multiplies by the weight *and* the interval, so that on
average the regulariser has the same strength as if it ran every step:

    D reg (every d_reg_every steps):
        real.requires_grad_(True); real_pred = D(real)
        r1 = r1_penalty(real_pred, real)
        (r1_gamma / 2 * r1 * d_reg_every + 0 * real_pred[0]).sum().backward()
    G reg (every g_reg_every steps):
        fake, w = G(..., return_latents=True)   # w [B, n_latent, 512]
        penalty, path_mean, lengths = path_reg(fake, w)
        (path_weight * g_reg_every * penalty).backward()

(``r1_loss`` and ``PathLengthRegularizer.weighted`` compute those weighted terms.) The
``0 * real_pred[0]`` term keeps every D parameter in the graph, which DistributedDataParallel
needs. The optimiser's lr and betas are rescaled by ``interval / (interval + 1)`` in the loop.

The input gradients are ``torch.autograd.grad(..., inputs=image or latents)``: that pass runs
no weight-gradient convolution (autograd skips what no requested input needs; StyleGAN2-ADA's
``no_weight_gradients`` context is not needed, docs/ops.md), while the double-backward graph
still reaches the weights when the penalty is back-propagated.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['d_logistic_loss', 'g_nonsaturating_loss', 'r1_penalty', 'r1_loss',
           'PathLengthRegularizer']


def d_logistic_loss(real_pred, fake_pred):
    """Discriminator logistic loss: ``mean softplus(-D(real)) + mean softplus(D(fake))``."""
    return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()


def g_nonsaturating_loss(fake_pred):
    """Generator non-saturating loss: ``mean softplus(-D(fake))``."""
    return F.softplus(-fake_pred).mean()


def r1_penalty(real_pred, real_img):
    """Plain R1 penalty: mean over samples of ``||d sum(D(real)) / d real_i||^2``.

    ``real_img`` must have ``requires_grad=True`` and ``real_pred = D(real_img)`` (or of an
    augmented copy of it: the gradient is taken with respect to the tensor passed here).
    The result keeps its graph (``create_graph=True``) so it can be back-propagated into D.
    """
    if not real_img.requires_grad:
        raise ValueError('r1_penalty: real_img.requires_grad is False; call '
                         'real_img.requires_grad_(True) before computing D(real_img).')
    (grad,) = torch.autograd.grad(outputs=real_pred.sum(), inputs=real_img, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def r1_loss(real_pred, real_img, r1_gamma=10.0, d_reg_every=16):
    """The lazily weighted R1 term the loop back-propagates: ``gamma/2 * R1 * interval``.

    Returns ``(loss, r1)`` with ``r1`` the plain penalty (detach it for logging).
    """
    r1 = r1_penalty(real_pred, real_img)
    # 0 * real_pred keeps D's last layer in the graph for DDP (StyleGAN2 does the same).
    loss = r1_gamma / 2 * r1 * d_reg_every + 0 * real_pred.reshape(-1)[0]
    return loss, r1


class PathLengthRegularizer(nn.Module):
    """StyleGAN2 path-length regulariser with its running mean ``a``.

    ``forward(fake_img, latents, noise=None) -> (penalty, path_mean, path_lengths)``:
        noise ~ N(0, 1) / sqrt(H * W)  (same shape as the image)
        g = d sum(fake_img * noise) / d latents            # [B, n_latent, 512]
        path_lengths = sqrt(mean_over_slots(sum_over_dims(g^2)))   # [B]
        a <- a + decay * (mean(path_lengths) - a)          # running mean, updated in place
        penalty = mean((path_lengths - a)^2)               # with the updated a

    ``latents`` are the w's the image was generated from (``Generator(..., return_latents=True)``)
    and must be part of its graph. The running mean lives in the buffer ``mean_path_length`` so
    it is saved and restored with ``state_dict``; under DDP each process keeps its own (as in
    StyleGAN2), average it across processes only for logging.
    """

    def __init__(self, decay=0.01):
        super().__init__()
        if not 0.0 < decay <= 1.0:
            raise ValueError(f'PathLengthRegularizer: decay must be in (0, 1], got {decay}.')
        self.decay = decay
        self.register_buffer('mean_path_length', torch.zeros(()))

    def forward(self, fake_img, latents, noise=None):
        if latents.dim() != 3:
            raise ValueError(f'PathLengthRegularizer: expected latents [B, n_latent, dim], got '
                             f'shape {tuple(latents.shape)}.')
        if noise is None:
            noise = torch.randn_like(fake_img)
        noise = noise / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
        (grad,) = torch.autograd.grad(outputs=(fake_img * noise).sum(), inputs=latents,
                                      create_graph=True)
        path_lengths = grad.pow(2).sum(2).mean(1).sqrt()  # [B]

        mean = self.mean_path_length
        new_mean = mean + self.decay * (path_lengths.detach().mean().to(mean.dtype) - mean)
        self.mean_path_length.copy_(new_mean)
        penalty = (path_lengths - new_mean.to(path_lengths.dtype)).pow(2).mean()
        return penalty, new_mean.detach().clone(), path_lengths.detach()

    @staticmethod
    def weighted(penalty, path_weight=2.0, g_reg_every=4, fake_img=None):
        """The lazily weighted term ``path_weight * g_reg_every * penalty``.

        With ``fake_img`` given, adds ``0 * fake_img[0, 0, 0, 0]`` so the whole generator stays
        in the graph for DDP (needed when the regulariser runs on a shrunk batch).
        """
        loss = path_weight * g_reg_every * penalty
        if fake_img is not None:
            loss = loss + 0 * fake_img[0, 0, 0, 0]
        return loss
