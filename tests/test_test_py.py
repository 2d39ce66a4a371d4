"""test.py end to end on a checkpoint (the files: tests/testpy_common.py).

Checks: complete results.json / results.csv / pairs.csv with every metric and the protocol
record (file hashes, masks, exemplars, seeds, versions), per-bucket rows for irregular masks,
std over repeats, saved PNGs whose known pixels equal the input and whose PSNR equals the
reported one, config files and auto-numbered result directories, and one-sentence errors for
bad inputs (an existing results directory included). ``main()`` is called in-process (a
subprocess would pay the torch import again for nothing it checks beyond ``sys.exit(main())``).
"""
import json
import os
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.folder import ImageFolderDataset
from datasets.imaging import pil_to_tensor
from metrics.image_metrics import psnr
from metrics.standins import standin_style_encoder
from tests.metrics.conftest import inception_weights_file  # noqa: F401  (fixture of files)
from tests.testpy_common import entry_fixture, files_fixture  # noqa: F401  (fixtures)
from tests.testpy_common import (ALL_KEYS, SIZE, png, read_csv, real_images, run_cli, sha256,
                                 strict_json, write_mask)

pytestmark = pytest.mark.filterwarnings("ignore::metrics.ids.IDSWarning")


# ------------------------------------------------------------------------------------------------

def test_full_protocol_writes_complete_results_and_record(files, entry, capsys, tmp_path):
    out = tmp_path / "full"
    rc, stdout, err = run_cli(entry, capsys, "--ckpt", files.ours, "--psp", files.psp,
                           "--data", files.faces, "--inception", files.inception,
                           "--lpips-vgg", files.vgg, "--n-images", 3, "--batch", 3,
                           "--masks", "center", "--exemplars", "reverse", "--out", out,
                           "--save-images", "--no-progress")
    assert rc == 0, err
    assert "results:" in stdout and "±" in stdout
    doc = json.loads((out / "results.json").read_text())
    assert doc["format"] == "exegan-eval-v1"
    assert list(doc["summary"]) == ["all"]
    summary = doc["summary"]["all"]
    assert set(summary) == ALL_KEYS
    assert all(np.isfinite(v["mean"]) for v in summary.values())
    assert summary["n_images"]["mean"] == 3 and summary["psnr"]["std"] == 0.0
    assert 0 <= summary["u_ids"]["mean"] <= 0.5 and 0 <= summary["p_ids"]["mean"] <= 1

    rec = doc["protocol"]
    for key, path in (("checkpoint", files.ours), ("psp", files.psp),
                      ("inception", files.inception), ("lpips_vgg16", files.vgg)):
        assert rec["files"][key]["sha256"] == sha256(path)
        assert rec["files"][key]["path"] == os.path.abspath(path)
    assert rec["evaluator"]["inception_sha256"] == sha256(files.inception)
    assert rec["masks"]["kind"] == "center" and rec["exemplars"]["mode"] == "reverse"
    assert (rec["n_images"], rec["batch"], rec["repeats"], rec["seeds"]) == (3, 3, 1, [0])
    assert rec["device"] == "cpu" and rec["random_standins"] == []
    assert rec["versions"]["torch"] == torch.__version__
    assert rec["versions"]["numpy"] == np.__version__
    assert "commit" in rec["code"] and rec["started"] and rec["command"][0] == "test.py"
    assert rec["generator"]["size"] == SIZE and rec["data"]["n_available"] == 4

    rows = read_csv(out / "results.csv")
    assert [(r["bucket"], r["stat"], r["repeat"]) for r in rows] == [
        ("all", "mean", ""), ("all", "std", ""), ("all", "repeat", "0")]
    for m in ALL_KEYS:
        assert float(rows[0][m]) == summary[m]["mean"]
        assert float(rows[2][m]) == doc["repeats"][0]["results"]["all"][m]

    ds, real = real_images(files.faces)
    real = real[:3]
    pairs = read_csv(out / "pairs.csv")
    assert [p["exemplar"] for p in pairs] == list(reversed(ds.names[:3]))
    assert [p["image"] for p in pairs] == ds.names[:3]

    # Saved completions: known pixels are the input's, holes are filled, and the in-memory
    # PSNR is the PSNR of the saved 8-bit files.
    centre = np.zeros((SIZE, SIZE), bool)
    centre[4:12, 4:12] = True
    fakes = []
    for i, name in enumerate(ds.names[:3]):
        stem = os.path.splitext(name)[0]
        img = png(out / "images" / "all" / "r0" / f"{stem}.png")
        mask = png(out / "masks" / "all" / "r0" / f"{stem}.png") > 127
        assert np.array_equal(mask, centre)
        gt = png(ds.paths[i])
        assert np.array_equal(img[~mask], gt[~mask])
        assert not np.array_equal(img[mask], gt[mask])
        fakes.append(pil_to_tensor(Image.fromarray(img)))
    assert summary["psnr"]["mean"] == pytest.approx(float(psnr(torch.stack(fakes), real).mean()),
                                                    rel=1e-9)


