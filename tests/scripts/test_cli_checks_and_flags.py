"""scripts/inpaint.py folder runs: every input checked before anything is written (all problems at
once), --skip-existing resuming an interrupted run; implausible-mask warnings in inpaint.py and
style_mix.py; the --which flag; small message fixes."""
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from models import Discriminator, make_checkpoint, save_checkpoint
from models.exegan import EXEGAN
from inference.io import article, mask_warnings, read_exemplar, to_uint8
from inference import runtime
from scripts import cli_common as cli
from scripts import inpaint, style_mix


def _args(files, image, mask, exemplar, out, *extra, ckpt=None):
    return ["--ckpt", ckpt or files["exe"], "--psp", files["psp"], "--image", str(image), "--mask", str(mask),
            "--exemplar", str(exemplar), "--out", str(out), *map(str, extra)]


def _folder(h, root, n=4, size=(20, 18)):
    H, W = size
    for i in range(n):
        h.write_rgb(root / "img" / f"f{i}.png", H, W, seed=i)
        h.write_mask(root / "mask" / f"f{i}.png", h.box_hole(H, W, 4, 3 + i, 12, 10 + i))
        h.write_rgb(root / "ex" / f"f{i}.png", 16, 16, seed=10 + i)


def test_folder_run_lists_every_bad_input_and_writes_nothing(files, h, tmp_path, capsys):
    _folder(h, tmp_path, n=5)
    (tmp_path / "img" / "f1.png").write_bytes(b"not an image")                         # decode
    h.write_mask(tmp_path / "mask" / "f2.png", np.ones((7, 9), bool))                   # size
    Image.new("L", (18, 20), 128).save(tmp_path / "mask" / "f3.png")                    # mask values
    (tmp_path / "ex" / "f4.png").write_bytes(b"\x89PNG broken")                          # exemplar
    out = tmp_path / "out"
    rc = cli.run(inpaint.main, _args(files, tmp_path / "img", tmp_path / "mask", tmp_path / "ex", out))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: 4 problems with the inputs, nothing was written:")
    lines = err.strip().splitlines()[1:]
    assert len(lines) == 4
    assert "f1.png" in lines[0] and "Cannot decode image" in lines[0]
    assert "f2.png is 9x7 but its image is 18x20" in lines[1]
    assert "f3.png" in lines[2] and "not a binary mask" in lines[2]
    assert "f4.png" in lines[3] and "Cannot decode image" in lines[3]
    # Before the fix f0.png's results were written before f1.png stopped the run.
    assert not out.exists() or not any(out.rglob("*.png"))


