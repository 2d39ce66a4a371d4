"""test.py end to end: tiny checkpoints in our format and in the authors' layout (with a
pickled argparse.Namespace), a tiny pSp file, a handful of demo faces, and random-weight FID
Inception / VGG16 files in their real layouts, all loaded through the real loaders.

Checks: complete results.json / results.csv / pairs.csv with every metric and the protocol
record (file hashes, masks, exemplars, seeds, versions), per-bucket rows for irregular masks,
std over repeats, saved PNGs whose known pixels equal the input and whose PSNR equals the
reported one, config files and auto-numbered result directories, and one-sentence errors for
bad inputs (an existing results directory included). ``main()`` is called in-process (a
subprocess would pay the torch import again for nothing it checks beyond ``sys.exit(main())``).
"""
import argparse
import csv
import hashlib
import importlib.util
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
from models.checkpoint import make_checkpoint, save_checkpoint
from models.discriminator import Discriminator
from models.generator import Generator
from tests.metrics.conftest import inception_weights_file  # noqa: F401  (fixture)
from tests.models.test_psp import _psp_file
from metrics.standins import standin_style_encoder

pytestmark = pytest.mark.filterwarnings("ignore::metrics.ids.IDSWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 16
ALL_KEYS = {"n_images", "fid", "u_ids", "p_ids", "lpips", "psnr", "ssim", "l1", "l1_hole",
            "psnr_hole"}


def _entry():
    """The root test.py as a module (the name 'test' is taken by the standard library)."""
    spec = importlib.util.spec_from_file_location("exegan_test_entry",
                                                  os.path.join(ROOT, "test.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _tiny_generator(seed):
    torch.manual_seed(seed)
    return Generator(SIZE, style_dim=16, n_mlp=2, channel_multiplier=2, channel_max=16).eval()


def _write_mask(path, size, rows):
    a = np.zeros((size, size), np.uint8)
    a[:rows] = 255                      # white = hole
    Image.fromarray(a, "L").save(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory, inception_weights_file):  # noqa: F811
    import torchvision
    from datasets.demo import make_demo_faces

    root = tmp_path_factory.mktemp("e2e")
    g = _tiny_generator(0)
    d = Discriminator(SIZE, channel_multiplier=2, channel_max=16)
    ours = root / "ours.pt"
    save_checkpoint(make_checkpoint(g=g, d=d, g_ema=g, step=7, config={"train": {"seed": 5}}),
                    ours)
    # The authors' layout: state dicts + their argparse.Namespace of training options.
    g2 = _tiny_generator(1)
    authors = root / "EXE_GAN_model_16.pt"
    torch.save({"g": g2.state_dict(), "d": d.state_dict(), "g_ema": g2.state_dict(),
                "args": argparse.Namespace(size=SIZE, latent=16, n_mlp=2, channel_multiplier=2,
                                           batch=4, iter=1000)}, authors)
    enc = standin_style_encoder(g.exemplar_start, g.n_exemplar, g.n_latent, 16, seed=3)
    psp = _psp_file(enc, enc.latent_avg.clone(), root / "psp.pt")
    faces = make_demo_faces(str(root / "faces"), n=1, size=SIZE, seed=0, n_test=4).test
    # torchvision VGG16 trunk keys (features.*), the part of vgg16-397923af.pth LPIPS reads.
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    vgg = root / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, vgg)
    return argparse.Namespace(root=root, ours=str(ours), authors=str(authors), psp=str(psp),
                              faces=faces, vgg=str(vgg), inception=inception_weights_file)


@pytest.fixture(scope="module")
def entry():
    return _entry()


def _run(entry, capsys, *args):
    rc = entry.main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _real_images(faces):
    ds = ImageFolderDataset(faces, SIZE)
    return ds, torch.stack([ds[i] for i in range(len(ds))])


def _png(path):
    return np.asarray(Image.open(path))


# ------------------------------------------------------------------------------------------------

def test_full_protocol_writes_complete_results_and_record(files, entry, capsys, tmp_path):
    out = tmp_path / "full"
    rc, stdout, err = _run(entry, capsys, "--ckpt", files.ours, "--psp", files.psp,
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
        assert rec["files"][key]["sha256"] == _sha256(path)
        assert rec["files"][key]["path"] == os.path.abspath(path)
    assert rec["evaluator"]["inception_sha256"] == _sha256(files.inception)
    assert rec["masks"]["kind"] == "center" and rec["exemplars"]["mode"] == "reverse"
    assert (rec["n_images"], rec["batch"], rec["repeats"], rec["seeds"]) == (3, 3, 1, [0])
    assert rec["device"] == "cpu" and rec["random_standins"] == []
    assert rec["versions"]["torch"] == torch.__version__
    assert rec["versions"]["numpy"] == np.__version__
    assert "commit" in rec["code"] and rec["started"] and rec["command"][0] == "test.py"
    assert rec["generator"]["size"] == SIZE and rec["data"]["n_available"] == 4

    rows = _read_csv(out / "results.csv")
    assert [(r["bucket"], r["stat"], r["repeat"]) for r in rows] == [
        ("all", "mean", ""), ("all", "std", ""), ("all", "repeat", "0")]
    for m in ALL_KEYS:
        assert float(rows[0][m]) == summary[m]["mean"]
        assert float(rows[2][m]) == doc["repeats"][0]["results"]["all"][m]

    ds, real = _real_images(files.faces)
    real = real[:3]
    pairs = _read_csv(out / "pairs.csv")
    assert [p["exemplar"] for p in pairs] == list(reversed(ds.names[:3]))
    assert [p["image"] for p in pairs] == ds.names[:3]

    # Saved completions: known pixels are the input's, holes are filled, and the in-memory
    # PSNR is the PSNR of the saved 8-bit files.
    centre = np.zeros((SIZE, SIZE), bool)
    centre[4:12, 4:12] = True
    fakes = []
    for i, name in enumerate(ds.names[:3]):
        stem = os.path.splitext(name)[0]
        img = _png(out / "images" / "all" / "r0" / f"{stem}.png")
        mask = _png(out / "masks" / "all" / "r0" / f"{stem}.png") > 127
        assert np.array_equal(mask, centre)
        gt = _png(ds.paths[i])
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
        _write_mask(masks / f"{name}.png", 32, rows)
    out = tmp_path / "irr"
    rc, _, err = _run(entry, capsys, "--ckpt", files.authors, "--psp", files.psp,
                      "--data", files.faces, "--n-images", 3, "--batch", 3, "--masks",
                      "irregular", masks, "--repeats", 2, "--seed", 10, "--metrics", "psnr",
                      "ssim", "l1", "--out", out, "--save-images", "--no-progress")
    assert rc == 0, err
    doc = json.loads((out / "results.json").read_text())
    buckets = ["all", "0-10", "10-20", "30-40"]
    assert list(doc["summary"]) == buckets
    rec = doc["protocol"]
    assert rec["files"]["checkpoint"]["sha256"] == _sha256(files.authors)
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

    rows = _read_csv(out / "results.csv")
    assert len(rows) == 2 * len(buckets) + 2 * len(buckets)
    assert {(r["bucket"], r["repeat"], r["seed"]) for r in rows if r["stat"] == "repeat"} == {
        (b, str(r), str(10 + r)) for b in buckets for r in (0, 1)}

    ds, _ = _real_images(files.faces)
    bounds = {"0-10": (0, 0.1), "10-20": (0.1, 0.2), "30-40": (0.3, 0.4)}
    pairs = _read_csv(out / "pairs.csv")
    assert len(pairs) == 2 * 3 * 3
    for p in pairs:
        lo, hi = bounds[p["bucket"]]
        assert lo < ratios[p["mask"][0]] / 32 <= hi
        stem = os.path.splitext(p["image"])[0]
        sub = os.path.join(p["bucket"], f"r{p['repeat']}", f"{stem}.png")
        mask = _png(out / "masks" / sub) > 127
        assert lo < mask.mean() <= hi
        img, gt = _png(out / "images" / sub), _png(ds.paths[int(p["index"])])
        assert np.array_equal(img[~mask], gt[~mask])


def test_config_file_auto_numbered_dirs_and_existing_dir_refused(files, entry, capsys,
                                                                  tmp_path, monkeypatch):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"pretrained:\n  style_encoder: {files.psp}\n"
                   f"data:\n  test: {files.faces}\n"
                   "eval:\n  n_images: 50\n  batch: 2\n  mask: free_form\n  exemplar: self\n"
                   "  seed: 5\n")
    monkeypatch.chdir(tmp_path)
    rc, _, err = _run(entry, capsys, "--config", cfg, "--ckpt", files.ours, "--metrics", "l1",
                      "--no-progress")
    assert rc == 0, err
    first = tmp_path / "runs" / "eval" / "00000-ours-free_form-self"
    rec = json.loads((first / "results.json").read_text())["protocol"]
    # The config's 50 images are capped at the 4 the folder has; the rest comes from `eval`.
    assert (rec["n_images"], rec["batch"], rec["seeds"]) == (4, 2, [5])
    assert rec["masks"]["kind"] == "free_form" and rec["exemplars"]["mode"] == "self"
    assert rec["config"] == str(cfg) and rec["files"]["psp"]["sha256"] == _sha256(files.psp)

    # Flags override the config; the next run gets the next number.
    rc, _, err = _run(entry, capsys, "--config", cfg, "--ckpt", files.ours, "--metrics", "l1",
                      "--n-images", 2, "--masks", "center", "--seed", 1, "--no-progress")
    assert rc == 0, err
    rec = json.loads((tmp_path / "runs" / "eval" / "00001-ours-center-self" / "results.json")
                     .read_text())["protocol"]
    assert (rec["n_images"], rec["seeds"], rec["masks"]["kind"]) == (2, [1], "center")

    before = (first / "results.json").read_bytes()
    rc, _, err = _run(entry, capsys, "--config", cfg, "--ckpt", files.ours, "--metrics", "l1",
                      "--out", first, "--no-progress")
    assert rc == 2
    assert err.strip().splitlines() == [
        f"error: Results directory '{first}' already exists and is not empty; choose a new "
        f"--out (results are never overwritten)."]
    assert (first / "results.json").read_bytes() == before


def test_paired_masks_and_exemplar_folder(files, entry, capsys, tmp_path):
    ds, _ = _real_images(files.faces)
    paired, exdir = tmp_path / "paired", tmp_path / "exemplars"
    paired.mkdir()
    exdir.mkdir()
    for i, name in enumerate(ds.names[:2]):
        stem = os.path.splitext(name)[0]
        _write_mask(paired / f"{stem}.png", SIZE, 2 + 4 * i)
        # Exemplar of image i: the face of image 3 - i, under image i's name.
        Image.open(ds.paths[3 - i]).save(exdir / f"{stem}.png")
    out = tmp_path / "out"
    rc, _, err = _run(entry, capsys, "--ckpt", files.ours, "--psp", files.psp, "--data",
                      files.faces, "--n-images", 2, "--batch", 2, "--masks", "paired", paired,
                      "--exemplars", "folder", exdir, "--metrics", "l1", "--out", out,
                      "--save-images", "--no-progress")
    assert rc == 0, err
    pairs = _read_csv(out / "pairs.csv")
    assert [p["exemplar"] for p in pairs] == [ds.names[0], ds.names[1]]
    assert [p["mask"] for p in pairs] == [ds.names[0], ds.names[1]]
    rec = json.loads((out / "results.json").read_text())["protocol"]
    assert rec["exemplars"] == {"mode": "folder", "folder": str(exdir),
                                "pair_by": {"exemplar": "{name}", "image": "{name}"}}
    assert rec["masks"]["kind"] == "paired"
    for i, name in enumerate(ds.names[:2]):
        saved = _png(out / "masks" / "all" / "r0" / name)
        assert np.array_equal(saved, _png(paired / name))


def test_bad_inputs_are_one_sentence(files, entry, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)              # the default checkpoints/ paths do not exist here
    empty = tmp_path / "empty_masks"
    empty.mkdir()
    big = tmp_path / "big_masks"
    big.mkdir()
    ds, _ = _real_images(files.faces)
    for name in ds.names:
        _write_mask(big / name, 24, 4)
    holeless = tmp_path / "holeless_masks"
    holeless.mkdir()
    for k, name in enumerate(ds.names):
        _write_mask(holeless / name, SIZE, 0 if k == 2 else 4)     # the third has no hole
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
        rc, _, err = _run(entry, capsys, *base, *extra, "--out", out)
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
    rc, _, err = _run(entry, capsys, *common, "--psp", files.psp, "--out", tmp_path / "a")
    assert rc == 0, err
    assert [r for r in reads if r[0] == ours] == [(ours, False)]
    reads.clear()
    rc, _, err = _run(entry, capsys, *common, "--allow-random-pretrained", "--out", tmp_path / "b")
    assert rc == 0, err
    assert [r for r in reads if r[0] == ours] == [(ours, False)]

    damaged = tmp_path / "damaged.pt"
    data = pathlib.Path(files.ours).read_bytes()
    damaged.write_bytes(data[:len(data) // 2])
    for extra in ([], ["--allow-random-pretrained"]):
        rc, _, err = _run(entry, capsys, *common, "--psp", files.psp, "--ckpt", damaged, *extra,
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
    rc, _, err = _run(entry, capsys, "--ckpt", files.ours, "--data", files.faces,
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
        rc, _, err = _run(entry, capsys, "--ckpt", files.ours, "--psp", files.psp,
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


def _strict_json(path):
    """json.loads that refuses the non-standard NaN / Infinity tokens."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token} in {path}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_results_files_are_strict_json_and_csv_without_nan(files, entry, capsys, caplog,
                                                           tmp_path):
    """FID of one image is NaN; it used to be written as NaN (invalid JSON)."""
    out = tmp_path / "one"
    rc, _, err = _run(entry, capsys, "--ckpt", files.ours, "--psp", files.psp,
                      "--data", files.faces, "--inception", files.inception, "--n-images", 1,
                      "--batch", 1, "--metrics", "fid", "psnr", "--out", out, "--no-progress")
    assert rc == 0, err
    doc = _strict_json(out / "results.json")
    assert doc["summary"]["all"]["fid"]["mean"] is None
    assert doc["repeats"][0]["results"]["all"]["fid"] is None
    assert doc["non_finite"]["summary.all.fid.mean"] == "nan"
    assert doc["non_finite"]["repeats.0.results.all.fid"] == "nan"
    assert doc["summary"]["all"]["psnr"]["mean"] > 0          # finite values untouched
    text = (out / "results.csv").read_text().lower()
    assert "nan" not in text and "inf" not in text
    rows = _read_csv(out / "results.csv")
    assert rows[0]["fid"] == "" and float(rows[0]["psnr"]) > 0
    # ... and FID from one image is flagged as not meaningful.
    assert "FID from 1 images" in caplog.text and doc["protocol"]["warnings"]


def test_warns_on_small_sets_and_on_a_resolution_mismatch(files, entry, capsys, caplog,
                                                          tmp_path):
    """FID / IDS on a few images and 8-px data fed to a 16-px checkpoint (upsampled
    x2) were silent."""
    small = tmp_path / "small"
    small.mkdir()
    ds, _ = _real_images(files.faces)
    for path, name in zip(ds.paths, ds.names):
        Image.open(path).resize((8, 8), Image.LANCZOS).save(small / name)
    out = tmp_path / "warn"
    rc, _, err = _run(entry, capsys, "--ckpt", files.ours, "--psp", files.psp,
                      "--data", small, "--inception", files.inception, "--n-images", 4,
                      "--batch", 4, "--metrics", "fid", "ids", "l1", "--out", out,
                      "--no-progress")
    assert rc == 0, err
    assert "are 8x8 but the evaluation size is 16x16: they are upsampled x2" in caplog.text
    assert "FID and U-IDS / P-IDS from 4 images: fewer than 2000" in caplog.text
    warnings = _strict_json(out / "results.json")["protocol"]["warnings"]
    assert len(warnings) == 2 and "upsampled x2" in warnings[0]
    # Data at the model's size and no FID / IDS: no warning.
    caplog.clear()
    rc, _, err = _run(entry, capsys, "--ckpt", files.ours, "--psp", files.psp,
                      "--data", files.faces, "--n-images", 2, "--batch", 2, "--metrics", "l1",
                      "--out", tmp_path / "quiet", "--no-progress")
    assert rc == 0, err
    assert "evaluation size" not in caplog.text and "fewer than 2000" not in caplog.text


# -- test.py --pred / --gt: scoring completions that exist ---------------------------

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
    rc, stdout, err = _run(
        entry, capsys, "--pred", mem_dir / "images" / "all" / "r0",
        mem_dir / "images" / "all" / "r1",
        "--gt", files.faces, "--masks", mem_dir / "masks" / "all" / "r0",
        "--inception", files.inception, "--lpips-vgg", files.vgg, "--batch", 2,
        "--metrics", *PAPER_AND_EXTRA, "--out", out, "--no-progress")
    assert rc == 0, err
    doc = _strict_json(out / "results.json")
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
    assert rec["evaluator"]["inception_sha256"] == _sha256(files.inception)
    rows = _read_csv(out / "results.csv")
    assert [r["stat"] for r in rows] == ["mean", "std", "repeat", "repeat"]
    pairs = _read_csv(out / "pairs.csv")
    assert len(pairs) == 8 and pairs[0]["completion"].endswith(".png")


def test_pred_gt_pair_by_patterns_in_one_folder(files, entry, capsys, in_memory, tmp_path):
    """1_real / 1_mask / 1_out in one folder, paired through --pair-by; without
    it the error shows the names it looked for and the option that pairs them."""
    import shutil
    mem_dir, mem = in_memory
    ds, _ = _real_images(files.faces)
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
    rc, _, err = _run(entry, capsys, "--pred", both, "--gt", both, "--masks", both, "--pair-by",
                      "gt={name}_real", "pred={name}_out", "mask={name}_mask", "--batch", 2,
                      "--metrics", "psnr", "ssim", "l1", "--out", out, "--no-progress")
    assert rc == 0, err
    doc = _strict_json(out / "results.json")
    for k in ("psnr", "ssim", "l1", "l1_hole", "psnr_hole"):
        assert doc["summary"]["all"][k]["mean"] == pytest.approx(
            mem["repeats"][0]["results"]["all"][k], rel=1e-9)
    assert doc["protocol"]["pair_by"] == {"image": "{name}_real", "pred": "{name}_out",
                                          "mask": "{name}_mask"}
    # The same folder for --pred and --gt without patterns would score images against themselves.
    rc, _, err = _run(entry, capsys, "--pred", both, "--gt", both, "--metrics", "l1",
                      "--out", tmp_path / "self", "--no-progress")
    assert rc == 2 and "scored against itself" in err and not (tmp_path / "self").exists()
    # Completions named x.png, ground truth x_real.png: the message names the expected file and
    # the --pair-by option.
    stem = os.path.splitext(ds.names[0])[0]
    rc, _, err = _run(entry, capsys, "--pred", mem_dir / "images" / "all" / "r0", "--gt", gt_only,
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
        _write_mask(holeless / name, SIZE, 0 if name == sorted(os.listdir(pred))[1] else 3)
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
        rc, _, err = _run(entry, capsys, "--pred", pred, "--gt", files.faces, "--metrics", "l1",
                          "--no-progress", "--out", out, *extra)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and expected in lines[0], (extra, err)
        assert not out.exists()


def test_paired_masks_and_exemplars_pair_by_pattern(files, entry, capsys, tmp_path):
    """masks named <image>_mask and exemplars <image>_exe pair through --pair-by,
    with the same numbers as masks / exemplars named like their images."""
    ds, _ = _real_images(files.faces)
    plain_m, plain_e, pat = tmp_path / "pm", tmp_path / "pe", tmp_path / "pat"
    for d in (plain_m, plain_e, pat):
        d.mkdir()
    for k, (path, name) in enumerate(zip(ds.paths, ds.names)):
        stem = os.path.splitext(name)[0]
        _write_mask(plain_m / name, SIZE, 3 + k)
        _write_mask(pat / f"{stem}_mask.png", SIZE, 3 + k)
        ex = ds.paths[(k + 1) % len(ds.paths)]
        Image.open(ex).save(plain_e / name)
        Image.open(ex).save(pat / f"{stem}_exe.png")
    common = ["--ckpt", files.ours, "--psp", files.psp, "--data", files.faces, "--metrics",
              "psnr", "l1", "--batch", 2, "--no-progress"]
    rc, _, err = _run(entry, capsys, *common, "--masks", "paired", plain_m, "--exemplars",
                      "folder", plain_e, "--out", tmp_path / "plain")
    assert rc == 0, err
    rc, _, err = _run(entry, capsys, *common, "--masks", "paired", pat, "--exemplars", "folder",
                      pat, "--pair-by", "mask={name}_mask", "exemplar={name}_exe",
                      "--out", tmp_path / "pattern")
    assert rc == 0, err
    a = _strict_json(tmp_path / "plain" / "results.json")["summary"]["all"]
    b = _strict_json(tmp_path / "pattern" / "results.json")["summary"]["all"]
    assert {k: v["mean"] for k, v in a.items()} == {k: v["mean"] for k, v in b.items()}
    # Without the option: the expected name and the option in one sentence.
    rc, _, err = _run(entry, capsys, *common, "--masks", "paired", pat, "--out", tmp_path / "no")
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
    rc, _, err = _run(entry, capsys, "--pred", fewer, *common, "--out", tmp_path / "o1")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert "has 1 of 4 ground-truth image(s) without a completion" in lines[0]
    assert f"'{names[-1]}'" in lines[0] and "--allow-subset" in lines[0]
    assert not (tmp_path / "o1").exists()
    rc, _, err = _run(entry, capsys, "--pred", fewer, *common, "--allow-subset",
                      "--out", tmp_path / "o2")
    assert rc == 0, err
    doc = _strict_json(tmp_path / "o2" / "results.json")
    assert doc["protocol"]["n_images"] == 3
    assert doc["protocol"]["subset"] == {"allow_subset": True, "gt_images": 4,
                                         "gt_without_completion": 1,
                                         "first_without_completion": [names[-1]]}
    assert any("--allow-subset" in w for w in doc["protocol"]["warnings"])
    # A full set records that it is not a subset.
    rc, _, err = _run(entry, capsys, "--pred", r0, *common, "--out", tmp_path / "o3")
    assert rc == 0, err
    assert _strict_json(tmp_path / "o3" / "results.json")["protocol"]["subset"][
        "gt_without_completion"] == 0

    twice = _copy_tree(r0, tmp_path / "twice")
    _copy_tree(r0, twice / "sub")
    rc, _, err = _run(entry, capsys, "--pred", twice, *common, "--out", tmp_path / "o4")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert "4 ground-truth image(s)" in lines[0] and "more than one completion" in lines[0]
    assert f"'{names[0]}', 'sub/{names[0]}'" in lines[0]
    assert not (tmp_path / "o4").exists()

    extra = _copy_tree(r1, tmp_path / "r1_extra")
    _copy_tree(r1, extra, rename=lambda stem: stem + "_copy")
    rc, _, err = _run(entry, capsys, "--pred", r0, extra, *common, "--out", tmp_path / "o5")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert "has 4 completion(s) that no completion of --pred" in lines[0]
    assert not (tmp_path / "o5").exists()

    rc, _, err = _run(entry, capsys, "--ckpt", files.ours, "--psp", files.psp, "--data",
                      files.faces, "--allow-subset", "--out", tmp_path / "o6")
    assert rc == 2 and "--allow-subset only applies to --pred" in err
    rc, _, err = _run(entry, capsys, "--pred", r0, *common, "--n-images", 0,
                      "--out", tmp_path / "o7")
    assert rc == 2 and "--n-images must be at least 1, got 0" in err
    assert not (tmp_path / "o7").exists()


def test_pred_pairing_hint_follows_the_roles_and_masks_are_no_ground_truth(
        files, entry, capsys, in_memory, tmp_path):
    """The layout 1_real / 1_mask / 1_out: the hint gives the ground truth the '_real' files,
    never the '_mask' ones, and a pairing that takes masks as ground truth is refused."""
    mem_dir, _ = in_memory
    ds, _ = _real_images(files.faces)
    both = tmp_path / "both"
    _copy_tree(mem_dir / "images" / "all" / "r0", both, rename=lambda s: s + "_out")
    _copy_tree(mem_dir / "masks" / "all" / "r0", both, rename=lambda s: s + "_mask")
    _copy_tree(pathlib.Path(files.faces), both, rename=lambda s: s + "_real")
    common = ["--pred", both, "--gt", both, "--metrics", "l1", "--no-progress"]
    rc, _, err = _run(entry, capsys, *common, "--pair-by", "pred={name}_out",
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
        rc, _, err = _run(entry, capsys, *common, *extra, "--out", out)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1, (extra, err)
        assert "pairs the completions with mask files as ground truth" in lines[0]
        assert "(e.g. --pair-by gt={name}_real)" in lines[0]
        assert not out.exists()
    # Masks named like the images in a folder of their own: refused by their content.
    as_gt = _copy_tree(mem_dir / "masks" / "all" / "r0", tmp_path / "masks_as_gt")
    rc, _, err = _run(entry, capsys, "--pred", mem_dir / "images" / "all" / "r0", "--gt", as_gt,
                      "--metrics", "l1", "--no-progress", "--out", tmp_path / "m2")
    assert rc == 2 and "is a black-and-white mask image" in err, err
    assert not (tmp_path / "m2").exists()
    # The correct pairing scores.
    rc, _, err = _run(entry, capsys, *common, "--pair-by", "pred={name}_out", "gt={name}_real",
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
        rc, _, err = _run(entry, capsys, "--pred", mem_dir / "images" / "all" / "r0", "--gt",
                          files.faces, "--metrics", "l1", "--no-progress", "--out", out)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and needle in lines[0], (out, err)
    assert a_file.read_text() == "x"