def test_authors_checkpoint_irregular_buckets_with_repeats(files, entry, capsys, tmp_path):
    masks = tmp_path / "irregular"
    masks.mkdir()
    # 32 x 32 files, even hole rows so the nearest resize to 16 keeps the ratio exactly:
    # 2/32 (0-10 %), 4/32 and 6/32 (10-20 %), 12/32 (30-40 %), 28/32 (> 60 %, left out).
    ratios = {"a": 2, "b": 4, "c": 6, "e": 12, "f": 28}
    for name, rows in ratios.items():
        write_mask(masks / f"{name}.png", 32, rows)
    out = tmp_path / "irr"
    rc, _, err = run_cli(entry, capsys, "--ckpt", files.authors, "--psp", files.psp,
                      "--data", files.faces, "--n-images", 3, "--batch", 3, "--masks",
                      "irregular", masks, "--repeats", 2, "--seed", 10, "--metrics", "psnr",
                      "ssim", "l1", "--out", out, "--save-images", "--no-progress")
    assert rc == 0, err
    doc = json.loads((out / "results.json").read_text())
    buckets = ["all", "0-10", "10-20", "30-40"]
    assert list(doc["summary"]) == buckets
    rec = doc["protocol"]
    assert rec["files"]["checkpoint"]["sha256"] == sha256(files.authors)
    assert rec["masks"]["files_per_bucket"] == {"0-10": 1, "10-20": 2, "30-40": 1}
    assert rec["masks"]["empty_buckets_left_out"] == ["20-30", "40-50", "50-60"]
    assert rec["masks"]["files_above_60_percent_left_out"] == 1
    assert rec["seeds"] == [10, 11] and rec["mask_seeds"] == [10, 11]
    for b in buckets:
        for m in ("psnr", "ssim", "l1", "l1_hole", "psnr_hole"):
            s = doc["summary"][b][m]
            vals = [doc["repeats"][r]["results"][b][m] for r in (0, 1)]
            assert s["values"] == vals
            assert s["std"] == pytest.approx(np.std(vals))    # ddof 0, as the authors
        assert doc["summary"][b]["n_images"]["mean"] == (9 if b == "all" else 3)
    assert any(doc["summary"][b]["psnr"]["std"] > 0 for b in buckets)   # seeds matter

    rows = read_csv(out / "results.csv")
    assert len(rows) == 2 * len(buckets) + 2 * len(buckets)
    assert {(r["bucket"], r["repeat"], r["seed"]) for r in rows if r["stat"] == "repeat"} == {
        (b, str(r), str(10 + r)) for b in buckets for r in (0, 1)}

    ds, _ = real_images(files.faces)
    bounds = {"0-10": (0, 0.1), "10-20": (0.1, 0.2), "30-40": (0.3, 0.4)}
    pairs = read_csv(out / "pairs.csv")
    assert len(pairs) == 2 * 3 * 3
    for p in pairs:
        lo, hi = bounds[p["bucket"]]
        assert lo < ratios[p["mask"][0]] / 32 <= hi
        stem = os.path.splitext(p["image"])[0]
        sub = os.path.join(p["bucket"], f"r{p['repeat']}", f"{stem}.png")
        mask = png(out / "masks" / sub) > 127
        assert lo < mask.mean() <= hi
        img, gt = png(out / "images" / sub), png(ds.paths[int(p["index"])])
        assert np.array_equal(img[~mask], gt[~mask])