def test_a_missing_exemplar_is_reported_before_anything_is_written(files, h, tmp_path, capsys):
    _folder(h, tmp_path, n=3)
    os.remove(tmp_path / "ex" / "f2.png")
    out = tmp_path / "out"
    assert cli.run(inpaint.main, _args(files, tmp_path / "img", tmp_path / "mask", tmp_path / "ex", out)) == 2
    err = capsys.readouterr().err
    assert "has no exemplar for 1 of 3 image(s) ('f2')" in err and not out.exists()
    os.remove(tmp_path / "mask" / "f1.png")  # a mask missing too: both reported together
    assert cli.run(inpaint.main, _args(files, tmp_path / "img", tmp_path / "mask", tmp_path / "ex", out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 2 problems with the inputs, nothing was written:")
    lines = err.splitlines()
    assert "has no mask for 1 of 3 image(s) ('f1')" in lines[1] and "('f2')" in lines[2] and not out.exists()


def test_skip_existing_resumes_an_interrupted_folder_run(files, h, tmp_path, monkeypatch, capsys):
    _folder(h, tmp_path, n=3)
    base = [tmp_path / "img", tmp_path / "mask", tmp_path / "ex"]
    full = tmp_path / "full"
    assert inpaint.main(_args(files, *base, full, "--samples", 2)) == 0
    expected = sorted(p.relative_to(full).as_posix() for p in full.rglob("*.png"))

    # Interrupt a second run after the first sample of the second image.
    out = tmp_path / "out"
    real_save, calls = cli.OutputWriter.save, []

    def save(self, img, path, meta=None):
        if len(calls) == 4:  # f0: 2 samples + sheet; f1: sample 0, then "killed"
            raise KeyboardInterrupt
        calls.append(path)
        return real_save(self, img, path, meta)

    monkeypatch.setattr(cli.OutputWriter, "save", save)
    with pytest.raises(KeyboardInterrupt):
        inpaint.main(_args(files, *base, out, "--samples", 2))
    monkeypatch.setattr(cli.OutputWriter, "save", real_save)
    assert sorted(os.listdir(out)) == ["f0_sample0.png", "f0_sample1.png", "f0_sheet.png", "f1_sample0.png"]

    capsys.readouterr()
    assert inpaint.main(_args(files, *base, out, "--samples", 2, "--skip-existing")) == 0
    assert "1 of 3 image(s) already done" in capsys.readouterr().out
    # Before the fix there was no --skip-existing: a rerun wrote f0-1_sample0.png ... duplicates.
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == expected
    for name in expected:
        assert np.array_equal(h.read(out / name), h.read(full / name)), name
    # Once more: everything is done, nothing changes.
    before = {n: (out / n).read_bytes() for n in expected}
    assert inpaint.main(_args(files, *base, out, "--samples", 2, "--skip-existing")) == 0
    assert {n: (out / n).read_bytes() for n in expected} == before


def test_skip_existing_refuses_files_made_with_other_settings(files, h, tmp_path, capsys):
    _folder(h, tmp_path, n=2)
    base = [tmp_path / "img", tmp_path / "mask", tmp_path / "ex"]
    out = tmp_path / "out"
    assert inpaint.main(_args(files, *base, out, "--seed", 1)) == 0
    os.remove(out / "f1_sheet.png")
    rc = cli.run(inpaint.main, _args(files, *base, out, "--seed", 2, "--skip-existing"))
    err = capsys.readouterr().err
    assert rc == 2 and "f0_sample0.png exists but it was made with seed '1', this run uses '2'" in err
    assert not (out / "f1_sheet.png").exists()


@pytest.mark.parametrize("case, needle", [
    ("large", "the hole covers 80 % of the image (more than 70 %)"),
    ("inverted", "the mask looks inverted: the hole covers 75 % of the image and surrounds the known "
                 "pixels; if black marks the hole in your masks, pass --mask-hole black."),
    ("plain", None),
])
def test_implausible_masks_warn_in_both_clis(files, h, tmp_path, capsys, case, needle):
    H, W = 20, 20
    h.write_rgb(tmp_path / "a.png", H, W, seed=1)
    h.write_rgb(tmp_path / "ex.png", 16, 16, seed=2)
    hole = {"large": h.box_hole(H, W, 0, 0, 16, 20),                # 80 %, known strip at the bottom
            "inverted": ~h.box_hole(H, W, 5, 5, 15, 15),            # a "hole" drawn black on white
            "plain": h.box_hole(H, W, 5, 5, 12, 12)}[case]
    h.write_mask(tmp_path / "m.png", hole)
    assert inpaint.main(_args(files, tmp_path / "a.png", tmp_path / "m.png", tmp_path / "ex.png",
                              tmp_path / "out")) == 0
    err = capsys.readouterr().err
    assert style_mix.main(["--ckpt", files["exe"], "--psp", files["psp"], "--image", str(tmp_path / "a.png"),
                           "--mask", str(tmp_path / "m.png"), "--exemplar-a", str(tmp_path / "ex.png"),
                           "--exemplar-b", str(tmp_path / "ex.png"), "--out", str(tmp_path / "mix")]) == 0
    err_mix = capsys.readouterr().err
    for e in (err, err_mix):
        if needle is None:
            assert "warning" not in e
        else:
            assert e.count("warning: ") == 1 and f"warning: {tmp_path / 'm.png'}: {needle}" in e


def test_mask_warnings_thresholds():
    hole = np.zeros((10, 10), bool)
    hole[:7] = True                                    # exactly 70 %: no warning
    assert mask_warnings(hole) == []
    hole[7, :1] = True                                 # 71 %
    assert mask_warnings(hole)[0].startswith("the hole covers 71 %")
    assert "pass --mask-hole white" in mask_warnings(~np.pad(np.ones((4, 4), bool), 3), "black")[0]


def test_which_picks_the_generator_of_a_training_checkpoint(files, h, tmp_path, capsys):
    from models import Generator

    SIZE = h.SIZE

    def tiny_generator(seed):  # the architecture of the `files` fixture's generator
        torch.manual_seed(seed)
        g = Generator(SIZE, style_dim=16, n_mlp=2, channel_multiplier=2, channel_max=16)
        with torch.no_grad():
            for name, p in g.named_parameters():
                if name.endswith("noise.weight"):
                    p.fill_(0.3)
        return g.eval()

    g, g_ema = tiny_generator(1), tiny_generator(2)
    ckpt = str(tmp_path / "two.pt")
    save_checkpoint(make_checkpoint(g=g, d=Discriminator(SIZE, channel_multiplier=2, channel_max=16),
                                    g_ema=g_ema, step=1), ckpt)
    h.write_rgb(tmp_path / "a.png", SIZE, SIZE, seed=3)
    h.write_mask(tmp_path / "m.png", h.box_hole(SIZE, SIZE, 3, 3, 12, 12))
    h.write_rgb(tmp_path / "ex.png", SIZE, SIZE, seed=4)
    base = [tmp_path / "a.png", tmp_path / "m.png", tmp_path / "ex.png"]
    outs = {}
    for which in ("g", "g_ema"):
        assert inpaint.main(_args(files, *base, tmp_path / which, "--no-sheet", "--which", which, ckpt=ckpt)) == 0
        outs[which] = h.read(tmp_path / which / "a_sample0.png")
        model = EXEGAN.from_checkpoints(ckpt, files["psp"], which=which)
        image = torch.from_numpy(h.read(tmp_path / "a.png").copy()).permute(2, 0, 1).float() / 127.5 - 1
        mask = torch.from_numpy(h.read(tmp_path / "m.png")[..., 0] > 127).float()[None]
        want = to_uint8(model.inpaint(image, mask, read_exemplar(str(tmp_path / "ex.png"), SIZE), seed=0))
        assert np.array_equal(outs[which], want)
    assert not np.array_equal(outs["g"], outs["g_ema"])
    assert cli.run(inpaint.main, _args(files, *base, tmp_path / "bad", "--which", "gen", ckpt=ckpt)) == 2
    err = capsys.readouterr().err
    assert "has no 'gen' state dict" in err and "--which" in err and "\n" not in err.strip()


def test_messages_use_an_before_exemplar(files, h, tmp_path, capsys):
    h.write_rgb(tmp_path / "a.png", 20, 20, seed=1)
    h.write_mask(tmp_path / "m.png", h.box_hole(20, 20, 5, 5, 10, 10))
    rc = cli.run(inpaint.main, _args(files, tmp_path / "a.png", tmp_path / "m.png", tmp_path / "nope.png",
                                     tmp_path / "out"))
    err = capsys.readouterr().err
    assert rc == 2 and "give an exemplar file" in err and "a exemplar" not in err
    assert article("exemplar") == "an" and article("mask") == "a"


@pytest.mark.parametrize("script", ["test.py", "train.py", "scripts/inpaint.py", "scripts/style_mix.py",
                                    "scripts/benchmark.py", "scripts/benchmark_single.py",
                                    "scripts/prepare_data.py", "scripts/make_mask_buckets.py",
                                    "scripts/align_faces.py"])
def test_help_texts_print_no_second_default(script):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, os.path.join(root, script), "--help"], capture_output=True,
                          text=True, cwd=root, env=dict(os.environ, COLUMNS="200"))
    assert proc.returncode == 0, proc.stderr
    assert "(default: None)" not in proc.stdout
    blocks = re.split(r"\n(?=  -)", proc.stdout)   # one block per option
    for block in blocks:
        assert len(re.findall(r"\(default\b", block)) <= 1, block


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused_in_every_cli(files, h, tmp_path, capsys, value):
    """argparse's float() takes nan and inf; they used to run as psi = 1 while the records said nan."""
    _folder(h, tmp_path, n=1)
    img, mask, ex = tmp_path / "img" / "f0.png", tmp_path / "mask" / "f0.png", tmp_path / "ex" / "f0.png"
    runs = [(inpaint.main, _args(files, img, mask, ex, tmp_path / "o1", f"--truncation={value}"), "--truncation"),
            (inpaint.main, _args(files, img, mask, ex, tmp_path / "o2", "--align", f"--crop-scale={value}"),
             "--crop-scale"),
            (style_mix.main, ["--ckpt", files["exe"], "--psp", files["psp"], "--image", str(img), "--mask",
                              str(mask), "--exemplar-a", str(ex), "--exemplar-b", str(ex), "--out",
                              str(tmp_path / "o3"), f"--truncation={value}"], "--truncation")]
    for main, argv, flag in runs:
        assert cli.run(main, argv) == 2
        err = capsys.readouterr().err
        assert err == f"error: {flag} must be a finite number, got {float(value)}.\n", err
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))


