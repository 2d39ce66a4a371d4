"""The two formulations of the modulated convolution (models.stylegan2.set_modconv_impl) compute the
same map — outputs, first and second derivatives — and channels_last storage changes no output.

"grouped" (per-sample weights, one grouped conv: the authors' form) is the reference; "batched"
(modulate activations, shared-weight conv, demodulate outputs) and "auto" (per layer, whichever
materialises the smaller tensors) are the optimised paths. Agreement is
to fp32 rounding: allclose with rtol = atol = 1e-5 (for derivatives, atol relative to their
largest magnitude).
"""
import pytest
import torch

from models import Discriminator, Generator
from models import stylegan2 as sg
from models.stylegan2 import ModulatedConv2d

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture
def impl():
    """Set the implementation for one test and restore the previous one afterwards."""
    old = sg.get_modconv_impl()
    yield sg.set_modconv_impl
    sg.set_modconv_impl(old)


def _run(layer, x, style, which, impl):
    impl(which)
    x = x.clone().requires_grad_(True)
    style = style.clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    out = layer(x, style)
    # A path-length-like second-order quantity: gradient w.r.t. the style with create_graph, then
    # back-propagated into every parameter.
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    (g_style,) = torch.autograd.grad((out * probe).sum(), style, create_graph=True)
    (g_style.pow(2).sum() + out.square().mean()).backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    return out.detach(), g_style.detach(), x.grad.clone(), grads


@pytest.mark.parametrize("up,down,demod,k", [(False, False, True, 3), (True, False, True, 3),
                                             (False, True, True, 3), (False, False, False, 1)])
def test_batched_equals_grouped_with_derivatives(up, down, demod, k, impl):
    torch.manual_seed(0)
    layer = ModulatedConv2d(6, 5, k, style_dim=7, demodulate=demod, upsample=up, downsample=down)
    x, style = torch.randn(3, 6, 8, 8), torch.randn(3, 7)
    ref = _run(layer, x, style, "grouped", impl)
    got = _run(layer, x, style, "batched", impl)
    assert got[0].shape == ref[0].shape == (3, 5, 16 if up else 4 if down else 8, 16 if up else 4 if down else 8)
    assert torch.allclose(ref[0], got[0], **TOL)
    # Derivatives (second-order ones reach magnitudes ~100): same relative precision.
    pairs = [("d style", ref[1], got[1]), ("d x", ref[2], got[2])] + [(n, ref[3][n], got[3][n]) for n in ref[3]]
    for name, a, b in pairs:
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(a.abs().max())), name


def test_batched_is_not_trivially_equal_when_styles_differ(impl):
    """Guard against a batched path that ignores the per-sample style."""
    torch.manual_seed(1)
    layer = ModulatedConv2d(4, 4, 3, style_dim=4)
    x = torch.randn(1, 4, 6, 6).expand(2, -1, -1, -1)
    impl("batched")
    out = layer(x, torch.randn(2, 4))
    assert not torch.allclose(out[0], out[1], atol=1e-3)


def _tiny_nets():
    torch.manual_seed(3)
    G = Generator(16, style_dim=16, n_mlp=2, channel_multiplier=2, channel_max=16).eval()
    D = Discriminator(16, channel_multiplier=2, channel_max=16)
    with torch.no_grad():  # fresh noise strengths are 0; make the noise path count
        for n, p in G.named_parameters():
            if n.endswith("noise.weight"):
                p.fill_(0.2)
    return G, D


def _inputs(G):
    g = torch.Generator().manual_seed(4)
    gin = torch.randn(2, 4, 16, 16, generator=g)
    codes = torch.randn(2, G.n_exemplar, 16, generator=g)
    z = torch.randn(2, 16, generator=g)
    return gin, codes, [z]


def test_generator_and_discriminator_outputs_agree(impl):
    G, D = _tiny_nets()
    gin, codes, z = _inputs(G)
    outs = {}
    for which in ("grouped", "batched", "auto"):
        impl(which)
        img = G(gin, codes, z, randomize_noise=False)
        outs[which] = (img, D(img))
    for which in ("batched", "auto"):
        assert torch.allclose(outs["grouped"][0], outs[which][0], **TOL), which
        assert torch.allclose(outs["grouped"][1], outs[which][1], **TOL), which


def test_auto_picks_the_form_with_the_smaller_extra_tensors(impl, monkeypatch):
    """auto: batched where per-sample weights outweigh activations (wide layers at low resolution),
    grouped elsewhere; the tiny generator has both kinds, so the agreement test covers both."""
    G, _ = _tiny_nets()
    gin, codes, z = _inputs(G)
    used = []
    monkeypatch.setattr(ModulatedConv2d, "_forward_batched",
                        lambda self, x, s, f=ModulatedConv2d._forward_batched: used.append(("b", x.shape[-1])) or f(self, x, s))
    monkeypatch.setattr(ModulatedConv2d, "_forward_grouped",
                        lambda self, x, s, f=ModulatedConv2d._forward_grouped: used.append(("g", x.shape[-1])) or f(self, x, s))
    impl("auto")
    G(gin, codes, z)
    # 16 channels, 3x3: per-sample weights 16*16*9 = 2304 vs activations 16*H*W + 16*H'*W'.
    assert ("b", 4) in used and ("g", 16) in used and ("b", 16) not in used
    big = ModulatedConv2d(512, 512, 3, style_dim=8)
    assert big._weights_outweigh_activations(torch.empty(1, 512, 32, 32))
    assert not big._weights_outweigh_activations(torch.empty(1, 512, 64, 64))


@pytest.mark.parametrize("which", ["grouped", "batched", "auto"])
def test_channels_last_storage_gives_the_same_outputs(which, impl):
    impl(which)
    G, D = _tiny_nets()
    gin, codes, z = _inputs(G)
    img = G(gin, codes, z, randomize_noise=False)
    logits = D(img)
    for m in (G, D):
        for t in list(m.parameters()) + list(m.buffers()):
            if t.dim() == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)
    img_cl = G(gin.contiguous(memory_format=torch.channels_last), codes, z, randomize_noise=False)
    assert torch.allclose(img_cl, img, **TOL)
    assert torch.allclose(D(img_cl.contiguous(memory_format=torch.channels_last)), logits, **TOL)


def test_unknown_impl_is_refused(impl):
    with pytest.raises(ValueError, match="modconv implementation must be one of"):
        impl("fused")