def test_config_file_auto_numbered_dirs_and_existing_dir_refused(files, entry, capsys,
                                                                  tmp_path, monkeypatch):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"pretrained:\n  style_encoder: {files.psp}\n"
                   f"data:\n  test: {files.faces}\n"
                   "eval:\n  n_images: 50\n  batch: 2\n  mask: free_form\n  exemplar: self\n"
                   "  seed: 5\n")
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(entry, capsys, "--config", cfg, "--ckpt", files.ours, "--metrics", "l1",
                      "--no-progress")
    assert rc == 0, err
    first = tmp_path / "runs" / "eval" / "00000-ours-free_form-self"
    rec = json.loads((first / "results.json").read_text())["protocol"]
    # The config's 50 images are capped at the 4 the folder has; the rest comes from `eval`.
    assert (rec["n_images"], rec["batch"], rec["seeds"]) == (4, 2, [5])
    assert rec["masks"]["kind"] == "free_form" and rec["exemplars"]["mode"] == "self"
    assert rec["config"] == str(cfg) and rec["files"]["psp"]["sha256"] == sha256(files.psp)

    # Flags override the config; the next run gets the next number.
    rc, _, err = run_cli(entry, capsys, "--config", cfg, "--ckpt", files.ours, "--metrics", "l1",
                      "--n-images", 2, "--masks", "center", "--seed", 1, "--no-progress")
    assert rc == 0, err
    rec = json.loads((tmp_path / "runs" / "eval" / "00001-ours-center-self" / "results.json")
                     .read_text())["protocol"]
    assert (rec["n_images"], rec["seeds"], rec["masks"]["kind"]) == (2, [1], "center")

    before = (first / "results.json").read_bytes()
    rc, _, err = run_cli(entry, capsys, "--config", cfg, "--ckpt", files.ours, "--metrics", "l1",
                      "--out", first, "--no-progress")
    assert rc == 2
    assert err.strip().splitlines() == [
        f"error: Results directory '{first}' already exists and is not empty; choose a new "
        f"--out (results are never overwritten)."]
    assert (first / "results.json").read_bytes() == before


def test_paired_masks_and_exemplar_folder(files, entry, capsys, tmp_path):
    ds, _ = real_images(files.faces)
    paired, exdir = tmp_path / "paired", tmp_path / "exemplars"
    paired.mkdir()
    exdir.mkdir()
    for i, name in enumerate(ds.names[:2]):
        stem = os.path.splitext(name)[0]
        write_mask(paired / f"{stem}.png", SIZE, 2 + 4 * i)
        # Exemplar of image i: the face of image 3 - i, under image i's name.
        Image.open(ds.paths[3 - i]).save(exdir / f"{stem}.png")
    out = tmp_path / "out"
    rc, _, err = run_cli(entry, capsys, "--ckpt", files.ours, "--psp", files.psp, "--data",
                      files.faces, "--n-images", 2, "--batch", 2, "--masks", "paired", paired,
                      "--exemplars", "folder", exdir, "--metrics", "l1", "--out", out,
                      "--save-images", "--no-progress")
    assert rc == 0, err
    pairs = read_csv(out / "pairs.csv")
    assert [p["exemplar"] for p in pairs] == [ds.names[0], ds.names[1]]
    assert [p["mask"] for p in pairs] == [ds.names[0], ds.names[1]]
    rec = json.loads((out / "results.json").read_text())["protocol"]
    assert rec["exemplars"] == {"mode": "folder", "folder": str(exdir),
                                "pair_by": {"exemplar": "{name}", "image": "{name}"}}
    assert rec["masks"]["kind"] == "paired"
    for i, name in enumerate(ds.names[:2]):
        saved = png(out / "masks" / "all" / "r0" / name)
        assert np.array_equal(saved, png(paired / name))


