"""Fixtures for the metrics tests: a random FID Inception weights file in the real format.

The file is made by pytorch-fid's own FID network (``fid_inception_v3``), built without its
download: its weight fetcher is patched to hand back a randomly initialised torchvision
Inception-v3 state dict (same 566 keys). Batch-norm statistics are then calibrated on random
images so that activations keep a sane scale through the 94 random layers (with the default
init and unit running variance the pool features would be ~1e-7 and every FID ~0).
"""
from unittest import mock

import pytest
import torch


def _random_torchvision_state():
    import torchvision
    net = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                          init_weights=False)
    return net.state_dict()


def build_pytorch_fid_inception(state_dict):
    """pytorch-fid's FID Inception3, loaded (strictly, by its own code) from ``state_dict``."""
    import pytorch_fid.inception as pfi
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: state_dict):
        return pfi.fid_inception_v3()


def pytorch_fid_wrapper(state_dict):
    """pytorch-fid's ``InceptionV3`` feature wrapper (2048-d pool block) over ``state_dict``."""
    import pytorch_fid.inception as pfi
    net = build_pytorch_fid_inception(state_dict)
    with mock.patch.object(pfi, "fid_inception_v3", lambda: net):
        wrapper = pfi.InceptionV3([3], resize_input=True, normalize_input=True)
    return wrapper.eval()   # its constructor leaves batch norm in train mode


@pytest.fixture(scope="session")
def pytorch_fid_features():
    """``f(state_dict) -> callable``: pytorch-fid's feature wrapper over those weights."""
    return pytorch_fid_wrapper


@pytest.fixture(scope="session")
def inception_weights_file(tmp_path_factory):
    """Path of a random-weight FID Inception file in the pt_inception-2015-12-05 layout."""
    torch.manual_seed(1234)
    net = build_pytorch_fid_inception(_random_torchvision_state())
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None          # cumulative average: one batch -> its statistics
                m.reset_running_stats()
        net.train()
        net(torch.rand(2, 3, 299, 299) * 2 - 1)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 0.1
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
    net.eval()
    state = net.state_dict()
    assert len(state) == 566
    path = tmp_path_factory.mktemp("inception") / "pt_inception-random.pth"
    torch.save(state, path)
    return str(path)


@pytest.fixture(scope="session")
def random_inception(inception_weights_file):
    from metrics.inception import load_inception
    return load_inception(inception_weights_file, "cpu")


@pytest.fixture(scope="session")
def random_lpips():
    """LPIPS (VGG, v0.1 heads) with a random trunk, through the project's loader."""
    from losses.perceptual import load_lpips
    torch.manual_seed(0)
    return load_lpips(None, allow_random_backbone=True)
