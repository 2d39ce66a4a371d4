"""Sketch-guided editing (models/sketch.py): an upgraded generator with zero sketch weights is the
base model bit for bit, whatever the sketch; the sketch column is trainable and then steers the
hole only through the sketch; edges are thin, binary, deterministic and confined to the hole;
fine-tuned files load back and base files are refused with a clear error."""
import pytest
import torch

from models import Discriminator, EXEGAN, Generator, load_generator, make_checkpoint, save_checkpoint
from models.checkpoint import CheckpointError
from models.psp import StyleEncoder
from models.sketch import (SketchEXEGAN, SketchGenerator, extract_edges, load_sketch_generator,
                           sketch_gin, upgrade_generator)

SIZE = 16
KW = dict(style_dim=16, n_mlp=2, channel_multiplier=2, channel_max=16)


def _generator(seed=0):
    torch.manual_seed(seed)
    g = Generator(SIZE, **KW)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.3)
    return g.eval()


def _inputs(batch=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, SIZE, SIZE, generator=gen) * 2 - 1
    masks = torch.zeros(batch, 1, SIZE, SIZE)
    masks[:, :, 3:13, 4:12] = 1
    codes = torch.randn(batch, 2, 16, generator=gen)  # exemplar slots (4, 2) at 16 px
    z = [torch.randn(batch, 16, generator=gen)]
    sketch = (torch.rand(batch, 1, SIZE, SIZE, generator=gen) > 0.7).float()
    return images, masks, codes, z, sketch


def test_zero_sketch_weights_give_exactly_the_base_output():
    g = _generator()
    sg = upgrade_generator(g)
    images, masks, codes, z, sketch = _inputs()
    noise = g.make_noise()
    gin = torch.cat([images * (1 - masks), masks - 0.5], 1)
    with torch.no_grad():
        base = g(gin, codes, z, noise=noise)
        assert torch.equal(sg(sketch_gin(images, masks, sketch), codes, z, noise=noise), base)
        assert torch.equal(sg(gin, codes, z, noise=noise), base)          # 4-channel gin: no sketch
    assert torch.count_nonzero(sg.sketch_weight) == 0
    # upgrade copies: the base generator is untouched and shares no storage
    assert g.down_from_big[0].weight.shape[1] == 4
    with torch.no_grad():
        sg.down_from_big[0].weight[:, 0].add_(1.0)
    assert not torch.equal(g.down_from_big[0].weight[:, 0], sg.down_from_big[0].weight[:, 0])


def test_fresh_sketch_generator_draws_the_base_weights():
    torch.manual_seed(5)
    g = Generator(SIZE, **KW)
    torch.manual_seed(5)
    sg = SketchGenerator(SIZE, **KW)
    sd = sg.state_dict()
    for k, v in g.state_dict().items():
        assert torch.equal(sd[k][:, :4] if k == "down_from_big.0.weight" else sd[k], v), k
    assert set(sd) == set(g.state_dict())


def test_training_the_sketch_column_changes_the_output_through_the_sketch_only():
    sg = upgrade_generator(_generator()).train()
    images, masks, codes, z, sketch = _inputs()
    noise = sg.make_noise()
    sk_gin = sketch_gin(images, masks, sketch)
    empty_gin = sketch_gin(images, masks, torch.zeros_like(sketch))
    sg.eval()
    with torch.no_grad():
        before, before_empty = sg(sk_gin, codes, z, noise=noise), sg(empty_gin, codes, z, noise=noise)
    sg.train()
    opt = torch.optim.Adam([sg.down_from_big[0].weight], lr=0.05)
    target = torch.zeros_like(images)
    for _ in range(3):  # a few fine-tune steps pulling the hole towards a target
        out = sg(sk_gin, codes, z, noise=noise)
        loss = ((out - target).abs() * masks).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.count_nonzero(sg.sketch_weight) > 0
    sg.eval()
    with torch.no_grad():
        after = sg(sk_gin, codes, z, noise=noise)
    assert not torch.allclose(after, before)
    # The first 4 columns moved too. Restoring them isolates the sketch path: an empty sketch gives
    # the old output again, bit for bit, while the drawn sketch still changes it.
    with torch.no_grad():
        sg.down_from_big[0].weight[:, :4] = upgrade_generator(_generator()).down_from_big[0].weight[:, :4]
        assert torch.equal(sg(empty_gin, codes, z, noise=noise), before_empty)
        assert not torch.allclose(sg(sk_gin, codes, z, noise=noise), before)


