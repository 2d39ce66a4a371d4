"""Mask generators and mask files: binary [1,H,W] with 1 = hole, seeded, documented ratios,
irregular-mask buckets, hole_value, validation, batch sampling and RNG state."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import datasets.mask_files as mask_files_mod
from datasets.errors import MaskError
from datasets.mask_files import BUCKET_LABELS, MaskFiles, PairedMasks, bucket_index
from datasets.mask_generators import CenterMask, FreeFormMasks, LargeMasks
from datasets.masks import MaskSampler, batch_masks, make_mask_generator, validate_mask

S = 64
H, W = 40, 50  # synthetic mask files: 2000 pixels, so ratios are exact multiples of 1/2000

# Hole pixel counts of the synthetic files and the bucket each must land in ((lo, hi]).
KNOWN = {"r000": (0, "0-10"), "r050": (100, "0-10"), "r100": (200, "0-10"),
         "r100p": (201, "10-20"), "r150": (300, "10-20"), "r200": (400, "10-20"),
         "r350": (700, "30-40"), "r450": (900, "40-50"), "r550": (1100, "50-60"),
         "r600": (1200, "50-60"), "r750": (1500, "60-100")}


def write_masks(folder, hole_is_white=True, fmt="png"):
    """Files whose first `count` pixels (row-major) are holes."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (count, _) in KNOWN.items():
        hole = np.zeros(H * W, bool)
        hole[np.random.default_rng(count).permutation(H * W)[:count]] = True
        hole = hole.reshape(H, W)
        a = np.where(hole == hole_is_white, 255, 0).astype(np.uint8)
        Image.fromarray(a, "L").save(folder / f"{name}.{fmt}")
    return folder


@pytest.fixture
def mask_dir(tmp_path):
    return write_masks(tmp_path / "masks")


def generators(tmp_path):
    files = write_masks(tmp_path / "files")
    return {
        "free_form": FreeFormMasks(),
        "large": LargeMasks(),
        "center": CenterMask(),
        "files": MaskFiles(str(files)),
        "paired": PairedMasks(str(files)),
    }


