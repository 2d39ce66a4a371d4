"""Tests for the pSp style encoder (models/psp.py) and the IR-SE blocks (models/irse.py)."""
import math
import os

import pytest
import torch
from torch.nn import functional as F

from models.irse import BottleneckIRSE, WeightsFileError, stage_end_indices
from models.psp import GradualStyleBlock, StyleEncoder, load_style_encoder

KEYS_FILE = os.path.join(os.path.dirname(__file__), "..", "data", "psp_encoder_ir_se50.keys.txt")
# Tiny encoder: 32 px input (maps 2x2, 4x4, 8x8), stage depths 8..64, 16-d codes, all 18 heads.
TINY = dict(width=8, units=(1, 2, 2, 1), style_dim=16, n_styles=18, input_size=32)


class _Opaque:
    """A class no allow-list knows: a file pickling it must be refused."""


def _randomize(module, seed=0):
    """Random weights *and* batch-norm statistics / PReLU slopes, so eval-vs-train and every
    parameter matter in comparisons."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.dtype != torch.float32:
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean") or name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() == 1:   # BN gammas, PReLU slopes
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
    return module


def _tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return _randomize(StyleEncoder(**{**TINY, **kw}), seed)


def _images(b=2, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


def _read_reference_keys():
    out = []
    with open(KEYS_FILE) as f:
        for line in f:
            if line.strip():
                name, shape = line.rstrip("\n").split("\t")
                out.append((name, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    return out


def _reference_heads(enc, img):
    """All 18 head outputs recomputed step by step from docs/encoders.md."""
    s = enc.input_size
    x = F.interpolate(img, size=(s, s), mode="bilinear", align_corners=True) if img.shape[-1] != s else img
    x = enc.input_layer(x)
    feats = []
    for unit in enc.body:
        x = unit(x)
        feats.append(x)
    ends = [sum(enc.units[:k + 1]) - 1 for k in range(4)]
    c1, c2, c3 = feats[ends[1]], feats[ends[2]], feats[ends[3]]
    assert c1.shape[1:] == (2 * enc.width, s // 4, s // 4)
    assert c3.shape[1:] == (8 * enc.width, s // 16, s // 16)
    up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=True)  # noqa: E731
    p2 = up(c3) + enc.latlayer1(c2)
    p1 = up(p2) + enc.latlayer2(c1)
    return torch.stack([enc.styles[j](c3 if j < 3 else p2 if j < 7 else p1) for j in range(18)], 1)


def _psp_file(enc, latent_avg, path, **extra):
    sd = {"encoder." + k: v.clone() for k, v in enc.state_dict().items()}
    sd["decoder.style.1.weight"] = torch.randn(4, 4)      # decoder keys must be ignored
    sd["decoder.conv1.conv.weight"] = torch.randn(1, 4, 4, 3, 3)
    ckpt = {"opts": {"encoder_type": "GradualStyleEncoder", "output_size": 1024,
                     "start_from_latent_avg": True, "checkpoint_path": None},
            "state_dict": sd, "latent_avg": latent_avg}
    ckpt.update(extra)
    torch.save(ckpt, path)
    return path


# -- architecture -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full_meta_encoder():
    """The released-size encoder on the meta device: real shapes, no memory, no arithmetic."""
    with torch.device("meta"):
        return StyleEncoder()


def test_full_encoder_state_dict_matches_released_keys(full_meta_encoder):
    enc = full_meta_encoder
    ours = [(k, tuple(v.shape)) for k, v in enc.state_dict().items()]
    assert ours == _read_reference_keys()
    # latent_avg comes from the file's own entry, not the state dict
    assert "latent_avg" not in enc.state_dict()


def test_full_encoder_taps_and_runtime_shapes(full_meta_encoder):
    assert stage_end_indices() == (2, 6, 20, 23)
    enc = full_meta_encoder
    with torch.device("meta"):
        img = torch.empty(2, 3, 512, 512)     # not 256: exercises the resize
        assert (enc.tap_fine, enc.tap_middle, enc.tap_coarse) == (6, 20, 23)
        assert enc(img).shape == (2, 10, 512)
        assert enc.all_codes(img, 14).shape == (2, 14, 512)
        assert enc.all_codes(img).shape == (2, 18, 512)


def test_style_head_layout_and_equalized_linear():
    head = _randomize(GradualStyleBlock(6, 8, 8))
    convs = [m for m in head.convs if isinstance(m, torch.nn.Conv2d)]
    relus = [m for m in head.convs if isinstance(m, torch.nn.LeakyReLU)]
    assert len(convs) == 3 and len(relus) == 3 and all(r.negative_slope == 0.01 for r in relus)
    assert convs[0].weight.shape == (8, 6, 3, 3) and convs[1].weight.shape == (8, 8, 3, 3)
    x = torch.randn(2, 6, 8, 8)
    y = x
    for c in convs:
        y = F.leaky_relu(F.conv2d(y, c.weight, c.bias, stride=2, padding=1), 0.01)
    expected = F.linear(y.flatten(1), head.linear.weight / math.sqrt(8), head.linear.bias)
    torch.testing.assert_close(head(x), expected)


@pytest.mark.parametrize("in_ch,depth,stride", [(8, 8, 2), (8, 16, 2), (16, 16, 1)])
def test_irse_unit_matches_definition(in_ch, depth, stride):
    unit = _randomize(BottleneckIRSE(in_ch, depth, stride)).eval()
    x = torch.randn(2, in_ch, 8, 8)
    r = unit.res_layer
    bn = lambda t, m: F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)  # noqa: E731
    y = bn(x, r[0])
    y = F.conv2d(y, r[1].weight, padding=1)
    y = F.prelu(y, r[2].weight)
    y = bn(F.conv2d(y, r[3].weight, stride=stride, padding=1), r[4])
    se = r[5]
    gate = torch.sigmoid(F.conv2d(F.relu(F.conv2d(y.mean((2, 3), keepdim=True), se.fc1.weight)), se.fc2.weight))
    y = y * gate
    if in_ch == depth:
        shortcut = x[:, :, ::stride, ::stride]
    else:
        sc = unit.shortcut_layer
        shortcut = bn(F.conv2d(x, sc[0].weight, stride=stride), sc[1])
    torch.testing.assert_close(unit(x), shortcut + y)
    assert se.fc1.weight.shape == (max(1, depth // 16), depth, 1, 1)


# -- forward --------------------------------------------------------------------------------------

def test_tiny_heads_match_step_by_step_reference():
    enc = _tiny()
    img = _images(2, 32)
    torch.testing.assert_close(enc.heads(img), _reference_heads(enc, img))
    # a 40 px input is resized bilinearly with align_corners=True
    small = _images(1, 40, seed=3)
    torch.testing.assert_close(enc.heads(small), _reference_heads(enc, small))


def test_forward_is_the_slot_slice_of_all_codes():
    enc = _tiny()
    img = _images(2, 32)
    full = enc.all_codes(img)
    assert full.shape == (2, 18, 16)
    enc.set_slots(4, 10)
    torch.testing.assert_close(enc(img), full[:, 4:14])
    enc.set_slots(0, 2)   # coarse heads only: the upper maps are skipped
    torch.testing.assert_close(enc(img), full[:, 0:2])
    enc.set_slots(8, 10)
    torch.testing.assert_close(enc(img), full[:, 8:18])
    torch.testing.assert_close(enc.all_codes(img, 14), full[:, :14])


def test_codes_are_heads_plus_latent_avg():
    enc = _tiny()
    img = _images(2, 32)
    zero = enc.all_codes(img)
    latent_avg = torch.randn(18, 16)
    enc.set_latent_avg(latent_avg)
    torch.testing.assert_close(enc.all_codes(img), zero + latent_avg)
    enc.set_slots(4, 10)
    torch.testing.assert_close(enc(img), zero[:, 4:14] + latent_avg[4:14])
    torch.testing.assert_close(enc.heads(img), zero)    # raw heads do not include it


def test_gradient_reaches_input_but_not_parameters():
    enc = _tiny()
    img = _images(2, 32).requires_grad_(True)
    enc(img).square().sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in enc.parameters())


def test_stays_in_eval_mode():
    enc = _tiny()
    parent = torch.nn.Sequential(enc)
    parent.train()
    enc.train(True)
    assert not any(m.training for m in enc.modules())
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    enc.all_codes(_images(2, 32))
    for k, v in enc.state_dict().items():   # BN running statistics untouched
        assert torch.equal(v, before[k]), k


def test_bad_input_shape_and_slots():
    enc = _tiny()
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        enc(torch.zeros(1, 4, 64, 64))
    with pytest.raises(ValueError, match="do not fit"):
        enc.set_slots(10, 10)
    with pytest.raises(ValueError, match="not inside"):
        enc.heads(_images(1, 32), 0, 19)


# -- loading the pSp file -------------------------------------------------------------------------

def test_psp_file_round_trip(tmp_path):
    enc = _tiny(seed=5)
    latent_avg = torch.randn(18, 16)
    path = _psp_file(enc, latent_avg, tmp_path / "psp.pt")
    loaded = load_style_encoder(path, start=4, n=10, device="cpu")
    assert (loaded.start, loaded.n, loaded.style_dim, loaded.input_size) == (4, 10, 16, 32)
    assert loaded.units == TINY["units"] and loaded.width == TINY["width"]
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    img = _images(2, 32)
    enc.set_latent_avg(latent_avg)
    enc.set_slots(4, 10)
    torch.testing.assert_close(loaded(img), enc(img), rtol=0, atol=0)
    torch.testing.assert_close(loaded.all_codes(img, 14), (_reference_heads(enc, img) + latent_avg)[:, :14])


def test_missing_file_names_config_key_and_released_file(tmp_path):
    with pytest.raises(WeightsFileError, match="weights not found") as e:
        load_style_encoder(tmp_path / "nope.pt")
    assert "pretrained.style_encoder" in str(e.value) and "psp_ffhq_encode.pt" in str(e.value)
    with pytest.raises(WeightsFileError, match="not found"):
        load_style_encoder(None)


def test_unreadable_and_wrong_files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsFileError, match="is not a PyTorch checkpoint"):
        load_style_encoder(garbage)
    bare = tmp_path / "bare.pt"
    torch.save(_tiny().state_dict(), bare)   # an encoder state dict, not a pSp file
    with pytest.raises(WeightsFileError, match="not a pSp checkpoint"):
        load_style_encoder(bare)
    # a file carrying a pickled class is refused by weights_only loading, with a clear message
    pickled = _psp_file(_tiny(), torch.zeros(18, 16), tmp_path / "pickled.pt", opts=_Opaque())
    with pytest.raises(WeightsFileError, match="could not be read.*Refusing to load"):
        load_style_encoder(pickled)
    no_avg = tmp_path / "no_avg.pt"
    ckpt = torch.load(_psp_file(_tiny(), torch.zeros(18, 16), tmp_path / "x.pt"), weights_only=True)
    del ckpt["latent_avg"]
    torch.save(ckpt, no_avg)
    with pytest.raises(WeightsFileError, match="latent_avg"):
        load_style_encoder(no_avg)
    bad_avg = _psp_file(_tiny(), torch.zeros(18, 8), tmp_path / "bad_avg.pt")
    with pytest.raises(WeightsFileError, match="latent_avg must have shape"):
        load_style_encoder(bad_avg)


@pytest.mark.parametrize("edit,pattern", [
    ("drop", r"1 missing keys \(first: latlayer2\.bias\)"),
    ("extra", r"1 unexpected keys \(first: extra\.weight\)"),
    ("shape", r"shape mismatches \(first: latlayer1\.bias expected \(64,\), found \(7,\)\)"),
])
def test_key_mismatches_are_reported(tmp_path, edit, pattern):
    path = _psp_file(_tiny(), torch.zeros(18, 16), tmp_path / "psp.pt")
    ckpt = torch.load(path, weights_only=True)
    sd = ckpt["state_dict"]
    if edit == "drop":
        del sd["encoder.latlayer2.bias"]
    elif edit == "extra":
        sd["encoder.extra.weight"] = torch.zeros(1)
    else:
        sd["encoder.latlayer1.bias"] = torch.zeros(7)
    torch.save(ckpt, path)
    with pytest.raises(WeightsFileError, match=pattern):
        load_style_encoder(path)


def test_too_few_heads_for_slots(tmp_path):
    path = _psp_file(_tiny(), torch.zeros(18, 16), tmp_path / "psp.pt")
    with pytest.raises(WeightsFileError, match=r"18 style heads, too few for the exemplar slots \[10, 22\)"):
        load_style_encoder(path, start=10, n=12)


def test_a_mapped_encoder_is_the_loaded_one_bit_for_bit(tmp_path):
    """load_style_encoder(mapped=True), inference's way (the weights stay mapped from the file):
    the same codes bit for bit, nothing left on the meta device, frozen, in eval mode."""
    from metrics.standins import save_standin_style_encoder, standin_style_encoder
    enc = standin_style_encoder(4, 10, 14, 32, seed=3)
    path = save_standin_style_encoder(enc, str(tmp_path / "psp.pt"))
    plain = load_style_encoder(path, 4, 10)
    mapped = load_style_encoder(path, 4, 10, mapped=True)
    tensors = list(mapped.parameters()) + list(mapped.buffers())
    assert not any(t.is_meta for t in tensors) and not any(p.requires_grad for p in mapped.parameters())
    assert not mapped.training
    img = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(mapped(img), plain(img))
        assert torch.equal(mapped.all_codes(img), plain.all_codes(img))
    assert torch.equal(mapped.latent_avg, plain.latent_avg)
