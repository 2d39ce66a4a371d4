"""test.py --pred / --gt end to end: scoring completions that exist gives the in-memory numbers,
pairing by name patterns, the flags it refuses, unmatched or doubly matched files, unwritable
results directories (the files: tests/testpy_common.py).
"""
import json
import os
import pathlib

import pytest
from PIL import Image

from tests.metrics.conftest import inception_weights_file  # noqa: F401  (fixture of files)
from tests.testpy_common import entry_fixture, files_fixture  # noqa: F401  (fixtures)
from tests.testpy_common import (ALL_KEYS, SIZE, read_csv, real_images, run_cli, sha256,
                                 strict_json, write_mask)

pytestmark = pytest.mark.filterwarnings("ignore::metrics.ids.IDSWarning")


PAPER_AND_EXTRA = ("fid", "ids", "lpips", "psnr", "ssim", "l1", "ssim_gauss11", "l1_mean")


@pytest.fixture(scope="module")
def in_memory(files, entry, tmp_path_factory):
    """An in-memory evaluation with 2 repeats whose completions and masks are saved as PNGs."""
    out = tmp_path_factory.mktemp("mem") / "run"
    rc = entry.main([str(a) for a in (
        "--ckpt", files.ours, "--psp", files.psp, "--data", files.faces,
        "--inception", files.inception, "--lpips-vgg", files.vgg, "--n-images", 4, "--batch", 2,
        "--masks", "center", "--repeats", 2, "--metrics", *PAPER_AND_EXTRA, "--out", out,
        "--save-images", "--no-progress")])
    assert rc == 0
    return out, json.loads((out / "results.json").read_text())


def test_pred_gt_gives_the_in_memory_numbers(files, entry, capsys, in_memory, tmp_path,
                                             monkeypatch):
    from metrics.evaluator import Evaluator
    mem_dir, mem = in_memory
    rows_seen = []
    features = Evaluator._features

    def counting(self, images):
        rows_seen.append(images.shape[0])
        return features(self, images)
    monkeypatch.setattr(Evaluator, "_features", counting)
    out = tmp_path / "scored"
    rc, stdout, err = run_cli(
        entry, capsys, "--pred", mem_dir / "images" / "all" / "r0",
        mem_dir / "images" / "all" / "r1",
        "--gt", files.faces, "--masks", mem_dir / "masks" / "all" / "r0",
        "--inception", files.inception, "--lpips-vgg", files.vgg, "--batch", 2,
        "--metrics", *PAPER_AND_EXTRA, "--out", out, "--no-progress")
    assert rc == 0, err
    doc = strict_json(out / "results.json")
    keys = set(mem["summary"]["all"])
    assert keys == ALL_KEYS | {"ssim_gauss11", "l1_mean", "l1_mean_hole"}
    assert set(doc["summary"]["all"]) == keys
    for k in keys:
        for r in (0, 1):
            assert doc["repeats"][r]["results"]["all"][k] == pytest.approx(
                mem["repeats"][r]["results"]["all"][k], rel=1e-9, abs=1e-12), (k, r)
        assert doc["summary"]["all"][k]["std"] == pytest.approx(
            mem["summary"]["all"][k]["std"], rel=1e-6, abs=1e-12), k
    # Ground-truth Inception features once (4 images), completions per repeat (2 x 4).
    assert sum(rows_seen) == 4 + 2 * 4
    rec = doc["protocol"]
    assert rec["repeats"] == 2 and rec["std_ddof"] == 0 and rec["n_images"] == 4
    assert rec["evaluator"]["inception_sha256"] == sha256(files.inception)
    rows = read_csv(out / "results.csv")
    assert [r["stat"] for r in rows] == ["mean", "std", "repeat", "repeat"]
    pairs = read_csv(out / "pairs.csv")
    assert len(pairs) == 8 and pairs[0]["completion"].endswith(".png")


