"""LPIPS loader and loss. The VGG16 trunk is a random torchvision VGG16 saved to a temp
file in the real format and loaded through ``load_lpips``."""
import logging
import os

import lpips
import pytest
import torch

from losses.perceptual import LPIPSLoss, LPIPSWeightsError, load_lpips


def _images(seed=0, B=2, S=64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, S, S, generator=g) * 2 - 1, g


def test_trunk_is_the_file_and_network_is_frozen(lpips_net, vgg_file):
    sd = lpips_net.net.state_dict()
    assert len(sd) == 26
    for name in ('0', '2'):
        assert torch.equal(sd[f'slice1.{name}.weight'], vgg_file.features[f'{name}.weight'])
    assert torch.equal(sd['slice3.14.bias'], vgg_file.features['14.bias'])
    assert torch.equal(sd['slice5.28.weight'], vgg_file.features['28.weight'])
    assert not lpips_net.training
    assert not any(p.requires_grad for p in lpips_net.parameters())


def test_heads_equal_the_shipped_file(lpips_net):
    path = os.path.join(os.path.dirname(lpips.__file__), 'weights', 'v0.1', 'vgg.pth')
    heads = torch.load(path, map_location='cpu', weights_only=True)
    own = lpips_net.state_dict()
    assert len(heads) == 5
    for k, v in heads.items():
        assert torch.equal(own[k], v), k


@pytest.mark.filterwarnings('ignore::UserWarning')  # torchvision's `pretrained=` deprecation
def test_equals_the_package_forward_for_the_same_backbone(lpips_net, vgg_file):
    # Reference: the package's own LPIPS with the trunk copied in module by module (not through
    # our key renaming).
    ref = lpips.LPIPS(net='vgg', version='0.1', pnet_rand=True, verbose=False)
    for s in range(1, 6):
        for idx, layer in getattr(ref.net, f'slice{s}').named_children():
            if isinstance(layer, torch.nn.Conv2d):
                layer.weight.data.copy_(vgg_file.features[f'{idx}.weight'])
                layer.bias.data.copy_(vgg_file.features[f'{idx}.bias'])
    ref.eval()
    x, g = _images(1)
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    with torch.no_grad():
        expected = ref.forward(x, y).flatten()
        assert torch.allclose(lpips_net(x, y).flatten(), expected, rtol=1e-5, atol=1e-7)
        M = torch.rand(2, 1, 64, 64, generator=g)
        ours = LPIPSLoss(lpips_net)(x, y, weight_map=M, reduction='none')
        assert torch.allclose(ours, expected, rtol=1e-5, atol=1e-7)  # SVGL leaves the value


def test_zero_for_identical_images_and_grows_with_noise(lpips_net):
    loss = LPIPSLoss(lpips_net)
    x, g = _images(2)
    noise = torch.randn(x.shape, generator=g)
    with torch.no_grad():
        assert torch.all(loss(x, x, reduction='none') == 0)
        values = [loss(x, x + s * noise, reduction='none') for s in (0.05, 0.2, 0.6)]
    for lo, hi in zip(values, values[1:]):
        assert torch.all(hi > lo)
    assert torch.all(values[0] > 0)


def test_gradient_goes_through_svgl(lpips_net):
    loss = LPIPSLoss(lpips_net)
    x, g = _images(3)
    target = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    M = torch.rand(2, 1, 64, 64, generator=g)
    plain = x.clone().requires_grad_(True)
    loss(plain, target).backward()
    weighted = x.clone().requires_grad_(True)
    loss(weighted, target, weight_map=M).backward()
    assert torch.allclose(weighted.grad, plain.grad * M, rtol=1e-5, atol=1e-12)


def test_loss_keeps_lpips_in_eval_mode(lpips_net):
    loss = LPIPSLoss(lpips_net)
    loss.train()
    assert loss.training and not lpips_net.training
    assert not any(m.training for m in lpips_net.modules())


def test_missing_path_is_a_clear_error():
    with pytest.raises(LPIPSWeightsError, match=r'loss\.lpips_vgg_path.*vgg16-397923af\.pth'):
        load_lpips(None)


def test_missing_file_is_an_error_even_with_random_backbone(tmp_path):
    with pytest.raises(LPIPSWeightsError, match=r'does not exist.*vgg16-397923af\.pth'):
        load_lpips(str(tmp_path / 'nope.pth'), allow_random_backbone=True)


def test_wrong_files_are_clear_errors(tmp_path):
    other = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7)}, other)
    with pytest.raises(LPIPSWeightsError, match='not a torchvision VGG16 state dict'):
        load_lpips(str(other))
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'this is not a torch file')
    with pytest.raises(LPIPSWeightsError, match='is not a PyTorch checkpoint'):
        load_lpips(str(garbage))
    bad_shape = tmp_path / 'bad_shape.pth'
    sd = {f'features.{i}.{p}': torch.zeros(2, 2, 3, 3) if p == 'weight' else torch.zeros(2)
          for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28) for p in ('weight', 'bias')}
    torch.save(sd, bad_shape)
    with pytest.raises(LPIPSWeightsError, match='wrong tensor shapes'):
        load_lpips(str(bad_shape))


def test_random_backbone_only_when_allowed_and_loudly(caplog):
    with caplog.at_level(logging.WARNING, logger='losses.perceptual'):
        net = load_lpips(None, allow_random_backbone=True)
    assert 'RANDOMLY INITIALISED VGG16' in caplog.text
    assert not net.training and not any(p.requires_grad for p in net.parameters())