def test_bad_inputs_are_one_sentence(files, entry, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)              # the default checkpoints/ paths do not exist here
    empty = tmp_path / "empty_masks"
    empty.mkdir()
    big = tmp_path / "big_masks"
    big.mkdir()
    ds, _ = real_images(files.faces)
    for name in ds.names:
        write_mask(big / name, 24, 4)
    holeless = tmp_path / "holeless_masks"
    holeless.mkdir()
    for k, name in enumerate(ds.names):
        write_mask(holeless / name, SIZE, 0 if k == 2 else 4)     # the third has no hole
    one_ex = tmp_path / "one_exemplar"
    one_ex.mkdir()
    Image.open(ds.paths[0]).save(one_ex / ds.names[0])
    base = ["--ckpt", files.ours, "--psp", files.psp, "--data", files.faces, "--metrics", "l1",
            "--no-progress"]
    cases = [
        (["--psp", tmp_path / "nowhere.pt"], "pSp style encoder file"),
        (["--ckpt", tmp_path / "missing.pt"], "EXE-GAN checkpoint"),
        (["--masks", "irregular", empty], "contains no image files"),
        (["--masks", "irregular"], "--masks irregular needs a folder"),
        (["--masks", "paired", big], "is 24x24 but its image is 16x16"),
        # a mask without a hole is refused (it was scored with NaN hole metrics)
        (["--masks", "paired", holeless], f"{ds.names[2]}' has no hole pixel at 16x16"),
        (["--n-images", 9], "Asked for 9 test images but the test set has 4"),
        (["--exemplars", "folder", one_ex], "has no exemplar for 3 of 4 image(s)"),
        (["--metrics", "fid"], "pt_inception-2015-12-05-6726825d.pth"),
        (["--data", tmp_path / "no_data"], "does not exist"),
        (["--truncation", "nan"], "--truncation must be a finite number, got nan"),
        (["--truncation=-inf"], "--truncation must be a finite number, got -inf"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "asked for CUDA but no GPU is available"))
    for k, (extra, expected) in enumerate(cases):
        out = tmp_path / f"out{k}"
        rc, _, err = run_cli(entry, capsys, *base, *extra, "--out", out)
        lines = err.strip().splitlines()
        assert rc == 2, (extra, err)
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
        assert not out.exists()              # nothing written for a refused run


