"""--pair-by in scripts/inpaint.py: paired sets named ``x.png`` + ``x_mask.png``
or ``1_real.png`` + ``1_mask.png`` + ``1_exe.png`` (also all in one folder) pair through the same
rule as test.py (datasets/pairing.py); without the option the error names the file it looked for
and the option that pairs the folder."""
import os

import numpy as np

from scripts import cli_common as cli
from scripts import inpaint


def _run(files, *args):
    return ["--ckpt", files["exe"], "--psp", files["psp"], *map(str, args)]


def test_suffix_named_masks_in_the_image_folder(files, h, tmp_path, capsys):
    d = tmp_path / "set"
    srcs, holes = {}, {}
    for key in ("a", "b"):
        srcs[key] = h.write_rgb(d / f"{key}.png", 20, 18, seed=len(key) + ord(key))
        holes[key] = h.write_mask(d / f"{key}_mask.png", h.box_hole(20, 18, 4, 3, 12, 11))
    h.write_rgb(tmp_path / "ex.png", 16, 16, seed=9)
    out = tmp_path / "out"
    args = _run(files, "--image", d, "--mask", d, "--exemplar", tmp_path / "ex.png", "--out", out)
    # Before: every file of the folder was an image ('a_mask' too) and its own mask; now the
    # message shows the option that pairs the folder.
    assert cli.run(inpaint.main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "every image would be its own mask" in err[0]
    assert err[0].endswith("tell them apart with --pair-by mask={name}_mask.")
    assert cli.run(inpaint.main, args + ["--pair-by", "mask={name}_mask"]) == 0
    assert sorted(os.listdir(out)) == ["a_sample0.png", "a_sheet.png", "b_sample0.png",
                                       "b_sheet.png"]
    for key in ("a", "b"):
        r = h.read(out / f"{key}_sample0.png")
        assert np.array_equal(r[~holes[key]], srcs[key][~holes[key]])   # its own mask was used


def test_real_mask_exe_triplets_and_the_hint_without_the_option(files, h, tmp_path, capsys):
    d = tmp_path / "triplets"
    srcs, holes = {}, {}
    for i in (1, 2):
        srcs[i] = h.write_rgb(d / f"{i}_real.png", 18, 18, seed=i)
        holes[i] = h.write_mask(d / f"{i}_mask.png", h.box_hole(18, 18, 2 * i, 3, 10 + i, 12))
        h.write_rgb(d / f"{i}_exe.png", 16, 16, seed=10 + i)
    out = tmp_path / "out"
    pair_by = ["--pair-by", "image={name}_real", "mask={name}_mask", "exemplar={name}_exe"]
    assert cli.run(inpaint.main, _run(files, "--image", d, "--mask", d, "--exemplar", d,
                                      "--out", out, *pair_by)) == 0
    assert sorted(os.listdir(out)) == ["1_sample0.png", "1_sheet.png", "2_sample0.png",
                                       "2_sheet.png"]
    for i in (1, 2):
        r = h.read(out / f"{i}_sample0.png")
        assert np.array_equal(r[~holes[i]], srcs[i][~holes[i]])
    capsys.readouterr()  # the folder run's progress bar
    # Images in their own folder, masks named 1_mask: the message shows the expected name and
    # the option that pairs them.
    imgs, masks = tmp_path / "imgs", tmp_path / "masks"
    for i in (1, 2):
        h.write_rgb(imgs / f"{i}_real.png", 18, 18, seed=i)
        h.write_mask(masks / f"{i}_mask.png", holes[i])
    code = cli.run(inpaint.main, _run(files, "--image", imgs, "--mask", masks, "--exemplar",
                                      d / "1_exe.png", "--out", tmp_path / "o2"))
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "has no mask for 2 of 2 image(s) ('1_real', '2_real'): looked for '1_real.*'" in lines[0]
    assert "suggest --pair-by image={name}_real mask={name}_mask" in lines[0]
    assert not (tmp_path / "o2").exists()


def test_bad_pair_by_values_are_one_sentence(files, h, tmp_path, capsys):
    h.write_rgb(tmp_path / "a.png", 16, 16, seed=1)
    h.write_mask(tmp_path / "m.png", h.box_hole(16, 16, 2, 2, 8, 8))
    for value, needle in (("mask", "is not ROLE=PATTERN"), ("pred={name}", "is not ROLE=PATTERN"),
                          ("mask=m", "must contain {name} exactly once")):
        code = cli.run(inpaint.main, _run(files, "--image", tmp_path / "a.png", "--mask",
                                          tmp_path / "m.png", "--exemplar", tmp_path / "a.png",
                                          "--out", tmp_path / "o", "--pair-by", value))
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and needle in err[0], (value, err)
