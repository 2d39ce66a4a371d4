"""Tests of the EXE-GAN inference wrapper (models/exegan.py): completion keeps known pixels bit for
bit and equals the generator run by hand, seeds reproduce, inputs are validated, style mixing picks
codes per layer, and ``from_checkpoints`` loads both files through the real loaders."""
import pytest
import torch

from models.checkpoint import make_checkpoint, save_checkpoint
from models.discriminator import Discriminator
from models.exegan import EXEGAN, InputError
from models.generator import Generator
from models.psp import StyleEncoder

SIZE = 16


def _model(style_dim=16):
    torch.manual_seed(0)
    g = Generator(SIZE, style_dim=style_dim, n_mlp=2, channel_multiplier=2, channel_max=16)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.3)
    start, n = g.exemplar_start, g.n_exemplar  # (4, 2) at 16 px
    enc = StyleEncoder(start=start, n=n, n_styles=8, style_dim=style_dim, width=8,
                       units=(1, 1, 1, 1), input_size=32)
    with torch.no_grad():
        enc.set_latent_avg(torch.randn(8, style_dim))
    return EXEGAN(g, enc, mean_latent_samples=64)


def _data(batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, SIZE, SIZE, generator=gen) * 2 - 1
    masks = torch.zeros(batch, 1, SIZE, SIZE)
    masks[:, :, 4:12, 3:10] = 1
    masks[1:, :, :2] = 1  # a different mask for the second sample
    exemplars = torch.rand(batch, 3, SIZE, SIZE, generator=gen) * 2 - 1
    return images, masks, exemplars


def test_inpaint_keeps_known_pixels_and_matches_the_generator():
    model = _model()
    images, masks, exemplars = _data()
    out = model.inpaint(images, masks, exemplars, seed=3)
    known = masks.expand_as(images) == 0
    assert torch.equal(out[known], images[known])  # bitwise untouched
    # The holes hold G's prediction for gin, E(exemplar) codes, the seed's z and noise.
    g, e = model.generator, model.style_encoder
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(2, g.style_dim, generator=gen)
    noise = g.make_noise(generator=gen)
    with torch.no_grad():
        gin = torch.cat([images * (1 - masks), masks - 0.5], 1)
        pred = g(gin, e(exemplars), [z], noise=noise).clamp(-1, 1)
    hole = ~known
    assert torch.allclose(out[hole], pred[hole], atol=1e-6)
    assert not torch.allclose(out[hole], images[hole])
    assert out.min() >= -1 and out.max() <= 1


def test_inpaint_is_reproducible_and_seed_dependent():
    model = _model()
    images, masks, exemplars = _data()
    a = model.inpaint(images, masks, exemplars, seed=1)
    assert torch.equal(a, model.inpaint(images, masks, exemplars, seed=1))
    assert not torch.equal(a, model.inpaint(images, masks, exemplars, seed=2))
    # Explicit z and noise override the seed.
    g = model.generator
    z = torch.randn(g.style_dim)
    noise = g.make_noise()
    b = model.inpaint(images, masks, exemplars, z=z, noise=noise, seed=1)
    assert torch.equal(b, model.inpaint(images, masks, exemplars, z=z, noise=noise, seed=7))


def test_exemplar_changes_only_the_hole():
    model = _model()
    images, masks, exemplars = _data()
    a = model.inpaint(images, masks, exemplars, seed=1)
    b = model.inpaint(images, masks, exemplars.flip(0), seed=1)
    hole = masks.expand_as(images) == 1
    assert torch.equal(a[~hole], b[~hole])
    assert not torch.allclose(a[hole], b[hole])


def test_single_image_and_shared_exemplar():
    model = _model()
    images, masks, exemplars = _data()
    batch = model.inpaint(images, masks, exemplars[:1].expand(2, -1, -1, -1), seed=4)
    shared = model.inpaint(images, masks, exemplars[0], seed=4)  # one exemplar for all images
    assert torch.equal(batch, shared)
    z = torch.randn(model.generator.style_dim)
    noise = model.generator.make_noise()
    one = model.inpaint(images[0], masks[0], exemplars[0], z=z, noise=noise)
    both = model.inpaint(images, masks, exemplars, z=z, noise=noise)
    assert one.shape == (3, SIZE, SIZE)
    assert torch.allclose(one, both[0], atol=1e-6)