def test_pred_gt_pair_by_patterns_in_one_folder(files, entry, capsys, in_memory, tmp_path):
    """1_real / 1_mask / 1_out in one folder, paired through --pair-by; without
    it the error shows the names it looked for and the option that pairs them."""
    import shutil
    mem_dir, mem = in_memory
    ds, _ = real_images(files.faces)
    both = tmp_path / "one_folder"
    both.mkdir()
    gt_only = tmp_path / "gt_real"
    gt_only.mkdir()
    for path, name in zip(ds.paths, ds.names):
        stem = os.path.splitext(name)[0]
        shutil.copy(path, both / f"{stem}_real.png")
        shutil.copy(path, gt_only / f"{stem}_real.png")
        shutil.copy(mem_dir / "images" / "all" / "r0" / f"{stem}.png", both / f"{stem}_out.png")
        shutil.copy(mem_dir / "masks" / "all" / "r0" / f"{stem}.png", both / f"{stem}_mask.png")
    out = tmp_path / "patterns"
    rc, _, err = run_cli(entry, capsys, "--pred", both, "--gt", both, "--masks", both, "--pair-by",
                      "gt={name}_real", "pred={name}_out", "mask={name}_mask", "--batch", 2,
                      "--metrics", "psnr", "ssim", "l1", "--out", out, "--no-progress")
    assert rc == 0, err
    doc = strict_json(out / "results.json")
    for k in ("psnr", "ssim", "l1", "l1_hole", "psnr_hole"):
        assert doc["summary"]["all"][k]["mean"] == pytest.approx(
            mem["repeats"][0]["results"]["all"][k], rel=1e-9)
    assert doc["protocol"]["pair_by"] == {"image": "{name}_real", "pred": "{name}_out",
                                          "mask": "{name}_mask"}
    # The same folder for --pred and --gt without patterns would score images against themselves.
    rc, _, err = run_cli(entry, capsys, "--pred", both, "--gt", both, "--metrics", "l1",
                      "--out", tmp_path / "self", "--no-progress")
    assert rc == 2 and "scored against itself" in err and not (tmp_path / "self").exists()
    # Completions named x.png, ground truth x_real.png: the message names the expected file and
    # the --pair-by option.
    stem = os.path.splitext(ds.names[0])[0]
    rc, _, err = run_cli(entry, capsys, "--pred", mem_dir / "images" / "all" / "r0", "--gt", gt_only,
                      "--metrics", "l1", "--out", tmp_path / "x", "--no-progress")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert "has no ground-truth image for 4 of 4 image(s)" in lines[0]
    assert f"looked for '{stem}.*'" in lines[0]
    assert "suggest --pair-by gt={name}_real" in lines[0]


def test_pred_mode_refuses_flags_it_would_ignore_and_holeless_masks(files, entry, capsys,
                                                                  in_memory, tmp_path):
    mem_dir, _ = in_memory
    pred = mem_dir / "images" / "all" / "r0"
    holeless = tmp_path / "holeless"
    holeless.mkdir()
    for name in sorted(os.listdir(pred)):
        write_mask(holeless / name, SIZE, 0 if name == sorted(os.listdir(pred))[1] else 3)
    cases = [
        (["--ckpt", files.ours], "--ckpt has no effect with --pred"),
        (["--repeats", 2], "--repeats has no effect with --pred"),
        (["--masks", "center"], "With --pred, --masks takes the folder"),
        (["--masks", holeless], "has no hole pixel at 16x16"),
        (["--pair-by", "sketch={name}"], "is not ROLE=PATTERN"),
        (["--pair-by", "mask=_mask"], "must contain {name} exactly once"),
    ]
    for k, (extra, expected) in enumerate(cases):
        out = tmp_path / f"o{k}"
        rc, _, err = run_cli(entry, capsys, "--pred", pred, "--gt", files.faces, "--metrics", "l1",
                          "--no-progress", "--out", out, *extra)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and expected in lines[0], (extra, err)
        assert not out.exists()