def test_the_checkpoint_is_read_once(files, entry, capsys, tmp_path, monkeypatch):
    """Counted where the real loader (models.checkpoint.safe_load) reads, torch.load, so that a
    read through any import of the loader counts: one full read of --ckpt, with or without
    stand-ins (which take the run's config from the same read). A damaged file is the loader's one
    sentence, also when stand-ins need its config."""
    reads = []
    real = torch.load

    def counting(f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            reads.append((os.path.abspath(os.fspath(f)), bool(kwargs.get("mmap", False))))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    monkeypatch.chdir(tmp_path)              # no checkpoints/ here: the pSp file is missing
    ours = os.path.abspath(files.ours)
    common = ["--ckpt", files.ours, "--data", files.faces, "--n-images", 2, "--batch", 2,
              "--metrics", "psnr", "l1", "--no-progress"]
    rc, _, err = run_cli(entry, capsys, *common, "--psp", files.psp, "--out", tmp_path / "a")
    assert rc == 0, err
    assert [r for r in reads if r[0] == ours] == [(ours, False)]
    reads.clear()
    rc, _, err = run_cli(entry, capsys, *common, "--allow-random-pretrained", "--out", tmp_path / "b")
    assert rc == 0, err
    assert [r for r in reads if r[0] == ours] == [(ours, False)]

    damaged = tmp_path / "damaged.pt"
    data = pathlib.Path(files.ours).read_bytes()
    damaged.write_bytes(data[:len(data) // 2])
    for extra in ([], ["--allow-random-pretrained"]):
        rc, _, err = run_cli(entry, capsys, *common, "--psp", files.psp, "--ckpt", damaged, *extra,
                          "--out", tmp_path / "c")
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"error: {damaged} is not a") and "PyTorch checkpoint" in lines[0]
        assert not (tmp_path / "c").exists()


def test_random_standins_are_loud_recorded_and_the_training_ones(files, entry, capsys, caplog,
                                                                  tmp_path, monkeypatch):
    from metrics.eval_loop import evaluate
    from models.checkpoint import load_generator
    from models.exegan import EXEGAN

    monkeypatch.chdir(tmp_path)              # no checkpoints/ here: the pSp file is missing
    out = tmp_path / "random"
    rc, _, err = run_cli(entry, capsys, "--ckpt", files.ours, "--data", files.faces,
                      "--allow-random-pretrained", "--n-images", 2, "--batch", 2,
                      "--metrics", "psnr", "l1", "--out", out, "--no-progress")
    assert rc == 0, err
    assert "RANDOMLY INITIALISED STAND-INS" in caplog.text and "meaningless" in caplog.text
    doc = json.loads((out / "results.json").read_text())
    assert doc["protocol"]["random_standins"] == ["pSp style encoder (stand-in seed 5)"]
    assert doc["protocol"]["files"]["psp"] is None
    # The stand-in is the training loop's (seeded by the checkpoint's train.seed), so the
    # numbers equal an evaluation with that encoder.
    g = load_generator(files.ours)
    enc = standin_style_encoder(g.exemplar_start, g.n_exemplar, g.n_latent, g.style_dim, seed=5)
    from metrics.evaluator import Evaluator
    ref = evaluate(EXEGAN(g, enc), ImageFolderDataset(files.faces, SIZE), "center", "reverse",
                   evaluator=Evaluator(None, None, ("psnr", "l1")), n_images=2, batch=2)
    assert doc["summary"]["all"]["psnr"]["mean"] == ref["summary"]["all"]["psnr"]["mean"]


def test_compile_flag_gives_the_eager_numbers(files, entry, capsys, tmp_path):
    # test.py --compile (EXEGAN.compile): same metrics up to float rounding, recorded in the protocol.
    docs = {}
    for flag in ("", "--compile"):
        out = tmp_path / (flag.strip("-") or "eager")
        rc, _, err = run_cli(entry, capsys, "--ckpt", files.ours, "--psp", files.psp,
                          "--data", files.faces, "--n-images", 3, "--batch", 3, "--masks", "center",
                          "--metrics", "psnr", "l1", "--out", out, "--no-progress",
                          *([flag] if flag else []))
        assert rc == 0, err
        docs[flag] = json.loads((out / "results.json").read_text())
    eager, compiled = docs[""], docs["--compile"]
    assert eager["protocol"]["compiled"] is False and compiled["protocol"]["compiled"] is True
    for key in ("psnr", "l1", "psnr_hole"):
        assert compiled["summary"]["all"][key]["mean"] == pytest.approx(
            eager["summary"]["all"][key]["mean"], rel=1e-4, abs=1e-6)


def test_results_files_are_strict_json_and_csv_without_nan(files, entry, capsys, caplog,
                                                           tmp_path):
    """FID of one image is NaN; it used to be written as NaN (invalid JSON)."""
    out = tmp_path / "one"
    rc, _, err = run_cli(entry, capsys, "--ckpt", files.ours, "--psp", files.psp,
                      "--data", files.faces, "--inception", files.inception, "--n-images", 1,
                      "--batch", 1, "--metrics", "fid", "psnr", "--out", out, "--no-progress")
    assert rc == 0, err
    doc = strict_json(out / "results.json")
    assert doc["summary"]["all"]["fid"]["mean"] is None
    assert doc["repeats"][0]["results"]["all"]["fid"] is None
    assert doc["non_finite"]["summary.all.fid.mean"] == "nan"
    assert doc["non_finite"]["repeats.0.results.all.fid"] == "nan"
    assert doc["summary"]["all"]["psnr"]["mean"] > 0          # finite values untouched
    text = (out / "results.csv").read_text().lower()
    assert "nan" not in text and "inf" not in text
    rows = read_csv(out / "results.csv")
    assert rows[0]["fid"] == "" and float(rows[0]["psnr"]) > 0
    # ... and FID from one image is flagged as not meaningful.
    assert "FID from 1 images" in caplog.text and doc["protocol"]["warnings"]


def test_warns_on_small_sets_and_on_a_resolution_mismatch(files, entry, capsys, caplog,
                                                          tmp_path):
    """FID / IDS on a few images and 8-px data fed to a 16-px checkpoint (upsampled
    x2) were silent."""
    small = tmp_path / "small"
    small.mkdir()
    ds, _ = real_images(files.faces)
    for path, name in zip(ds.paths, ds.names):
        Image.open(path).resize((8, 8), Image.LANCZOS).save(small / name)
    out = tmp_path / "warn"
    rc, _, err = run_cli(entry, capsys, "--ckpt", files.ours, "--psp", files.psp,
                      "--data", small, "--inception", files.inception, "--n-images", 4,
                      "--batch", 4, "--metrics", "fid", "ids", "l1", "--out", out,
                      "--no-progress")
    assert rc == 0, err
    assert "are 8x8 but the evaluation size is 16x16: they are upsampled x2" in caplog.text
    assert "FID and U-IDS / P-IDS from 4 images: fewer than 2000" in caplog.text
    warnings = strict_json(out / "results.json")["protocol"]["warnings"]
    assert len(warnings) == 2 and "upsampled x2" in warnings[0]
    # Data at the model's size and no FID / IDS: no warning.
    caplog.clear()
    rc, _, err = run_cli(entry, capsys, "--ckpt", files.ours, "--psp", files.psp,
                      "--data", files.faces, "--n-images", 2, "--batch", 2, "--metrics", "l1",
                      "--out", tmp_path / "quiet", "--no-progress")
    assert rc == 0, err
    assert "evaluation size" not in caplog.text and "fewer than 2000" not in caplog.text
