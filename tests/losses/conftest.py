"""Fixtures for the loss tests: a random VGG16 saved as a real torchvision state-dict file, the
LPIPS network loaded from it through ``load_lpips``, and tiny stand-ins with the call contracts
of ``models.IdentityNet`` (img -> [B, D]) and ``models.StyleEncoder`` (img -> [B, n, D])."""
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn


@pytest.fixture(scope='session')
def vgg_file(tmp_path_factory):
    """A random torchvision VGG16 saved like ``vgg16-397923af.pth`` (full state dict)."""
    import torchvision
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None)
    path = tmp_path_factory.mktemp('vgg') / 'vgg16-397923af.pth'
    torch.save(vgg.state_dict(), path)
    features = {k: v.clone() for k, v in vgg.features.state_dict().items()}
    return types.SimpleNamespace(path=str(path), features=features)


@pytest.fixture(scope='session')
def lpips_net(vgg_file):
    from losses.perceptual import load_lpips
    return load_lpips(vgg_file.path)


class TinyIdNet(nn.Module):
    """Stand-in for models.IdentityNet: [B, 3, H, W] -> [B, 16] (deliberately NOT normalised, and
    odd: f(-x) = -f(x), so the loss between x and -x is exactly 2). Has a BatchNorm to check that
    the losses keep it in eval mode."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8, affine=False, track_running_stats=True)
        self.fc = nn.Linear(8 * 4 * 4, 16, bias=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, img):
        x = F.interpolate(img, size=(16, 16), mode='bilinear', align_corners=True)
        x = self.bn(self.conv(x))  # eval BN without affine and zero mean stays odd
        x = F.adaptive_avg_pool2d(x, 4)
        return 3.0 * self.fc(x.flatten(1))


class TinyStyleEncoder(nn.Module):
    """Stand-in for models.StyleEncoder: [B, 3, H, W] -> codes [B, 4, 8] (+ a 'latent_avg')."""

    def __init__(self, n=4, dim=8):
        super().__init__()
        self.n, self.dim = n, dim
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 4 * 4, n * dim)
        self.register_buffer('latent_avg', torch.randn(n, dim))
        self.requires_grad_(False)
        self.eval()

    def forward(self, img):
        x = torch.tanh(self.bn(self.conv(img)))
        x = F.adaptive_avg_pool2d(x, 4)
        return self.fc(x.flatten(1)).view(-1, self.n, self.dim) + self.latent_avg


@pytest.fixture
def tiny_id_net():
    torch.manual_seed(1)
    return TinyIdNet()


@pytest.fixture
def tiny_style_encoder():
    torch.manual_seed(2)
    return TinyStyleEncoder()
