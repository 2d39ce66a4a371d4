"""The project's generator objective equals a literal transcription of the authors'.

``_authors_objective`` below is written from the authors' recipe as docs/losses.md states it, not
from ``losses/``: it shares no code with the project beyond the frozen networks themselves (the
raw ArcFace backbone, the pSp encoder, the LPIPS network). What it transcribes:

- adversarial: ``softplus(-D(completed)).mean()``;
- identity: both images resized with ``F.interpolate(x, size=112, mode='bilinear')`` (PyTorch's
  default ``align_corners=False``), backbone, L2-normalised, ``(1 - cos).mean()``;
- attribute: ``MSE(E(SVGL(completed, M_r)), E(exemplar))`` over all elements, ``M_r`` the
  min-max normalised ``(1 - M_w) * mask`` (the batch shares one mask, as theirs does);
- LPIPS: decided per batch; on a self-exemplar batch ``LPIPS(SVGL(completed, M_w), real).sum()``
  (the SUM over the batch), on a reversed batch nothing;
- ``M_w``: GMCNN's confidence map (65x65 kernel of sigma 1/40, 7 iterations of reflect-pad 32 +
  2-D convolution, times the mask), written out with scipy's normal CDF;
- SVGL: identity forward, gradient times the map;
- weights: the authors' README command ``--embedding_weight 0.1 --id_loss_weight 0.1
  --percept_loss_weight 0.5`` (adversarial 1), read here from ``configs/celebahq_256.yaml``.

Both the value and the gradient reaching the generator output are compared, for a self-exemplar
batch and a reversed batch, with every term on.
"""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm

from losses.objective import GeneratorObjective
from models.identity import IdentityNet
from models.psp import StyleEncoder
from training.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
S = 64  # > 2 * 32 + 1: the authors' single reflect pad of 32 is defined


# ---------------------------------------------------------------------------------------------
# The authors' formulas, transcribed

def _authors_svgl(x, weight_map):
    # Forward: exactly x (x - x.detach() is exactly 0). Backward: gradient * weight_map.
    return x.detach() + (x - x.detach()) * weight_map


