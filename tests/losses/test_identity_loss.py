"""Identity loss 1 - cos(F(pred), F(exemplar))."""
import pytest
import torch
import torch.nn.functional as F

from losses.identity import IdentityLoss


def _pair(seed=0, B=3, S=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, S, S, generator=g) * 2 - 1, torch.rand(B, 3, S, S, generator=g) * 2 - 1


def test_zero_for_identical_images(tiny_id_net):
    x, _ = _pair()
    loss = IdentityLoss(tiny_id_net)
    assert torch.allclose(loss(x, x, reduction='none'), torch.zeros(3), atol=1e-6)


def test_equals_cosine_distance_and_lies_in_0_2(tiny_id_net):
    x, y = _pair(1)
    loss = IdentityLoss(tiny_id_net)
    values = loss(x, y, reduction='none')
    expected = 1 - F.cosine_similarity(tiny_id_net(x), tiny_id_net(y), dim=1)
    assert torch.allclose(values, expected, atol=1e-6)
    assert torch.all(values >= 0) and torch.all(values <= 2)
    # The stand-in is odd (f(-x) = -f(x)): opposite features give the maximum, 2.
    assert torch.allclose(loss(x, -x, reduction='none'), torch.full((3,), 2.0), atol=1e-6)
    assert loss(x, y).item() == pytest.approx(values.mean().item(), rel=1e-6)


def test_precomputed_exemplar_features(tiny_id_net):
    x, y = _pair(2)
    loss = IdentityLoss(tiny_id_net)
    feat = tiny_id_net(y)  # unnormalised on purpose: the loss normalises itself
    assert torch.allclose(loss(x, exemplar_feat=feat), loss(x, y), atol=1e-7)
    assert torch.allclose(loss.exemplar_features(y).norm(dim=1), torch.ones(3), atol=1e-6)
    with pytest.raises(ValueError, match='exactly one'):
        loss(x, y, exemplar_feat=feat)


def test_weight_map_scales_the_gradient(tiny_id_net):
    x, y = _pair(3)
    M = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(9))
    loss = IdentityLoss(tiny_id_net)
    a = x.clone().requires_grad_(True)
    loss(a, y).backward()
    b = x.clone().requires_grad_(True)
    loss(b, y, weight_map=M).backward()
    assert torch.allclose(b.grad, a.grad * M, atol=1e-9)


def test_keeps_the_network_in_eval_mode(tiny_id_net):
    IdentityLoss(tiny_id_net).train()
    assert not tiny_id_net.training and not tiny_id_net.bn.training


def test_with_the_real_identity_net_loaded_from_a_file(tmp_path):
    identity = pytest.importorskip('models.identity')
    torch.manual_seed(0)
    tiny = identity.IdentityNet('resnet101', resnet_layers=(1, 1, 1, 1), feature_dim=32)
    path = tmp_path / 'Arcface.pth'
    torch.save(tiny.backbone.state_dict(), path)
    net = identity.load_identity_net(str(path), kind='resnet101')
    x, y = _pair(4, B=2, S=64)
    loss = IdentityLoss(net)
    assert torch.allclose(loss(x, x, reduction='none'), torch.zeros(2), atol=1e-6)
    values = loss(x, y, reduction='none')
    assert torch.allclose(values, 1 - (net(x) * net(y)).sum(1), atol=1e-6)
    assert torch.all(values >= 0) and torch.all(values <= 2)


@pytest.mark.parametrize('S', [64, 256])
def test_equals_the_authors_formula_with_the_loaded_file(tmp_path, S):
    """The authors' identity loss, written out: F.interpolate(x, size=112, mode='bilinear')
    (align_corners=False), the backbone, L2 normalisation, mean over the batch of 1 - cos."""
    from models.identity import IdentityNet, load_identity_net
    torch.manual_seed(3)
    backbone = IdentityNet('resnet101', resnet_layers=(1, 1, 1, 1), feature_dim=32).backbone
    path = tmp_path / 'Arcface.pth'
    torch.save(backbone.state_dict(), path)
    loss = IdentityLoss(load_identity_net(str(path), kind='resnet101'))
    x, y = _pair(5, B=3, S=S)

    def feats(img, align_corners=False):
        f = backbone(F.interpolate(img, size=112, mode='bilinear', align_corners=align_corners))
        return f / f.norm(dim=1, keepdim=True)
    with torch.no_grad():
        theirs = (1 - (feats(x) * feats(y)).sum(1)).mean()
        other = (1 - (feats(x, True) * feats(y, True)).sum(1)).mean()
        ours = loss(x, y)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
    assert (other - theirs).abs() > 100 * (ours - theirs).abs().clamp_min(1e-8)  # tells them apart