def test_paired_masks_and_exemplars_pair_by_pattern(files, entry, capsys, tmp_path):
    """masks named <image>_mask and exemplars <image>_exe pair through --pair-by,
    with the same numbers as masks / exemplars named like their images."""
    ds, _ = real_images(files.faces)
    plain_m, plain_e, pat = tmp_path / "pm", tmp_path / "pe", tmp_path / "pat"
    for d in (plain_m, plain_e, pat):
        d.mkdir()
    for k, (path, name) in enumerate(zip(ds.paths, ds.names)):
        stem = os.path.splitext(name)[0]
        write_mask(plain_m / name, SIZE, 3 + k)
        write_mask(pat / f"{stem}_mask.png", SIZE, 3 + k)
        ex = ds.paths[(k + 1) % len(ds.paths)]
        Image.open(ex).save(plain_e / name)
        Image.open(ex).save(pat / f"{stem}_exe.png")
    common = ["--ckpt", files.ours, "--psp", files.psp, "--data", files.faces, "--metrics",
              "psnr", "l1", "--batch", 2, "--no-progress"]
    rc, _, err = run_cli(entry, capsys, *common, "--masks", "paired", plain_m, "--exemplars",
                      "folder", plain_e, "--out", tmp_path / "plain")
    assert rc == 0, err
    rc, _, err = run_cli(entry, capsys, *common, "--masks", "paired", pat, "--exemplars", "folder",
                      pat, "--pair-by", "mask={name}_mask", "exemplar={name}_exe",
                      "--out", tmp_path / "pattern")
    assert rc == 0, err
    a = strict_json(tmp_path / "plain" / "results.json")["summary"]["all"]
    b = strict_json(tmp_path / "pattern" / "results.json")["summary"]["all"]
    assert {k: v["mean"] for k, v in a.items()} == {k: v["mean"] for k, v in b.items()}
    # Without the option: the expected name and the option in one sentence.
    rc, _, err = run_cli(entry, capsys, *common, "--masks", "paired", pat, "--out", tmp_path / "no")
    assert rc == 2 and "looked for" in err and "--pair-by" in err and "mask={name}_mask" in err


def _copy_tree(src, dst, rename=lambda stem: stem):
    import shutil
    dst.mkdir(parents=True, exist_ok=True)
    for name in sorted(os.listdir(src)):
        stem, ext = os.path.splitext(name)
        shutil.copy(src / name, dst / f"{rename(stem)}{ext}")
    return dst


def test_pred_unmatched_or_doubly_matched_files_are_errors(files, entry, capsys, in_memory,
                                                          tmp_path):
    """Fewer completions than ground truth, a completion in a sub-folder that falls back to a
    ground truth already paired, and an extra file in a later repeat: each one sentence that
    lists the files, nothing written; --allow-subset scores a subset on purpose, recorded."""
    mem_dir, mem = in_memory
    r0, r1 = mem_dir / "images" / "all" / "r0", mem_dir / "images" / "all" / "r1"
    names = sorted(os.listdir(r0))
    common = ["--gt", files.faces, "--metrics", "l1", "--batch", 2, "--no-progress"]

    fewer = _copy_tree(r0, tmp_path / "fewer")
    os.remove(fewer / names[-1])
    rc, _, err = run_cli(entry, capsys, "--pred", fewer, *common, "--out", tmp_path / "o1")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert "has 1 of 4 ground-truth image(s) without a completion" in lines[0]
    assert f"'{names[-1]}'" in lines[0] and "--allow-subset" in lines[0]
    assert not (tmp_path / "o1").exists()
    rc, _, err = run_cli(entry, capsys, "--pred", fewer, *common, "--allow-subset",
                      "--out", tmp_path / "o2")
    assert rc == 0, err
    doc = strict_json(tmp_path / "o2" / "results.json")
    assert doc["protocol"]["n_images"] == 3
    assert doc["protocol"]["subset"] == {"allow_subset": True, "gt_images": 4,
                                         "gt_without_completion": 1,
                                         "first_without_completion": [names[-1]]}
    assert any("--allow-subset" in w for w in doc["protocol"]["warnings"])
    # A full set records that it is not a subset.
    rc, _, err = run_cli(entry, capsys, "--pred", r0, *common, "--out", tmp_path / "o3")
    assert rc == 0, err
    assert strict_json(tmp_path / "o3" / "results.json")["protocol"]["subset"][
        "gt_without_completion"] == 0

    twice = _copy_tree(r0, tmp_path / "twice")
    _copy_tree(r0, twice / "sub")
    rc, _, err = run_cli(entry, capsys, "--pred", twice, *common, "--out", tmp_path / "o4")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert "4 ground-truth image(s)" in lines[0] and "more than one completion" in lines[0]
    assert f"'{names[0]}', 'sub/{names[0]}'" in lines[0]
    assert not (tmp_path / "o4").exists()

    extra = _copy_tree(r1, tmp_path / "r1_extra")
    _copy_tree(r1, extra, rename=lambda stem: stem + "_copy")
    rc, _, err = run_cli(entry, capsys, "--pred", r0, extra, *common, "--out", tmp_path / "o5")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert "has 4 completion(s) that no completion of --pred" in lines[0]
    assert not (tmp_path / "o5").exists()

    rc, _, err = run_cli(entry, capsys, "--ckpt", files.ours, "--psp", files.psp, "--data",
                      files.faces, "--allow-subset", "--out", tmp_path / "o6")
    assert rc == 2 and "--allow-subset only applies to --pred" in err
    rc, _, err = run_cli(entry, capsys, "--pred", r0, *common, "--n-images", 0,
                      "--out", tmp_path / "o7")
    assert rc == 2 and "--n-images must be at least 1, got 0" in err
    assert not (tmp_path / "o7").exists()