def _authors_confidence_map(mask, size=65, sigma=1.0 / 40, iters=7):
    interval = (2 * sigma + 1.0) / size
    x = np.linspace(-sigma - interval / 2, sigma + interval / 2, size + 1)
    k1 = np.diff(norm.cdf(x))
    kernel_raw = np.sqrt(np.outer(k1, k1))
    kernel = torch.from_numpy(kernel_raw / kernel_raw.sum()).to(mask.dtype)[None, None]
    init = 1 - mask
    conf = None
    for _ in range(iters):
        padded = F.pad(init, (size // 2,) * 4, mode='reflect')
        conf = F.conv2d(padded, kernel) * mask
        init = conf + (1 - mask)
    return conf


def _authors_reverse_map(mask, M_w):
    r = (1 - M_w) * mask
    return (r - r.min()) / (r.max() - r.min())


def _authors_identity(backbone, completed, exemplar):
    def feats(x):
        x = F.interpolate(x, size=112, mode='bilinear')
        f = backbone(x)
        return f / f.norm(dim=1, keepdim=True)
    with torch.no_grad():
        f_ex = feats(exemplar)
    return (1 - (feats(completed) * f_ex).sum(1)).mean()


def _authors_objective(nets, weights, fake_pred, completed, real, exemplar, mask, self_batch):
    M_w = _authors_confidence_map(mask)
    M_r = _authors_reverse_map(mask, M_w)
    loss = weights['adv'] * F.softplus(-fake_pred).mean()
    with torch.no_grad():
        codes_ex = nets['encoder'](exemplar)
    codes = nets['encoder'](_authors_svgl(completed, M_r))
    loss = loss + weights['attr'] * F.mse_loss(codes, codes_ex)
    loss = loss + weights['id'] * _authors_identity(nets['arcface'], completed, exemplar)
    if self_batch:
        loss = loss + weights['lpips'] * nets['lpips'](_authors_svgl(completed, M_w), real).sum()
    return loss


# ---------------------------------------------------------------------------------------------

def _randomize_bn(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return module


@pytest.fixture(scope='module')
def nets(lpips_net):
    torch.manual_seed(5)
    arcface = _randomize_bn(IdentityNet('resnet101', resnet_layers=(1, 1, 1, 1), feature_dim=32), 1)
    encoder = _randomize_bn(StyleEncoder(start=1, n=3, n_styles=6, style_dim=16, width=8,
                                         units=(1, 1, 1, 1), input_size=32), 2)
    with torch.no_grad():
        encoder.latent_avg.normal_()
    return dict(identity_net=arcface, arcface=arcface.backbone, encoder=encoder, lpips=lpips_net)


def _paper_loss_config():
    cfg = load_config(os.path.join(REPO, 'configs', 'celebahq_256.yaml')).loss
    weights = dict(adv=cfg.lambda_adv, attr=cfg.lambda_attr, id=cfg.lambda_id,
                   lpips=cfg.lambda_lpips)
    # The authors' README command; adversarial weight 1 (no flag).
    assert weights == dict(adv=1.0, attr=0.1, id=0.1, lpips=0.5)
    return cfg, weights


def _inputs(B, seed):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(B, 3, S, S, generator=g) * 2 - 1
    mask = torch.zeros(1, 1, S, S)
    mask[..., 10:44, 14:52] = 1                  # a rectangle
    mask[..., 40:46, 4:60] = 1                   # and a stroke across it
    mask = mask.expand(B, -1, -1, -1).contiguous()  # one mask for the batch, as the authors
    pred = (torch.rand(B, 3, S, S, generator=g) * 2 - 1).requires_grad_(True)
    d_w = torch.randn(1, 3, S, S, generator=g) / S
    return real, mask, pred, d_w


@pytest.mark.parametrize('B', [2, 4])
@pytest.mark.parametrize('self_batch', [True, False], ids=['self_exemplar_batch', 'reversed_batch'])
def test_objective_equals_the_authors_transcription(nets, B, self_batch):
    cfg, weights = _paper_loss_config()
    objective = GeneratorObjective(cfg, lpips=nets['lpips'], id_net=nets['identity_net'],
                                   style_encoder=nets['encoder'])
    assert objective.terms == ['adv', 'lpips', 'id', 'attr']  # every term on

    real, mask, pred, d_w = _inputs(B, seed=10 + B)
    exemplar = real if self_batch else real.flip(0)
    self_mask = torch.full((B,), self_batch)

    def run(fn):
        p = pred.detach().clone().requires_grad_(True)
        completed = real * (1 - mask) + p * mask
        fake_pred = (completed * d_w).sum((1, 2, 3))[:, None]  # a fixed differentiable "D"
        loss = fn(fake_pred, completed)
        loss.backward()
        return loss.detach(), p.grad

    ours, ours_grad = run(lambda fp, c: objective(fp, c, real, exemplar, mask, self_mask)[0])
    theirs, theirs_grad = run(lambda fp, c: _authors_objective(nets, weights, fp, c, real, exemplar,
                                                               mask, self_batch))
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-4, atol=1e-8)
    assert theirs_grad.abs().max() > 0

    # The LPIPS part really is there on a self-exemplar batch (and is the batch SUM): without it
    # the totals differ by far more than the tolerance above.
    with torch.no_grad():
        completed = real * (1 - mask) + pred * mask
        lpips_sum = nets['lpips'](completed, real).sum()
    _, terms = objective((completed * d_w).sum((1, 2, 3))[:, None], completed, real, exemplar,
                         mask, self_mask)
    if self_batch:
        torch.testing.assert_close(terms['lpips'], lpips_sum, rtol=1e-6, atol=0)
        assert weights['lpips'] * lpips_sum * (1 - 1 / B) > 1e3 * 1e-6 * theirs.abs()
    else:
        assert terms['lpips'].item() == 0