@pytest.mark.parametrize("kind", ["free_form", "large", "center", "files", "paired"])
def test_binary_shape_and_determinism(kind, tmp_path):
    gen = generators(tmp_path)[kind]
    for size in (S, (48, 32)):
        if kind == "paired":
            a = gen(size, name="sub/r350.png")  # paired by stem (folder prefix is ignored)
            b = gen(size, name="r350.jpg")
        else:
            a, b = gen(size, 7), gen(size, 7)
        hw = (size, size) if isinstance(size, int) else size
        assert a.shape == (1, *hw) and a.dtype == torch.float32
        assert set(a.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(a, b)
        assert a.sum() > 0
        validate_mask(a, hw)
    if kind in ("free_form", "large", "files"):
        draws = [gen(S, seed) for seed in range(5)]
        assert any(not torch.equal(draws[0], d) for d in draws[1:])
        rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
        for _ in range(3):
            assert torch.equal(gen(S, rng1), gen(S, rng2))


def test_free_form_ratio_distribution():
    gen = FreeFormMasks()
    rng = np.random.default_rng(0)
    r = np.array([gen(S, rng).mean().item() for _ in range(200)])
    lo, hi = gen.hole_range
    assert (lo, hi) == (0.05, 0.6)  # the documented range
    assert r.min() >= lo and r.max() <= hi
    # Documented shape: median ~27 %, spread over most of the range.
    assert 0.2 < np.median(r) < 0.34
    assert np.percentile(r, 5) < 0.13 and np.percentile(r, 95) > 0.38
    # Each mask combines strokes with rectangles: not all masks are box-only or stroke-only.
    assert len(np.unique(np.round(r, 4))) > 150


def test_large_ratio_distribution():
    gen = LargeMasks()
    rng = np.random.default_rng(0)
    r = np.array([gen(S, rng).mean().item() for _ in range(200)])
    assert r.min() > 0 and r.max() <= 1
    assert 0.55 < np.median(r) < 0.8  # documented median ~68 %: much larger than free-form
    assert np.percentile(r, 10) < 0.45 and np.percentile(r, 90) > 0.8


def test_hole_range_is_enforced():
    gen = LargeMasks(hole_range=(0.3, 0.5))
    rng = np.random.default_rng(1)
    r = np.array([gen(S, rng).mean().item() for _ in range(50)])
    assert r.min() >= 0.3 and r.max() <= 0.5


def test_center_mask_is_the_middle_square():
    m = CenterMask()(S)
    expected = torch.zeros(1, S, S)
    expected[:, S // 4:S // 4 + S // 2, S // 4:S // 4 + S // 2] = 1
    assert torch.equal(m, expected)
    assert m.mean().item() == 0.25


def test_bucket_index_boundaries():
    assert bucket_index(0, 2000) == 0
    assert bucket_index(200, 2000) == 0  # exactly 10 %: (0, 0.1]
    assert bucket_index(201, 2000) == 1
    assert bucket_index(1200, 2000) == 5
    assert bucket_index(1201, 2000) == 6


def test_irregular_buckets_put_each_file_in_its_bin(mask_dir, tmp_path):
    gen = MaskFiles(str(mask_dir))
    for name, (count, label) in KNOWN.items():
        assert gen.stats[f"{name}.png"]["holes"] == count
        assert gen.stats[f"{name}.png"]["bucket"] == label
    groups = gen.buckets()
    for label in BUCKET_LABELS + ("60-100",):
        assert sorted(groups[label]) == sorted(f"{n}.png" for n, (_, lb) in KNOWN.items()
                                               if lb == label)
    # Selecting one bucket: only its files, drawn at random or by index.
    one = MaskFiles(str(mask_dir), bucket="10-20")
    assert sorted(one.names) == ["r100p.png", "r150.png", "r200.png"]
    assert MaskFiles(str(mask_dir), bucket=1).names == one.names
    for seed in range(10):
        count = one((H, W), seed).sum().item()
        assert count in (201, 300, 400)
    assert one((H, W), index=3).sum().item() == 201  # index wraps: files[3 % 3]
    assert one((H, W), index=4).sum().item() == 300


def test_hole_value_black_is_hole(mask_dir, tmp_path):
    black = write_masks(tmp_path / "black", hole_is_white=False)
    white_gen = MaskFiles(str(mask_dir))
    black_gen = MaskFiles(str(black), hole_value=0)
    for name in white_gen.names:
        assert torch.equal(white_gen((H, W), index=white_gen.names.index(name)),
                           black_gen((H, W), index=black_gen.names.index(name)))
    # The wrong convention inverts the ratios (and warns that the set looks inverted).
    with pytest.warns(UserWarning, match="hole_value=0"):
        wrong = MaskFiles(str(black), hole_value=1).stats
    assert wrong["r150.png"]["holes"] == H * W - 300


def test_mask_files_threshold_at_half_range(tmp_path):
    for bits, top, below, above in ((16, 65535, 32767, 32768), (8, 255, 127, 128)):
        a = np.zeros((8, 8), np.uint16 if bits == 16 else np.uint8)
        a[:, :3] = top
        a[0, :4] = below  # a few grey pixels (allowed) on either side of the threshold
        a[0, 4:] = above
        folder = tmp_path / f"b{bits}"
        folder.mkdir()
        Image.fromarray(a).save(folder / "m.png")
        m = MaskFiles(str(folder))((8, 8), index=0)[0]
        expected = torch.zeros(8, 8)
        expected[1:, :3] = 1
        expected[0, 4:] = 1
        assert torch.equal(m, expected), bits


def test_mask_files_are_resized_with_nearest(tmp_path):
    a = np.zeros((40, 40), np.uint8)
    a[:20, :20] = 255
    a[20:, 20:] = 255
    Image.fromarray(a).save(tmp_path / "q.png")
    m = MaskFiles(str(tmp_path))(10, index=0)
    expected = torch.zeros(1, 10, 10)
    expected[:, :5, :5] = 1
    expected[:, 5:, 5:] = 1
    assert torch.equal(m, expected)


def test_bad_mask_files_and_tensors_raise_one_sentence(tmp_path):
    grad = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    Image.fromarray(grad).save(tmp_path / "photo.png")
    with pytest.raises(MaskError, match=r"photo\.png.*not a binary mask"):
        MaskFiles(str(tmp_path))(S, index=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MaskError, match="no image files"):
        MaskFiles(str(tmp_path / "empty"))
    with pytest.raises(MaskError, match="does not exist"):
        PairedMasks(str(tmp_path / "missing"))

    good = torch.zeros(2, 1, S, S)
    validate_mask(good, S, batch=2)
    with pytest.raises(MaskError, match="is 32x32 but the images are 64x64"):
        validate_mask(torch.zeros(2, 1, 32, 32), S)
    with pytest.raises(MaskError, match="binary"):
        validate_mask(torch.full((1, S, S), 0.5), S)
    with pytest.raises(MaskError, match="shape"):
        validate_mask(torch.zeros(2, 3, S, S), S)
    with pytest.raises(MaskError, match="float"):
        validate_mask(torch.zeros(1, S, S, dtype=torch.uint8), S)
    with pytest.raises(MaskError, match="batch of 4"):
        validate_mask(good, S, batch=4)


def test_paired_masks_by_name(tmp_path):
    root = tmp_path / "pm"
    (root / "a").mkdir(parents=True)
    for i, name in enumerate(["a/001", "a/002", "003"]):
        m = np.zeros((S, S), np.uint8)
        m[: 8 * (i + 1)] = 255
        Image.fromarray(m).save(root / f"{name}.png")
    gen = PairedMasks(str(root))
    assert gen(S, name="a/002.jpg")[0, :, 0].sum().item() == 16
    assert gen(S, name="x/003.png")[0, :, 0].sum().item() == 24  # unique bare stem
    with pytest.raises(MaskError, match=r"has no mask for 1 of 1 image\(s\) \('a/004'\): "
                                        r"looked for 'a/004\.\*'; files are paired by name"):
        gen(S, name="a/004.png")
    with pytest.raises(ValueError, match="name"):
        gen(S)


def test_index_file_from_the_script_is_used(mask_dir, tmp_path, monkeypatch, capsys):
    import scripts.make_mask_buckets as script

    assert script.main([str(mask_dir)]) == 0
    assert "50-60 %: 2" in capsys.readouterr().out
    index = json.loads((mask_dir / "mask_ratios.json").read_text())
    assert index["files"]["r350.png"]["bucket"] == "30-40"

    def boom(*a, **k):
        raise AssertionError("ratios recomputed although the index matches")

    monkeypatch.setattr(mask_files_mod, "compute_ratios", boom)
    assert MaskFiles(str(mask_dir), bucket="30-40").names == ["r350.png"]


def test_factory_kinds_and_aliases(tmp_path):
    assert isinstance(make_mask_generator("mixed"), FreeFormMasks)
    assert isinstance(make_mask_generator({"kind": "free_form", "hole_range": [0.1, 0.3]}),
                      FreeFormMasks)
    assert make_mask_generator({"kind": "large", "hole_range": (0.2, 0.8)}).hole_range == (0.2, 0.8)
    assert isinstance(make_mask_generator({"kind": "center", "per_sample": True}), CenterMask)
    files = write_masks(tmp_path / "f")
    assert isinstance(make_mask_generator({"kind": "irregular", "root": str(files),
                                           "bucket": "0-10"}), MaskFiles)
    assert isinstance(make_mask_generator({"kind": "paired", "root": str(files)}), PairedMasks)
    with pytest.raises(ValueError, match="mask kind"):
        make_mask_generator("stripes")
    with pytest.raises(TypeError, match="seed"):
        FreeFormMasks()(S)  # random generators need an explicit seed / Generator


def test_batch_masks_per_sample_and_shared():
    gen = FreeFormMasks()
    per = batch_masks(gen, 4, S, np.random.default_rng(0))
    assert per.shape == (4, 1, S, S)
    assert len({tuple(m.flatten().tolist()) for m in per}) == 4
    shared = batch_masks(gen, 4, S, np.random.default_rng(0), per_sample=False)
    assert all(torch.equal(shared[0], m) for m in shared)
    validate_mask(per, S, batch=4)


def test_mask_sampler_state_resumes_the_same_sequence(tmp_path):
    a = MaskSampler("free_form", S, seed=3)
    a(4)
    torch.save({"masks": a.state_dict()}, tmp_path / "ckpt.pt")
    expected = [a(4) for _ in range(3)]
    b = MaskSampler("free_form", S, seed=999)
    b.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True)["masks"])
    for e in expected:
        assert torch.equal(b(4), e)