def test_sketch_outside_the_hole_is_ignored():
    sg = upgrade_generator(_generator())
    with torch.no_grad():
        sg.sketch_weight.normal_()
    images, masks, codes, z, sketch = _inputs()
    noise = sg.make_noise()
    raw = torch.cat([images * (1 - masks), masks - 0.5, sketch], 1)  # strokes everywhere
    with torch.no_grad():
        assert torch.equal(sg(raw, codes, z, noise=noise), sg(sketch_gin(images, masks, sketch), codes, z, noise=noise))
        outside_only = torch.cat([images * (1 - masks), masks - 0.5, sketch * (1 - masks)], 1)
        empty = sketch_gin(images, masks, torch.zeros_like(sketch))
        assert torch.equal(sg(outside_only, codes, z, noise=noise), sg(empty, codes, z, noise=noise))


def test_edges_of_a_step_are_one_pixel_wide_and_confined_to_the_hole():
    img = -torch.ones(1, 3, 16, 16)
    img[..., 9:] = 1.0                                     # vertical step between columns 8 and 9
    e = extract_edges(img)
    assert set(e.unique().tolist()) == {0.0, 1.0}
    cols = e[0, 0].sum(0)
    assert cols.nonzero().flatten().tolist() == [8] and cols[8] == 16  # one full 1-px line
    assert extract_edges(torch.zeros(1, 3, 16, 16)).sum() == 0      # flat image: no edges
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:10, :] = 1
    em = extract_edges(img, mask)
    assert torch.equal(em, e * mask)
    assert torch.equal(extract_edges(img, mask), em)               # deterministic
    assert extract_edges(img * 0.1).sum() == 0                     # a faint step stays below 0.1


def test_save_load_and_inference_wrapper(tmp_path):
    sg = upgrade_generator(_generator())
    with torch.no_grad():
        sg.sketch_weight.normal_()
    d = Discriminator(SIZE, channel_multiplier=2, channel_max=16)
    path = tmp_path / "sketch.pt"
    save_checkpoint(make_checkpoint(g=sg, d=d, g_ema=sg, step=3), path)
    loaded = load_sketch_generator(path)
    assert isinstance(loaded, SketchGenerator) and not loaded.training
    for k, v in sg.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    # the inference wrapper: sketch=None equals the base EXEGAN on the base weights
    torch.manual_seed(0)
    enc = StyleEncoder(start=4, n=2, n_styles=6, style_dim=16, width=8, units=(1, 1, 1, 1), input_size=32)
    base_model = EXEGAN(_generator(), enc)
    zero_model = SketchEXEGAN(upgrade_generator(_generator()), enc)
    images, masks, _, _, sketch = _inputs()
    ex = images.flip(0)
    want = base_model.inpaint(images, masks, ex, seed=2)
    assert torch.equal(zero_model.inpaint(images, masks, ex, seed=2), want)
    assert torch.equal(zero_model.inpaint(images, masks, ex, seed=2, sketch=sketch), want)
    model = SketchEXEGAN(loaded, enc)
    drawn = model.inpaint(images, masks, ex, seed=2, sketch=sketch)
    assert not torch.equal(drawn, model.inpaint(images, masks, ex, seed=2))
    known = masks.expand_as(images) == 0
    assert torch.equal(drawn[known], images[known])
    assert torch.equal(model.style_mix(images, masks, ex, ex, [], seed=2, sketch=sketch), drawn)
    # a base checkpoint is refused with one sentence; the plain loader refuses a sketch file
    base_path = tmp_path / "base.pt"
    save_checkpoint(make_checkpoint(g=_generator(), d=d, g_ema=_generator()), base_path)
    with pytest.raises(CheckpointError, match="without a sketch channel"):
        load_sketch_generator(base_path)
    with pytest.raises(CheckpointError):
        load_generator(path)