def test_pred_pairing_hint_follows_the_roles_and_masks_are_no_ground_truth(
        files, entry, capsys, in_memory, tmp_path):
    """The layout 1_real / 1_mask / 1_out: the hint gives the ground truth the '_real' files,
    never the '_mask' ones, and a pairing that takes masks as ground truth is refused."""
    mem_dir, _ = in_memory
    ds, _ = real_images(files.faces)
    both = tmp_path / "both"
    _copy_tree(mem_dir / "images" / "all" / "r0", both, rename=lambda s: s + "_out")
    _copy_tree(mem_dir / "masks" / "all" / "r0", both, rename=lambda s: s + "_mask")
    _copy_tree(pathlib.Path(files.faces), both, rename=lambda s: s + "_real")
    common = ["--pred", both, "--gt", both, "--metrics", "l1", "--no-progress"]
    rc, _, err = run_cli(entry, capsys, *common, "--pair-by", "pred={name}_out",
                      "--out", tmp_path / "h")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert "suggest --pair-by pred={name}_out gt={name}_real" in lines[0]
    assert "gt={name}_mask" not in lines[0]
    # Following the old hint scored the completions against the masks and exited 0.
    for k, extra in enumerate((["--pair-by", "pred={name}_out", "gt={name}_mask"],
                               ["--masks", both, "--pair-by", "pred={name}_out",
                                "mask={name}_m", "gt={name}_m"])):
        if k == 1:
            _copy_tree(mem_dir / "masks" / "all" / "r0", both, rename=lambda s: s + "_m")
        out = tmp_path / f"m{k}"
        rc, _, err = run_cli(entry, capsys, *common, *extra, "--out", out)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1, (extra, err)
        assert "pairs the completions with mask files as ground truth" in lines[0]
        assert "(e.g. --pair-by gt={name}_real)" in lines[0]
        assert not out.exists()
    # Masks named like the images in a folder of their own: refused by their content.
    as_gt = _copy_tree(mem_dir / "masks" / "all" / "r0", tmp_path / "masks_as_gt")
    rc, _, err = run_cli(entry, capsys, "--pred", mem_dir / "images" / "all" / "r0", "--gt", as_gt,
                      "--metrics", "l1", "--no-progress", "--out", tmp_path / "m2")
    assert rc == 2 and "is a black-and-white mask image" in err, err
    assert not (tmp_path / "m2").exists()
    # The correct pairing scores.
    rc, _, err = run_cli(entry, capsys, *common, "--pair-by", "pred={name}_out", "gt={name}_real",
                      "--out", tmp_path / "ok")
    assert rc == 0, err
    assert len(ds) == 4


def test_unwritable_results_directories_are_one_sentence(files, entry, capsys, in_memory,
                                                         tmp_path):
    mem_dir, _ = in_memory
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, needle in ((a_file, "is a file, not a folder; choose a new --out"),
                        (a_file / "sub", "(Not a directory); choose a writable --out"),
                        ("/proc/exegan-no-such/results", "choose a writable --out")):
        rc, _, err = run_cli(entry, capsys, "--pred", mem_dir / "images" / "all" / "r0", "--gt",
                          files.faces, "--metrics", "l1", "--no-progress", "--out", out)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and needle in lines[0], (out, err)
    assert a_file.read_text() == "x"