@pytest.mark.parametrize("hole_value", [1, 0])
def test_8_bit_masks_are_read_without_a_float_copy_by_the_float_rule(tmp_path, hole_value):
    """Every 8-bit value gives what v / 255 > 0.5 gives (and the grey fraction counts 0.25 < v / 255 <
    0.75), though the reader compares the 8-bit values directly."""
    v = np.arange(256, dtype=np.uint8)
    a = np.concatenate([np.repeat(v[None], 4, 0), np.zeros((8, 256), np.uint8),
                        np.full((8, 256), 255, np.uint8)], 0)
    Image.fromarray(a, "L").save(tmp_path / "m.png")
    got = mask_files_mod.read_mask_file(str(tmp_path / "m.png"), hole_value=hole_value)
    want = (a / 255.0) > 0.5
    assert np.array_equal(got, want if hole_value == 1 else ~want)
    grey = np.full((10, 10), 255, np.uint8)
    grey[:3, :] = 64          # 30 % at exactly 64 / 255 = 0.251: mid-grey
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    with pytest.raises(MaskError, match="30% of its pixels are mid-grey"):
        mask_files_mod.read_mask_file(str(tmp_path / "g.png"))
    grey[:3, :] = 63          # 0.247: not mid-grey
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    assert not mask_files_mod.read_mask_file(str(tmp_path / "g.png"))[:3].any()
