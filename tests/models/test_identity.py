"""Tests for the ArcFace identity network (models/identity.py)."""
import pytest
import torch
import torchvision
from torch.nn import functional as F

from models.identity import IdentityNet, load_identity_net
from models.irse import WeightsFileError

TINY_IRSE = dict(width=16, units=(1, 1, 2, 1), feature_dim=32)


def _randomize_bn(module, seed=0):
    """Random batch-norm statistics / affine terms, so eval-mode use is actually checked."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return module


def _tiny_irse(seed=0):
    torch.manual_seed(seed)
    net = IdentityNet("ir_se50", **TINY_IRSE)
    _randomize_bn(net, seed)
    return net


def _images(b=2, size=112, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


def test_released_resnet101_layout_round_trip(tmp_path):
    torch.manual_seed(0)
    ref = _randomize_bn(torchvision.models.resnet101(num_classes=256)).eval()
    path = tmp_path / "Arcface.pth"
    torch.save(ref.state_dict(), path)
    net = load_identity_net(path, kind="resnet101", device="cpu")
    assert net.kind == "resnet101" and net.feature_dim == 256
    img = _images(1, 128)    # not 112: resized inside, as the authors' F.interpolate(x, size=112, mode='bilinear')
    with torch.no_grad():
        expected = F.normalize(ref(F.interpolate(img, size=112, mode="bilinear")), dim=1)
        other = F.normalize(ref(F.interpolate(img, size=112, mode="bilinear", align_corners=True)), dim=1)
        got = net(img)
    assert got.shape == (1, 256)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(1))
    # The check can tell the two resize conventions apart on these images.
    assert (other - expected).abs().max() > 100 * (got - expected).abs().max().clamp_min(1e-7)


def test_full_backbone_layouts():
    with torch.device("meta"):
        r101 = IdentityNet("resnet101")
        irse = IdentityNet("ir_se50")
        assert r101(torch.empty(2, 3, 256, 256)).shape == (2, 256)
        assert irse(torch.empty(2, 3, 256, 256)).shape == (2, 512)
        ref = torchvision.models.resnet101(num_classes=256)
    assert [(k, v.shape) for k, v in r101.backbone.state_dict().items()] == \
        [(k, v.shape) for k, v in ref.state_dict().items()]
    sd = irse.backbone.state_dict()
    # input layer 7 keys; 24 units x 15 (+6 for the 3 conv shortcuts); output layer 12
    assert len(sd) == 7 + 24 * 15 + 3 * 6 + 12
    assert sd["input_layer.0.weight"].shape == (64, 3, 3, 3)
    assert max(int(k.split(".")[1]) for k in sd if k.startswith("body.")) == 23
    assert sd["body.23.res_layer.5.fc2.weight"].shape == (512, 32, 1, 1)
    assert sd["body.21.shortcut_layer.0.weight"].shape == (512, 256, 1, 1)
    assert sd["output_layer.0.running_var"].shape == (512,)
    assert sd["output_layer.3.weight"].shape == (512, 512 * 7 * 7)
    assert sd["output_layer.4.running_mean"].shape == (512,)
    assert not any(k.startswith(("output_layer.1", "output_layer.2")) for k in sd)


def test_ir_se50_option_loads_its_own_file(tmp_path):
    net = _tiny_irse(seed=3)
    path = tmp_path / "model_ir_se50.pth"
    torch.save(net.backbone.state_dict(), path)
    loaded = load_identity_net(path, kind="ir_se50")
    assert loaded.feature_dim == 32
    img = _images(2, 96)
    torch.testing.assert_close(loaded(img), net(img), rtol=0, atol=0)
    # a DataParallel-style "module." prefix is accepted
    torch.save({"module." + k: v for k, v in net.backbone.state_dict().items()}, path)
    torch.testing.assert_close(load_identity_net(path, kind="ir_se50")(img), net(img), rtol=0, atol=0)


def test_features_unit_norm_and_cosine():
    net = _tiny_irse()
    a, b = _images(2, 112, seed=1), _images(2, 112, seed=2)
    fa, fa2, fb = net(a), net(a.clone()), net(b)
    torch.testing.assert_close(fa.norm(dim=1), torch.ones(2))
    torch.testing.assert_close((fa * fa2).sum(1), torch.ones(2))
    assert ((fa * fb).sum(1) < 0.9999).all()


def test_gradient_reaches_input_and_eval_is_kept():
    net = _tiny_irse()
    torch.nn.Sequential(net).train()
    net.train()
    assert not any(m.training for m in net.modules())   # dropout off, BN statistics frozen
    img = _images(2, 112).requires_grad_(True)
    f = net(img)
    torch.testing.assert_close(net(img), f)              # deterministic: dropout inactive
    (1 - (f[0] * f[1]).sum()).backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in net.parameters())


def test_missing_file_names_config_key_and_released_file(tmp_path):
    with pytest.raises(WeightsFileError, match="weights not found") as e:
        load_identity_net(tmp_path / "Arcface.pth")
    assert "pretrained.identity" in str(e.value) and "Arcface.pth" in str(e.value)
    with pytest.raises(WeightsFileError, match="model_ir_se50.pth"):
        load_identity_net(None, kind="ir_se50")
    with pytest.raises(WeightsFileError, match="identity_kind"):
        load_identity_net(tmp_path / "x.pth", kind="resnet50")


def test_wrong_files_are_reported(tmp_path):
    irse_path = tmp_path / "irse.pth"
    torch.save(_tiny_irse().backbone.state_dict(), irse_path)
    with pytest.raises(WeightsFileError, match=r"holds a ir_se50 network: set `pretrained\.identity_kind: ir_se50`"):
        load_identity_net(irse_path, kind="resnet101")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(WeightsFileError, match="is not a PyTorch checkpoint"):
        load_identity_net(garbage)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": _tiny_irse().backbone.state_dict(), "epoch": 3}, wrapped)
    with pytest.raises(WeightsFileError, match="not a plain state dict"):
        load_identity_net(wrapped, kind="ir_se50")
    sd = _tiny_irse().backbone.state_dict()
    del sd["output_layer.4.running_var"]
    broken = tmp_path / "broken.pth"
    torch.save(sd, broken)
    with pytest.raises(WeightsFileError, match=r"1 missing keys \(first: output_layer\.4\.running_var\)"):
        load_identity_net(broken, kind="ir_se50")
