"""The assembled generator objective: only terms with weight > 0, total = weighted sum,
LPIPS only on self-exemplar samples."""
import pytest
import torch

from losses.adversarial import g_nonsaturating_loss
from losses.attribute import AttributeLoss
from losses.identity import IdentityLoss
from losses.objective import GeneratorObjective, LossConfig
from losses.perceptual import LPIPSLoss, LPIPSWeightsError
from losses.weight_maps import confidence_map, reverse_weight_map

B, S = 4, 64


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(B, 3, S, S, generator=g) * 2 - 1
    exemplar = real.flip(0)
    mask = torch.zeros(B, 1, S, S)
    for b in range(B):
        y, x = 8 + 4 * b, 12 + 2 * b
        mask[b, :, y:y + 28, x:x + 30] = 1
    pred = torch.rand(B, 3, S, S, generator=g) * 2 - 1
    completed = (real * (1 - mask) + pred * mask).requires_grad_(True)
    fake_pred = torch.randn(B, 1, generator=g).requires_grad_(True)
    self_mask = torch.tensor([True, False, True, False])
    exemplar = torch.where(self_mask[:, None, None, None], real, exemplar)
    return fake_pred, completed, real, exemplar, mask, self_mask


def test_config_defaults_are_the_papers():
    c = LossConfig()
    assert (c.lambda_adv, c.lambda_id, c.lambda_lpips, c.lambda_attr) == (1.0, 0.1, 0.5, 0.1)
    assert (c.r1_gamma, c.d_reg_every, c.path_weight, c.g_reg_every, c.path_decay) == (
        10.0, 16, 2.0, 4, 0.01)
    with pytest.raises(ValueError, match='Unknown loss config keys'):
        LossConfig.from_dict({'lambda_idd': 0.1})
    with pytest.raises(ValueError, match='lambda_id must be >= 0'):
        LossConfig(lambda_id=-1)


def test_only_adversarial_needs_no_networks():
    cfg = dict(lambda_id=0, lambda_lpips=0, lambda_attr=0)
    obj = GeneratorObjective.from_config(cfg)  # no LPIPS path needed: LPIPS is not built
    assert obj.terms == ['adv']
    assert obj.lpips is None and obj.identity is None and obj.attribute is None
    fake_pred, completed, real, exemplar, mask, self_mask = _batch()
    total, terms = obj(fake_pred, completed, real, exemplar, mask, self_mask)
    assert set(terms) == {'adv', 'total'}
    assert torch.allclose(total, g_nonsaturating_loss(fake_pred))
    assert not terms['adv'].requires_grad


def test_a_network_for_a_zero_weight_is_ignored(tiny_id_net):
    obj = GeneratorObjective(dict(lambda_lpips=0, lambda_attr=0, lambda_id=0), id_net=tiny_id_net)
    assert obj.identity is None and obj.terms == ['adv']


def test_missing_network_for_a_positive_weight_is_a_clear_error(tiny_id_net):
    with pytest.raises(ValueError, match=r'loss\.lambda_id = 0\.1 needs an identity network'):
        GeneratorObjective(dict(lambda_lpips=0, lambda_attr=0))
    with pytest.raises(ValueError, match=r'loss\.lambda_attr = 0\.1 needs the style encoder'):
        GeneratorObjective(dict(lambda_lpips=0), id_net=tiny_id_net)
    with pytest.raises(ValueError, match=r'loss\.lambda_lpips = 0\.5 needs an LPIPS network'):
        GeneratorObjective(dict(lambda_id=0, lambda_attr=0))
    with pytest.raises(LPIPSWeightsError, match=r'loss\.lpips_vgg_path'):
        GeneratorObjective.from_config(dict(lambda_id=0, lambda_attr=0))


