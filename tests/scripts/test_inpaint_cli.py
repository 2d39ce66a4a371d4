"""scripts/inpaint.py on a tiny checkpoint: K distinct results whose known pixels are the input's bit
for bit at any input size, results equal to the EXEGAN wrapper at the model size, pairing by name,
no overwriting, one-sentence errors, and the --sketch path."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from models.exegan import EXEGAN
from inference.io import read_exemplar, to_uint8
from inference.roundtrip import model_sketch, prepare
from scripts import cli_common as cli
from scripts import inpaint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _args(files, image, mask, exemplar, out, *extra, ckpt="exe"):
    return ["--ckpt", files[ckpt], "--psp", files["psp"], "--image", str(image), "--mask", str(mask),
            "--exemplar", str(exemplar), "--out", str(out), *map(str, extra)]


@pytest.mark.parametrize("hw", [(45, 37), (11, 14), (16, 16)])  # larger, smaller, model size
def test_k_distinct_results_keep_known_pixels_at_any_size(files, h, tmp_path, hw):
    H, W = hw
    src = h.write_rgb(tmp_path / "face.png", H, W, seed=1)
    hole = h.write_mask(tmp_path / "face_mask.png", h.box_hole(H, W, H // 4, W // 5, 3 * H // 4, W // 2 + 1))
    h.write_rgb(tmp_path / "ex.jpg", 30, 24, seed=2)
    out = tmp_path / "out"
    assert inpaint.main(_args(files, tmp_path / "face.png", tmp_path / "face_mask.png", tmp_path / "ex.jpg",
                              out, "--samples", 3, "--seed", 7)) == 0
    assert sorted(os.listdir(out)) == ["face_sample0.png", "face_sample1.png", "face_sample2.png", "face_sheet.png"]
    results = [h.read(out / f"face_sample{k}.png") for k in range(3)]
    for r in results:
        assert r.shape == (H, W, 3)
        assert np.array_equal(r[~hole], src[~hole])          # known pixels untouched, bit for bit
        assert (r[hole] != src[hole]).mean() > 0.5           # the hole was filled
    for a in range(3):
        for b in range(a + 1, 3):
            assert not np.array_equal(results[a][hole], results[b][hole])  # K diverse results
    sheet = h.read(out / "face_sheet.png")
    assert sheet.shape[0] == 64  # tiles of height max(S, 64): input, mask, exemplar, 3 results
    assert sheet.shape[1] > 6 * 64 * min(W, H) / max(W, H) * 0.9


def test_model_size_result_is_the_wrappers_prediction_with_seed_plus_k(files, h, tmp_path):
    S = h.SIZE
    src = h.write_rgb(tmp_path / "a.png", S, S, seed=3)
    hole = h.write_mask(tmp_path / "m.png", h.box_hole(S, S, 3, 4, 12, 13))
    h.write_rgb(tmp_path / "ex.png", S, S, seed=4)
    out = tmp_path / "out"
    assert inpaint.main(_args(files, tmp_path / "a.png", tmp_path / "m.png", tmp_path / "ex.png", out,
                              "--samples", 2, "--seed", 5, "--truncation", 0.7, "--no-sheet")) == 0
    model = EXEGAN.from_checkpoints(files["exe"], files["psp"])
    image = torch.from_numpy(src).permute(2, 0, 1).float() / 127.5 - 1
    mask = torch.from_numpy(hole).float()[None]
    exemplar = read_exemplar(str(tmp_path / "ex.png"), S)
    for k in range(2):
        want = to_uint8(model.inpaint(image, mask, exemplar, seed=5 + k, truncation=0.7))
        assert np.array_equal(h.read(out / f"a_sample{k}.png"), want)


def test_folders_pair_by_name_and_nothing_is_overwritten(files, h, tmp_path):
    srcs, holes = {}, {}
    for key, (H, W) in {"x": (20, 20), "sub/y": (18, 25)}.items():
        srcs[key] = h.write_rgb(tmp_path / "img" / f"{key}.png", H, W, seed=len(key))
        holes[key] = h.write_mask(tmp_path / "mask" / f"{key}.png", h.box_hole(H, W, 2, 3, H - 4, W - 6))
    h.write_mask(tmp_path / "mask" / "unused.png", np.ones((5, 5), bool))  # extra masks are ignored
    h.write_rgb(tmp_path / "ex.png", 16, 16, seed=9)
    out = tmp_path / "out"
    args = _args(files, tmp_path / "img", tmp_path / "mask", tmp_path / "ex.png", out, "--samples", 2)
    assert inpaint.main(args) == 0
    first = {p: (out / p).read_bytes() for p in ("x_sample0.png", "sub/y_sample1.png", "sub/y_sheet.png")}
    assert inpaint.main(args) == 0  # the same command again
    for p, data in first.items():
        assert (out / p).read_bytes() == data  # untouched
    assert sorted(os.listdir(out / "sub")) == ["y-1_sample0.png", "y-1_sample1.png", "y-1_sheet.png",
                                              "y_sample0.png", "y_sample1.png", "y_sheet.png"]
    # Same seeds -> the second run reproduces the first.
    assert np.array_equal(h.read(out / "sub/y-1_sample1.png"), h.read(out / "sub/y_sample1.png"))
    r = h.read(out / "sub/y_sample0.png")
    assert np.array_equal(r[~holes["sub/y"]], srcs["sub/y"][~holes["sub/y"]])


@pytest.mark.parametrize("case,needle", [
    ("missing_pair", "has no mask for 1 of 2 image(s) ('b'): looked for 'b.*'"),
    ("unreadable", "Cannot decode image"),
    ("grey_mask", "not a binary mask"),
    ("mask_size", "is 10x12 but its image is 20x20"),
    ("empty_mask", "no hole pixels"),
    ("samples", "--samples must be at least 1"),
    ("no_ckpt", "--ckpt"),
])
def test_bad_inputs_are_one_sentence_errors(files, h, tmp_path, capsys, case, needle):
    (tmp_path / "img").mkdir()
    (tmp_path / "mask").mkdir()
    h.write_rgb(tmp_path / "img" / "a.png", 20, 20, seed=1)
    h.write_mask(tmp_path / "mask" / "a.png", h.box_hole(20, 20, 5, 5, 10, 10))
    h.write_rgb(tmp_path / "ex.png", 16, 16, seed=2)
    extra = []
    if case == "missing_pair":
        h.write_rgb(tmp_path / "img" / "b.png", 20, 20, seed=3)
    elif case == "unreadable":
        (tmp_path / "img" / "a.png").write_bytes(b"not a png at all")
    elif case == "grey_mask":
        h.write_mask(tmp_path / "mask" / "a.png", np.zeros((20, 20), bool))
        from PIL import Image
        Image.new("L", (20, 20), 128).save(tmp_path / "mask" / "a.png")
    elif case == "mask_size":
        h.write_mask(tmp_path / "mask" / "a.png", np.ones((12, 10), bool))
    elif case == "empty_mask":
        h.write_mask(tmp_path / "mask" / "a.png", np.zeros((20, 20), bool))
    elif case == "samples":
        extra = ["--samples", 0]
    args = _args(files, tmp_path / "img", tmp_path / "mask", tmp_path / "ex.png", tmp_path / "out", *extra)
    if case == "no_ckpt":
        args[1] = str(tmp_path / "nope.pt")
    assert cli.run(inpaint.main, args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))


def test_sketch_zero_column_is_the_base_model_and_trained_column_changes_the_hole(files, h, tmp_path, capsys):
    H, W = 24, 20
    src = h.write_rgb(tmp_path / "a.png", H, W, seed=5)
    hole = h.write_mask(tmp_path / "m.png", h.box_hole(H, W, 4, 4, 18, 16))
    h.write_rgb(tmp_path / "ex.png", 16, 16, seed=6)
    strokes = np.zeros((H, W), bool)
    strokes[6:16, 9] = True          # a vertical stroke inside the hole
    h.write_mask(tmp_path / "sketch.png", strokes)
    h.write_mask(tmp_path / "blank.png", np.zeros((H, W), bool))
    base = [tmp_path / "a.png", tmp_path / "m.png", tmp_path / "ex.png"]

    def run(out, ckpt, sketch=None):
        extra = ["--no-sheet"] + (["--sketch", sketch] if sketch else [])
        assert inpaint.main(_args(files, *base, tmp_path / out, *extra, ckpt=ckpt)) == 0
        return h.read(tmp_path / out / "a_sample0.png")

    plain = run("plain", "exe")
    assert np.array_equal(run("zero", "sketch0", tmp_path / "sketch.png"), plain)  # zero column = base model
    with_strokes = run("drawn", "sketch", tmp_path / "sketch.png")
    blank = run("blank", "sketch", tmp_path / "blank.png")
    assert np.array_equal(with_strokes[~hole], src[~hole]) and np.array_equal(blank[~hole], src[~hole])
    assert not np.array_equal(with_strokes[hole], blank[hole])  # the strokes steer the hole
    # A checkpoint without a sketch channel is refused with one sentence.
    args = _args(files, *base, tmp_path / "bad", "--sketch", tmp_path / "sketch.png", ckpt="exe")
    assert cli.run(inpaint.main, args) == 2
    assert "without a sketch channel" in capsys.readouterr().err


def test_runs_as_a_script(files, h, tmp_path):
    h.write_rgb(tmp_path / "a.png", 20, 18, seed=1)
    h.write_mask(tmp_path / "m.png", h.box_hole(20, 18, 5, 5, 12, 12))
    h.write_rgb(tmp_path / "ex.png", 16, 16, seed=2)
    args = _args(files, tmp_path / "a.png", tmp_path / "m.png", tmp_path / "ex.png", tmp_path / "out")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "inpaint.py"), *args],
                          capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "a_sample0.png").is_file() and (tmp_path / "out" / "a_sheet.png").is_file()


def test_model_sketch_keeps_only_strokes_inside_the_hole(h):
    H, W = 30, 24
    src = np.zeros((H, W, 3), np.uint8)
    hole = h.box_hole(H, W, 5, 4, 20, 12)
    prep = prepare(src, hole, 16)
    strokes = np.zeros((H, W), bool)
    strokes[0, :] = True                              # outside the hole
    assert model_sketch(prep, strokes).sum() == 0
    strokes[10, 6] = True                             # one pixel inside survives the 30 -> 16 downscale
    sk = model_sketch(prep, strokes)
    assert 1 <= sk.sum() <= 2 and bool((sk <= prep.mask).all())  # footprints of 30 -> 16 overlap


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_device_matches_cpu(files, h, tmp_path):
    src = h.write_rgb(tmp_path / "a.png", 30, 22, seed=1)
    hole = h.write_mask(tmp_path / "m.png", h.box_hole(30, 22, 5, 5, 20, 15))
    h.write_rgb(tmp_path / "ex.png", 16, 16, seed=2)
    base = [tmp_path / "a.png", tmp_path / "m.png", tmp_path / "ex.png"]
    assert inpaint.main(_args(files, *base, tmp_path / "cpu", "--no-sheet")) == 0
    assert inpaint.main(_args(files, *base, tmp_path / "gpu", "--no-sheet", "--device", "cuda")) == 0
    cpu, gpu = h.read(tmp_path / "cpu" / "a_sample0.png"), h.read(tmp_path / "gpu" / "a_sample0.png")
    assert np.array_equal(gpu[~hole], src[~hole])
    assert np.abs(gpu.astype(int) - cpu.astype(int)).max() <= 2  # same z / noise, float rounding only
