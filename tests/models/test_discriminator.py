"""Tests of the EXE-GAN discriminator (models/discriminator.py, docs/models.md): the authors'
state-dict layout, output shape, the minibatch-stddev grouping against a direct computation, and
the residual block arithmetic."""
import math
from pathlib import Path

import pytest
import torch

from models.discriminator import Discriminator, minibatch_stddev
from models.stylegan2 import ResBlock

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize("size", [256, 512])
def test_discriminator_state_dict_matches_authors_keys(size):
    with torch.device("meta"):
        d = Discriminator(size, channel_multiplier=2)
    lines = [f"{k}\t{tuple(v.shape)}" for k, v in d.state_dict().items()]
    assert lines == (DATA / f"discriminator_{size}.keys.txt").read_text().splitlines()


def test_discriminator_256_parameter_count():
    with torch.device("meta"):
        d = Discriminator(256)
    assert sum(p.numel() for p in d.parameters()) == 28_864_129  # the authors report about 28.9M


@pytest.mark.parametrize("size,batch", [(16, 4), (32, 3), (64, 8)])
def test_forward_shape(size, batch):
    torch.manual_seed(0)
    d = Discriminator(size, channel_multiplier=0.0625, channel_max=32)
    out = d(torch.randn(batch, 3, size, size))
    assert out.shape == (batch, 1) and torch.isfinite(out).all()


def _stddev_direct(x, group_size=4):
    """Sample b is grouped with the samples j where j mod (B/G) == b mod (B/G)."""
    b = x.shape[0]
    g = min(b, group_size)
    m = b // g
    extra = torch.empty(b, 1, *x.shape[2:])
    for i in range(b):
        members = torch.stack([x[j] for j in range(b) if j % m == i % m])  # [G, C, H, W]
        std = torch.sqrt(members.var(0, unbiased=False) + 1e-8)
        extra[i] = std.mean()
    return torch.cat([x, extra], 1)


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 8, 12])
def test_minibatch_stddev_matches_direct_computation(batch):
    torch.manual_seed(batch)
    # Per-sample scales make every group's std different, so a wrong grouping shows.
    x = torch.randn(batch, 5, 4, 4) * torch.arange(1, batch + 1).view(-1, 1, 1, 1)
    out = minibatch_stddev(x)
    assert out.shape == (batch, 6, 4, 4)
    assert torch.allclose(out, _stddev_direct(x), atol=1e-6)
    if batch == 1:
        assert torch.allclose(out[:, 5], torch.full((1, 4, 4), 1e-4))  # sqrt(0 + 1e-8)


def test_minibatch_stddev_rejects_indivisible_batch():
    with pytest.raises(ValueError, match="divisible"):
        minibatch_stddev(torch.randn(6, 2, 4, 4))


def test_resblock_is_scaled_sum_of_main_and_skip():
    torch.manual_seed(0)
    block = ResBlock(4, 6)
    x = torch.randn(2, 4, 8, 8)
    expect = (block.conv2(block.conv1(x)) + block.skip(x)) / math.sqrt(2)
    assert torch.allclose(block(x), expect, atol=1e-6)
    assert len(block.skip) == 2  # blur + 1x1 stride-2 conv: no bias, no activation
    assert block.skip[1].bias is None and block.skip[1].stride == 2


def test_stddev_channel_reaches_the_logits():
    """The appended channel matters: scaling one sample's features changes the others' logits."""
    torch.manual_seed(0)
    d = Discriminator(16, channel_multiplier=0.0625, channel_max=16).eval()
    x = torch.randn(4, 3, 16, 16)
    base = d(x)
    y = x.clone()
    y[0] = y[0] * 3
    changed = d(y)
    assert not torch.allclose(base[1:], changed[1:])


def test_wrong_input_shape_is_refused():
    d = Discriminator(16, channel_multiplier=0.0625, channel_max=16)
    with pytest.raises(ValueError, match=r"\[B, 3, 16, 16\]"):
        d(torch.randn(2, 3, 32, 32))


def test_r1_double_backward_reaches_the_weights():
    """Lazy R1 differentiates dD/dx again w.r.t. D's weights."""
    torch.manual_seed(0)
    d = Discriminator(16, channel_multiplier=0.0625, channel_max=16)
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    (grad_x,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
    grad_x.pow(2).reshape(4, -1).sum(1).mean().backward()
    dead = [n for n, p in d.named_parameters()
            if n.endswith("weight") and (p.grad is None or not torch.any(p.grad != 0))]
    assert dead == []