def test_full_objective_is_the_weighted_sum(lpips_net, tiny_id_net, tiny_style_encoder):
    cfg = LossConfig(lambda_adv=1.0, lambda_id=0.3, lambda_lpips=0.5, lambda_attr=0.7)
    obj = GeneratorObjective(cfg, lpips=lpips_net, id_net=tiny_id_net,
                             style_encoder=tiny_style_encoder)
    assert obj.terms == ['adv', 'lpips', 'id', 'attr']
    fake_pred, completed, real, exemplar, mask, self_mask = _batch(1)
    total, terms = obj(fake_pred, completed, real, exemplar, mask, self_mask)
    weighted = sum(w * terms[k] for k, w in
                   (('adv', 1.0), ('lpips', 0.5), ('id', 0.3), ('attr', 0.7)))
    assert torch.allclose(total.detach(), weighted, rtol=1e-6)
    assert torch.equal(terms['total'], total.detach())

    # Each term equals its loss module called directly.
    M_w = confidence_map(mask)
    with torch.no_grad():
        per_sample = LPIPSLoss(lpips_net)(completed, real, reduction='none')
        assert torch.allclose(terms['lpips'], per_sample[self_mask].sum(), rtol=1e-5)
        assert torch.allclose(terms['id'], IdentityLoss(tiny_id_net)(completed, exemplar),
                              rtol=1e-6)
        assert torch.allclose(terms['attr'],
                              AttributeLoss(tiny_style_encoder)(completed, exemplar), rtol=1e-6)
    # Precomputed exemplar features / codes give the same total.
    total2, _ = obj(fake_pred, completed, real, exemplar, mask, self_mask,
                    exemplar_codes=tiny_style_encoder(exemplar),
                    exemplar_id=tiny_id_net(exemplar))
    assert torch.allclose(total2, total, rtol=1e-6)

    # Gradients: only the attribute path reaches the pixels through the reverse map.
    obj_attr = GeneratorObjective(dict(lambda_adv=0, lambda_id=0, lambda_lpips=0, lambda_attr=1),
                                  style_encoder=tiny_style_encoder)
    c = completed.detach().clone().requires_grad_(True)
    obj_attr(fake_pred, c, real, exemplar, mask, self_mask)[0].backward()
    ref = completed.detach().clone().requires_grad_(True)
    AttributeLoss(tiny_style_encoder)(ref, exemplar).backward()
    assert torch.allclose(c.grad, ref.grad * reverse_weight_map(mask, M_w), atol=1e-9)


def test_lpips_only_reaches_self_exemplar_samples(lpips_net):
    obj = GeneratorObjective(dict(lambda_adv=0, lambda_id=0, lambda_attr=0), lpips=lpips_net)
    assert obj.terms == ['lpips']
    fake_pred, completed, real, exemplar, mask, self_mask = _batch(2)
    total, terms = obj(fake_pred, completed, real, exemplar, mask, self_mask)
    total.backward()
    g = completed.grad.flatten(1).abs().sum(1)
    assert torch.all(g[~self_mask] == 0) and torch.all(g[self_mask] > 0)
    # LPIPS gradients are weighted by M_w: zero outside the hole.
    assert torch.all(completed.grad[mask.expand_as(completed) == 0] == 0)
    # No self-exemplar sample: the term is 0 and nothing is computed.
    total0, terms0 = obj(fake_pred, completed, real, exemplar, mask, torch.zeros(B, dtype=bool))
    assert terms0['lpips'].item() == 0 and total0.item() == 0


def test_objective_train_keeps_networks_in_eval(lpips_net, tiny_id_net, tiny_style_encoder):
    obj = GeneratorObjective(LossConfig(), lpips=lpips_net, id_net=tiny_id_net,
                             style_encoder=tiny_style_encoder).train()
    assert obj.training
    assert not lpips_net.training and not tiny_id_net.training
    assert not tiny_style_encoder.training


def test_rejects_bad_shapes():
    obj = GeneratorObjective(dict(lambda_id=0, lambda_lpips=0, lambda_attr=0))
    fake_pred, completed, real, exemplar, mask, self_mask = _batch()
    with pytest.raises(ValueError, match='mask must be'):
        obj(fake_pred, completed, real, exemplar, mask[:, :, :32], self_mask)
    with pytest.raises(ValueError, match='self_mask must have 4 entries'):
        obj(fake_pred, completed, real, exemplar, mask, self_mask[:2])