def test_truncation_zero_ignores_z():
    model = _model()
    images, masks, exemplars = _data()
    noise = model.generator.make_noise()
    a = model.inpaint(images, masks, exemplars, truncation=0.0, noise=noise, seed=1)
    b = model.inpaint(images, masks, exemplars, truncation=0.0, noise=noise, seed=2)
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("case,match", [
    ("soft_mask", "binary"),
    ("mask_size", r"masks must be \[2, 1, 16, 16\]"),
    ("image_range", r"\[-1, 1\]"),
    ("image_size", r"\[B, 3, 16, 16\]"),
    ("exemplar_batch", "batch size 3"),
    ("int_image", "float"),
])
def test_bad_inputs_get_clear_errors(case, match):
    model = _model()
    images, masks, exemplars = _data()
    if case == "soft_mask":
        masks = masks * 0.5
    elif case == "mask_size":
        masks = masks[:, :, :8, :8]
    elif case == "image_range":
        images = images * 255
    elif case == "image_size":
        images = torch.zeros(2, 3, 32, 32)
    elif case == "exemplar_batch":
        exemplars = torch.zeros(3, 3, SIZE, SIZE)
    else:
        images = images.to(torch.uint8)
    with pytest.raises(InputError, match=match):
        model.inpaint(images, masks, exemplars)


def test_style_mix_takes_listed_slots_from_b():
    model = _model()
    images, masks, ex_a, = _data()[:3]
    ex_b = ex_a.flip(0) * 0.5
    g = model.generator
    lo, hi = g.exemplar_start, g.exemplar_start + g.n_exemplar
    z = torch.randn(2, g.style_dim)
    noise = g.make_noise()
    kw = dict(z=z, noise=noise)
    only_a = model.inpaint(images, masks, ex_a, **kw)
    only_b = model.inpaint(images, masks, ex_b, **kw)
    assert torch.equal(model.style_mix(images, masks, ex_a, ex_b, [], **kw), only_a)
    assert torch.equal(model.style_mix(images, masks, ex_a, ex_b, range(lo, hi), **kw), only_b)
    mixed = model.style_mix(images, masks, ex_a, ex_b, [lo + 1], **kw)
    codes = model.encode_exemplars(ex_a).clone()
    codes[:, 1] = model.encode_exemplars(ex_b)[:, 1]
    expect = model.complete(images, masks, codes, **kw)
    assert torch.equal(mixed, expect)
    assert not torch.allclose(mixed, only_a) and not torch.allclose(mixed, only_b)
    with pytest.raises(InputError, match="outside the exemplar slots"):
        model.style_mix(images, masks, ex_a, ex_b, [lo - 1])


def test_generator_stays_in_training_mode_after_inference():
    model = _model()
    model.generator.train()
    images, masks, exemplars = _data()
    a = model.inpaint(images, masks, exemplars, seed=0)
    assert model.generator.training  # restored
    assert torch.equal(a, model.inpaint(images, masks, exemplars, seed=0))  # dropout was off


def test_from_checkpoints_loads_both_files(tmp_path):
    model = _model()
    g, enc = model.generator, model.style_encoder
    d = Discriminator(SIZE, channel_multiplier=2, channel_max=16)
    exe_path = tmp_path / "exe.pt"
    save_checkpoint(make_checkpoint(g=g, d=d, g_ema=g, step=1), exe_path)
    psp_path = tmp_path / "psp.pt"
    state = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    state["decoder.style.1.weight"] = torch.zeros(2, 2)  # pSp files carry a decoder: ignored
    torch.save({"opts": {"encoder_type": "GradualStyleEncoder"}, "state_dict": state,
                "latent_avg": enc.latent_avg.clone()}, psp_path)
    loaded = EXEGAN.from_checkpoints(exe_path, psp_path, "cpu")
    assert (loaded.style_encoder.start, loaded.style_encoder.n) == (g.exemplar_start, g.n_exemplar)
    images, masks, exemplars = _data()
    assert torch.equal(loaded.inpaint(images, masks, exemplars, seed=5),
                       model.inpaint(images, masks, exemplars, seed=5))


def test_compile_keeps_results_known_pixels_and_state_dict():
    # EXEGAN.compile (test.py --compile): torch.compile of G and the style encoder in place.
    model = _model()
    images, masks, exemplars = _data()
    eager = model.inpaint(images, masks, exemplars, seed=5)
    keys = list(model.state_dict())
    assert model.compile() is model
    compiled = model.inpaint(images, masks, exemplars, seed=5)
    assert list(model.state_dict()) == keys  # loadable / savable as before
    known = masks.expand_as(images) == 0
    assert torch.equal(compiled[known], images[known])
    assert torch.allclose(compiled, eager, atol=1e-5)
    assert model.generator.n_exemplar == 2 and model.generator._compiled_call_impl is not None