def test_align_faces_refuses_nan_landmarks_huge_coordinates_and_sizes(h, tmp_path, capsys):
    from scripts import align_faces
    h.write_rgb(tmp_path / "p.png", 40, 40, seed=0)
    cases = [("[[1, 2], [3, NaN], [5, 6], [7, 8], [9, 10]]", [], "holds a landmark that is not a finite number"),
             ("[[1e300, 0], [-1e300, 0], [0, 1e300], [1, 1], [2, 2]]", [], "no usable face transform"),
             ("[[10, 10], [20, 10], [15, 15], [12, 20], [18, 20]]", ["--size", "100000"],
              "--size must be from 8 to 4096 pixels"),
             ("[[10, 10], [20, 10], [15, 15], [12, 20], [18, 20]]", ["--size", "0"], "--size must be from 8")]
    for text, extra, want in cases:
        (tmp_path / "p.json").write_text(text)
        argv = ["--image", str(tmp_path / "p.png"), "--landmarks", str(tmp_path / "p.json"),
                "--out", str(tmp_path / "out"), *extra]
        assert cli.run(align_faces.main, argv) == 2
        err = capsys.readouterr().err
        assert want in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_unwritable_outputs_are_one_sentence_before_any_work(files, h, tmp_path, capsys, monkeypatch):
    from scripts import align_faces
    _folder(h, tmp_path, n=1)
    img, mask, ex = tmp_path / "img" / "f0.png", tmp_path / "mask" / "f0.png", tmp_path / "ex" / "f0.png"
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "f0.json").write_text("[[5, 6], [12, 6], [9, 10], [6, 14], [12, 14]]")
    loads = []
    monkeypatch.setattr(runtime, "load_model", lambda *a, **k: loads.append(a))
    for out, want in ((tmp_path / "a_file", "is a file; give a folder"),
                      (tmp_path / "a_file" / "sub", "cannot be created:"),
                      ("/proc/exegan-test/out", "cannot be written (/proc:")):
        assert cli.run(inpaint.main, _args(files, img, mask, ex, out)) == 2
        err = capsys.readouterr().err
        assert want in err and err.count("\n") == 1, err
        assert cli.run(align_faces.main, ["--image", str(img), "--landmarks", str(tmp_path / "f0.json"),
                                          "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert want in err and err.count("\n") == 1, err
    assert loads == [] and sorted(os.listdir(tmp_path)) == ["a_file", "ex", "f0.json", "img", "mask"]


def test_a_full_disk_while_writing_keeps_what_was_written_and_leaves_no_partial_file(files, h, tmp_path, capsys,
                                                                                   monkeypatch):
    import errno
    _folder(h, tmp_path, n=2)
    real = Image.Image.save
    calls = []

    def save(self, fp, *a, **k):
        calls.append(1)
        if len(calls) == 3:                     # the first image's two files go through, then the disk is full
            fp.write(b"\x89PNG partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", save)
    out = tmp_path / "out"
    assert cli.run(inpaint.main, _args(files, tmp_path / "img", tmp_path / "mask", tmp_path / "ex", out)) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "No space left on device" in err and "--skip-existing" in err, err
    assert sorted(os.listdir(out)) == ["f0_sample0.png", "f0_sheet.png"]   # no half-written f1 file


def test_mask_warnings_carry_their_kind_and_name_the_callers_control():
    inverted = ~np.pad(np.ones((4, 4), bool), 3)
    (w,) = mask_warnings(inverted, "black")
    assert w.kind == "inverted" and w.endswith("pass --mask-hole white.")
    (w,) = mask_warnings(inverted, "white", flip="tick the box")
    assert w.kind == "inverted" and w.endswith("if black marks the hole in your masks, tick the box.")
    (w,) = mask_warnings(np.pad(np.ones((9, 9), bool), ((0, 1), (0, 1))))
    assert w.kind == "large_hole"
