"""Tests of the StyleGAN2 blocks and the EXE-GAN multi-style generator (models/stylegan2.py,
models/generator.py) against docs/models.md: state-dict layout of the authors' networks,
block arithmetic against independent per-sample references, the styles pipeline (mapping,
truncation, mixing, exemplar codes, global code) and the decoder wiring."""
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from models.generator import Generator, default_exemplar_slots
from models.stylegan2 import (Blur, ConvLayer, EqualLinear, ModulatedConv2d, ToRGB, Upsample,
                              channel_table)

DATA = Path(__file__).resolve().parents[1] / "data"


def state_lines(module):
    return [f"{k}\t{tuple(v.shape)}" for k, v in module.state_dict().items()]


def randomize(module, seed=0):
    """Non-zero noise strengths and biases, so every path shows up in the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.3)
            elif name.endswith("bias") and "modulation" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return module


def tiny_generator(size=32, style_dim=16, channel_multiplier=0.0625, channel_max=32, **kw):
    torch.manual_seed(0)
    g = Generator(size, style_dim=style_dim, n_mlp=2, channel_multiplier=channel_multiplier,
                  channel_max=channel_max, **kw)
    return randomize(g).eval()


def tiny_inputs(g, batch=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    s, d = g.size, g.style_dim
    gin = torch.randn(batch, 4, s, s, generator=gen)
    codes = torch.randn(batch, g.n_exemplar, d, generator=gen)
    z = torch.randn(batch, d, generator=gen)
    noise = g.make_noise(generator=gen)
    return gin, codes, z, noise


# ------------------------------------------------------------------------ layout of the authors' nets
@pytest.mark.parametrize("size", [256, 512])
def test_generator_state_dict_matches_authors_keys(size):
    with torch.device("meta"):  # shapes only: no 80M random numbers to draw
        g = Generator(size, channel_multiplier=2)
    ref = (DATA / f"generator_{size}.keys.txt").read_text().splitlines()
    assert state_lines(g) == ref


def test_generator_256_parameter_count():
    with torch.device("meta"):
        g = Generator(256)
    n = sum(p.numel() for p in g.parameters())
    assert n == 79_177_378  # the authors report about 79.2M
    # Buffers: 13 noise maps and the blur kernels are part of the state dict, not parameters.
    assert len(g.state_dict()) - len(list(g.parameters())) == 13 + 6 + 6 + 6


def test_default_exemplar_slots_follow_the_paper():
    assert default_exemplar_slots(256) == (4, 10)
    assert default_exemplar_slots(512) == (4, 12)
    assert default_exemplar_slots(1024) == (4, 14)
    for size in (8, 16, 32, 64, 128):
        start, n = default_exemplar_slots(size)
        n_latent = 2 * int(math.log2(size)) - 2
        assert n >= 1 and start + n == n_latent


def test_exemplar_slots_are_validated():
    with pytest.raises(ValueError, match="exemplar_slots"):
        Generator(16, style_dim=8, n_mlp=1, channel_max=8, exemplar_slots=(4, 3))


def test_channel_table_matches_stylegan2():
    assert channel_table(1024, 2) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256,
                                      256: 128, 512: 64, 1024: 32}
    assert channel_table(256, 1, 128) == {4: 128, 8: 128, 16: 128, 32: 128, 64: 128, 128: 128, 256: 64}


# --------------------------------------------------------------------------------------- blocks
def test_equal_linear_equalized_lr_arithmetic():
    torch.manual_seed(0)
    lin = EqualLinear(6, 4, bias_init=0.5, lr_mul=0.01, activation="fused_lrelu")
    assert torch.all(lin.bias == 0.5)
    x = torch.randn(3, 6)
    pre = x @ (lin.weight * 0.01 / math.sqrt(6)).t() + lin.bias * 0.01
    assert torch.allclose(lin(x), F.leaky_relu(pre, 0.2) * math.sqrt(2), atol=1e-6)
    plain = EqualLinear(6, 4, bias_init=1.0)
    assert torch.allclose(plain(x), x @ (plain.weight / math.sqrt(6)).t() + 1.0, atol=1e-6)
    # Stored weights are N(0, 1) / lr_mul.
    big = EqualLinear(256, 256, lr_mul=0.01)
    assert abs(big.weight.std().item() - 100.0) < 5.0


def _blur_ref(x, kernel_1d, pad, gain):
    k = torch.tensor(kernel_1d, dtype=torch.float32)
    k = torch.outer(k, k)
    k = k / k.sum() * gain
    c = x.shape[1]
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    return F.conv2d(x, k.flip(0, 1).expand(c, 1, *k.shape), groups=c)


@pytest.mark.parametrize("upsample,demodulate,k", [(False, True, 3), (True, True, 3), (False, False, 1)])
def test_modulated_conv_matches_per_sample_reference(upsample, demodulate, k):
    torch.manual_seed(0)
    layer = ModulatedConv2d(5, 7, k, style_dim=6, demodulate=demodulate, upsample=upsample)
    x, style = torch.randn(3, 5, 8, 8), torch.randn(3, 6)
    out = layer(x, style)
    for b in range(3):
        s = layer.modulation(style[b:b + 1])[0]  # [in]
        w = layer.weight[0] * layer.scale * s.view(1, -1, 1, 1)  # [out, in, k, k]
        if demodulate:
            w = w / torch.sqrt(w.pow(2).sum([1, 2, 3], keepdim=True) + 1e-8)
        if upsample:
            y = F.conv_transpose2d(x[b:b + 1], w.transpose(0, 1), stride=2)
            y = _blur_ref(y, [1, 3, 3, 1], (1, 1), gain=4)
        else:
            y = F.conv2d(x[b:b + 1], w, padding=k // 2)
        assert torch.allclose(out[b:b + 1], y, atol=1e-5), b
    assert out.shape[-1] == (16 if upsample else 8)


def test_modulation_starts_near_identity():
    layer = ModulatedConv2d(4, 4, 3, style_dim=8)
    assert torch.all(layer.modulation.bias == 1.0)


def test_upsample_and_blur_are_normalised_fir_filters():
    up = Upsample([1, 3, 3, 1])
    assert up.pad == (2, 1)
    out = up(torch.ones(1, 2, 6, 6))
    assert out.shape == (1, 2, 12, 12)
    assert torch.allclose(out[..., 2:-2, 2:-2], torch.ones(1, 2, 8, 8))  # constant kept inside
    x = torch.randn(1, 3, 9, 9)
    blur = Blur([1, 3, 3, 1], pad=(2, 1))
    assert torch.allclose(blur(x), _blur_ref(x, [1, 3, 3, 1], (2, 1), gain=1), atol=1e-6)
    assert "kernel" in dict(blur.named_buffers())


def test_downsampling_conv_layer_is_blur_then_stride2_conv():
    torch.manual_seed(0)
    layer = ConvLayer(3, 5, 3, downsample=True)
    x = torch.randn(2, 3, 16, 16)
    conv = layer[1]
    ref = F.conv2d(_blur_ref(x, [1, 3, 3, 1], (2, 2), gain=1), conv.weight * conv.scale, stride=2)
    ref = F.leaky_relu(ref + layer[2].bias.view(1, -1, 1, 1), 0.2) * math.sqrt(2)
    assert torch.allclose(layer(x), ref, atol=1e-5)
    assert layer(x).shape == (2, 5, 8, 8)


def test_to_rgb_adds_upsampled_skip():
    torch.manual_seed(0)
    to_rgb = ToRGB(4, 6)
    x, style, skip = torch.randn(2, 4, 8, 8), torch.randn(2, 6), torch.randn(2, 3, 4, 4)
    expect = to_rgb(x, style) + to_rgb.upsample(skip)
    assert torch.allclose(to_rgb(x, style, skip), expect, atol=1e-6)


# ------------------------------------------------------------------------------------ generator
@pytest.mark.parametrize("size", [16, 32, 64])
def test_forward_shapes(size):
    g = tiny_generator(size)
    gin, codes, z, _ = tiny_inputs(g, batch=3)
    image, w = g(gin, codes, [z], return_latents=True)
    assert image.shape == (3, 3, size, size)
    assert w.shape == (3, g.n_latent, g.style_dim)
    assert g.n_latent == 2 * int(math.log2(size)) - 2
    assert torch.isfinite(image).all()


def test_tiny_channel_table_transitions():
    g = tiny_generator(64)  # cm 1/16, cap 32: 32 channels up to 32x32, 16 at 64x64
    assert g.channels == {4: 32, 8: 32, 16: 32, 32: 32, 64: 16}
    assert g.convs[-1].conv.weight.shape[1:3] == (16, 16)
    assert g.down_from_big[0].weight.shape == (16, 4, 1, 1)
    assert g.final_linear[0].weight.shape == (2 * g.style_dim, 32 * 16)
    assert g.conv1.conv.modulation.weight.shape == (32, 3 * g.style_dim)


def test_fixed_noise_and_z_reproduce_exactly():
    g = tiny_generator(32)
    gin, codes, z, noise = tiny_inputs(g)
    a = g(gin, codes, [z], noise=noise)
    b = g(gin, codes, [z], noise=noise)
    assert torch.equal(a, b)
    # Fresh noise (non-zero noise strengths) changes the image: the noise path is live.
    assert not torch.allclose(g(gin, codes, [z]), a)
    # randomize_noise=False uses the stored buffers.
    buffers = [getattr(g.noises, f"noise_{i}") for i in range(g.num_layers)]
    assert torch.equal(g(gin, codes, [z], randomize_noise=False), g(gin, codes, [z], noise=buffers))


def test_exemplar_codes_replace_only_their_slots():
    g = tiny_generator(32)
    gin, codes, z, noise = tiny_inputs(g)
    s0, s1 = g.exemplar_start, g.exemplar_start + g.n_exemplar
    image, w = g(gin, codes, [z], noise=noise, return_latents=True)
    w_map = g.style(z)
    assert torch.equal(w[:, s0:s1], codes)
    assert torch.allclose(w[:, :s0], w_map.unsqueeze(1).expand(-1, s0, -1))
    assert torch.allclose(w[:, s1:], w_map.unsqueeze(1).expand(-1, g.n_latent - s1, -1))

    other = codes + 1.0
    assert not torch.allclose(g(gin, other, [z], noise=noise), image, atol=1e-4)
    # lambda = 1 keeps the mapped w: the codes have no effect at all.
    keep = g(gin, codes, [z], noise=noise, random_lambda=1.0)
    assert torch.equal(keep, g(gin, other, [z], noise=noise, random_lambda=1.0))
    # lambda blends linearly; a per-sample lambda tensor is accepted.
    _, w_half = g(gin, codes, [z], noise=noise, random_lambda=0.25, return_latents=True)
    assert torch.allclose(w_half[:, s0:s1], 0.25 * w_map.unsqueeze(1) + 0.75 * codes, atol=1e-6)
    lam = torch.tensor([1.0, 0.0])
    _, w_lam = g(gin, codes, [z], noise=noise, random_lambda=lam, return_latents=True)
    assert torch.allclose(w_lam[0, s0:s1], w_map[0].expand(g.n_exemplar, -1))
    assert torch.equal(w_lam[1, s0:s1], codes[1])


def test_truncation_zero_gives_the_w_avg_image():
    g = tiny_generator(32)
    gin, codes, z, noise = tiny_inputs(g)
    w_avg = g.mean_latent(256, generator=torch.Generator().manual_seed(3))
    assert w_avg.shape == (1, g.style_dim)
    out = g(gin, codes, [z], truncation=0.0, truncation_latent=w_avg, noise=noise)
    ref = g(gin, codes, [w_avg.expand(2, -1)], input_is_latent=True, noise=noise)
    assert torch.allclose(out, ref, atol=1e-6)
    # psi = 0.5 sits halfway (checked on w); psi < 1 without w_avg is a clear error.
    _, w = g(gin, codes, [z], truncation=0.5, truncation_latent=w_avg, noise=noise, return_latents=True)
    assert torch.allclose(w[:, 0], w_avg + 0.5 * (g.style(z) - w_avg), atol=1e-6)
    with pytest.raises(ValueError, match="truncation_latent"):
        g(gin, codes, [z], truncation=0.5)


def test_style_mixing_matches_manual_w_plus():
    g = tiny_generator(32)
    gin, codes, z1, noise = tiny_inputs(g)
    z2 = torch.randn(2, g.style_dim, generator=torch.Generator().manual_seed(9))
    k = 3
    out, w = g(gin, codes, [z1, z2], inject_index=k, noise=noise, return_latents=True)
    w1, w2 = g.style(z1), g.style(z2)
    manual = torch.cat([w1.unsqueeze(1).expand(-1, k, -1),
                        w2.unsqueeze(1).expand(-1, g.n_latent - k, -1)], 1)
    ref = g(gin, codes, [manual], input_is_latent=True, noise=noise)
    assert torch.allclose(out, ref, atol=1e-6)
    s0 = g.exemplar_start
    assert torch.allclose(w[:, :k], manual[:, :k]) and torch.allclose(w[:, k:s0], manual[:, k:s0])


def test_random_inject_index_is_drawn_from_1_to_n_latent_minus_1():
    g = tiny_generator(16)  # n_latent 6
    gin, codes, z1, noise = tiny_inputs(g, batch=1)
    z2 = torch.randn(1, g.style_dim, generator=torch.Generator().manual_seed(9))
    w2 = g.style(z2)
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        _, w = g(gin, codes, [z1, z2], random_lambda=1.0, noise=noise, return_latents=True)
        switch = [i for i in range(g.n_latent) if torch.allclose(w[:, i], w2, atol=1e-6)]
        assert switch == list(range(switch[0], g.n_latent))
        seen.add(switch[0])
    assert seen <= set(range(1, g.n_latent)) and len(seen) > 2


def _capture(module, store, key, what):
    def hook(_, inputs, output):
        store[key] = (inputs[0] if what == "in" else output).detach().clone()
    return module.register_forward_hook(hook)


def test_decoder_wiring_slots_encoder_features_and_global_code():
    g = tiny_generator(32)
    gin, codes, z, noise = tiny_inputs(g)
    got, hooks = {}, []
    hooks.append(_capture(g.conv1.conv.modulation, got, "mod G.conv1", "in"))
    hooks.append(_capture(g.to_rgb1.conv.modulation, got, "mod to_rgb1", "in"))
    for j, c in enumerate(g.convs):
        hooks.append(_capture(c.conv.modulation, got, f"mod conv{j}", "in"))
        hooks.append(_capture(c, got, f"conv{j} in", "in"))
        hooks.append(_capture(c, got, f"conv{j} out", "out"))
    for j, t in enumerate(g.to_rgbs):
        hooks.append(_capture(t.conv.modulation, got, f"mod rgb{j}", "in"))
    for j in range(0, len(g.encoder_convs), 2):
        hooks.append(_capture(g.encoder_convs[j], got, f"enc{j}", "out"))
    hooks.append(_capture(g.final_layer, got, "final_layer", "out"))
    hooks.append(_capture(g.final_linear, got, "global", "out"))
    hooks.append(_capture(g.final_transfer, got, "transfer", "out"))
    hooks.append(_capture(g.conv1, got, "G.conv1 in", "in"))
    _, w = g(gin, codes, [z], noise=noise, return_latents=True)
    for h in hooks:
        h.remove()

    glob = got["global"]
    assert glob.shape == (2, 2 * g.style_dim)

    def style(i):
        return torch.cat([w[:, i], glob], 1)

    # Slot use: conv1 w[0], to_rgb1 w[1]; block k: w[2k+1], w[2k+2], w[2k+3].
    assert torch.allclose(got["mod G.conv1"], style(0))
    assert torch.allclose(got["mod to_rgb1"], style(1))
    for k in range(len(g.to_rgbs)):
        assert torch.allclose(got[f"mod conv{2 * k}"], style(2 * k + 1))
        assert torch.allclose(got[f"mod conv{2 * k + 1}"], style(2 * k + 2))
        assert torch.allclose(got[f"mod rgb{k}"], style(2 * k + 3))
    # The decoder starts from the encoder's 4x4 feature plus final_transfer(global).
    assert torch.allclose(got["G.conv1 in"], got["final_layer"] + got["transfer"].view(2, -1, 4, 4))
    # After each upsampling conv the encoder feature of that resolution is added.
    enc = {got[f"enc{j}"].shape[-1]: got[f"enc{j}"] for j in range(0, len(g.encoder_convs), 2)}
    assert sorted(enc) == [8, 16, 32]
    for k in range(len(g.to_rgbs)):
        up_out = got[f"conv{2 * k} out"]
        assert torch.allclose(got[f"conv{2 * k + 1} in"], up_out + enc[up_out.shape[-1]], atol=1e-6)


def test_dropout_on_global_code_only_in_training():
    g = tiny_generator(16)
    gin, codes, z, noise = tiny_inputs(g)
    assert torch.equal(g(gin, codes, [z], noise=noise), g(gin, codes, [z], noise=noise))
    g.train()
    torch.manual_seed(0)
    a = g(gin, codes, [z], noise=noise)
    b = g(gin, codes, [z], noise=noise)
    assert not torch.allclose(a, b)


def test_every_parameter_gets_a_gradient():
    g = tiny_generator(16).train()
    gin, codes, z, noise = tiny_inputs(g)
    g(gin, codes, [z], noise=noise).square().mean().backward()
    missing = [n for n, p in g.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_bad_inputs_are_refused_clearly():
    g = tiny_generator(16)
    gin, codes, z, _ = tiny_inputs(g)
    with pytest.raises(ValueError, match="gin must be"):
        g(gin[:, :3], codes, [z])
    with pytest.raises(ValueError, match="codes must be"):
        g(gin, codes[:, :1], [z])
    with pytest.raises(ValueError, match="noise must be"):
        g(gin, codes, [z], noise=[None])


def test_path_length_style_double_backward_reaches_every_layer():
    """Lazy path-length regularisation differentiates dG/dw again w.r.t. the weights."""
    g = tiny_generator(16).train()
    gin, codes, z, noise = tiny_inputs(g)
    image, w = g(gin, codes, [z], noise=noise, return_latents=True)
    probe = torch.randn_like(image) / math.sqrt(image.shape[2] * image.shape[3])
    (grad_w,) = torch.autograd.grad((image * probe).sum(), w, create_graph=True)
    assert grad_w.shape == w.shape
    grad_w.square().sum().backward()
    dead = [n for n, p in g.named_parameters()
            if n.startswith(("convs", "to_rgbs.0.conv")) and n.endswith("conv.weight")
            and (p.grad is None or not torch.any(p.grad != 0))]
    assert dead == []
