"""Training data through the opener test.py uses (image folders and LMDB packs made by
scripts/prepare_data.py), and starts that fail before the first step leaving no run directory."""
import datetime
import json
import os

import pytest
import torch

from training import cli
from training.checkpointing import load_training_checkpoint
from trainutil import tiny_dict, write_yaml


def _pack(src, out, size=16):
    from scripts.prepare_data import main as prepare

    assert prepare([src, "--out", str(out), "--size", str(size)]) == 0
    return str(out)


def test_a_pack_made_by_prepare_data_trains_like_its_folder(face_dirs, tmp_path):
    train_pack = _pack(face_dirs[0], tmp_path / "train_lmdb")
    test_pack = _pack(face_dirs[1], tmp_path / "test_lmdb")
    steps = dict(train={"iters": 3, "deterministic": True}, eval={"every": 3, "n_images": 4, "batch": 4},
                 log={"sample_every": 3})
    from_folder = write_yaml(tmp_path / "folder.yaml", tiny_dict(face_dirs, tmp_path / "a", **steps))
    from_pack = write_yaml(tmp_path / "pack.yaml", tiny_dict(
        face_dirs, tmp_path / "b", **{**steps, "data": {"train": train_pack, "test": test_pack}}))
    # Before the fix: "... contains no images" (the pack was opened as an image folder).
    assert cli.main(["--config", from_pack]) == 0
    assert cli.main(["--config", from_folder]) == 0
    torch.use_deterministic_algorithms(False)
    run_a, run_b = tmp_path / "a" / "00000-tiny", tmp_path / "b" / "00000-tiny"
    summary = json.loads((run_b / "summary.json").read_text())
    assert summary["train_data"] == os.path.abspath(train_pack) and summary["step"] == 3
    # The pack holds the folder's pixels in the folder's order: the very same training.
    a = load_training_checkpoint(str(run_a / "checkpoints" / "latest.pt"))
    b = load_training_checkpoint(str(run_b / "checkpoints" / "latest.pt"))
    for k, v in a["g_ema"].items():
        assert torch.equal(v, b["g_ema"][k]), k
    assert summary["last_eval"] == json.loads((run_a / "summary.json").read_text())["last_eval"]


def test_demo_config_refuses_a_data_path_it_would_ignore(tmp_path, capsys):
    # Before the fix: exit 0 after training on the demo faces, the path silently unused.
    out = tmp_path / "runs"
    rc = cli.main(["--config", "configs/demo.yaml", "--set", f"data.train={tmp_path}", "--outdir", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: data.train = '{tmp_path}' is not read when data.kind is demo")
    assert "set data.kind=folder" in err and not out.exists()


def _failing_starts(face_dirs, tmp_path, pretrained_files):
    """(name, config dict) of starts that fail after the run directory used to be created."""
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint" * 64)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": {}, "made": datetime.date(2024, 1, 1)}, unsafe)  # code in the pickle
    files = dict(pretrained={"allow_random": False, "style_encoder": pretrained_files["style_encoder"],
                             "identity": pretrained_files["identity"], "identity_kind": "resnet101"},
                 loss={"allow_random_backbone": False, "lpips_vgg_path": pretrained_files["vgg"]})
    out = tmp_path / "runs"
    return {
        "empty data folder": tiny_dict(face_dirs, out, data={"train": str(empty)}),
        "fewer images than a batch": tiny_dict(face_dirs, out, train={"batch": 32}),
        "corrupt identity file": tiny_dict(face_dirs, out, **{
            **files, "pretrained": {**files["pretrained"], "identity": str(corrupt)}}),
        "unsafe identity file": tiny_dict(face_dirs, out, **{
            **files, "pretrained": {**files["pretrained"], "identity": str(unsafe)}}),
        "corrupt sketch base": tiny_dict(face_dirs, out, sketch={"enabled": True,
                                                                  "base_checkpoint": str(corrupt)}),
        "unsafe sketch base": tiny_dict(face_dirs, out, sketch={"enabled": True,
                                                                 "base_checkpoint": str(unsafe)}),
    }


@pytest.mark.parametrize("case", ["empty data folder", "fewer images than a batch", "corrupt identity file",
                                  "unsafe identity file", "corrupt sketch base", "unsafe sketch base"])
def test_a_start_that_fails_before_the_first_step_leaves_no_run_directory(case, face_dirs, tmp_path,
                                                                         pretrained_files, capsys):
    cfg = _failing_starts(face_dirs, tmp_path, pretrained_files)[case]
    rc = cli.main(["--config", write_yaml(tmp_path / "tiny.yaml", cfg)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and lines[-1].startswith("error: ") and "Traceback" not in err, err[-2000:]
    assert lines[-2].startswith("removed ") and "the run ended before its first step" in lines[-2]
    assert not (tmp_path / "runs").exists()  # before the fix: runs/00000-tiny/ with a log and a config


def test_a_failed_start_keeps_other_runs_and_a_run_that_stepped_keeps_its_directory(face_dirs, tmp_path,
                                                                                   monkeypatch, capsys):
    out = tmp_path / "runs"
    ok = write_yaml(tmp_path / "ok.yaml", tiny_dict(face_dirs, out, train={"iters": 1}))
    assert cli.main(["--config", ok]) == 0
    bad = write_yaml(tmp_path / "bad.yaml", tiny_dict(face_dirs, out, train={"batch": 32}))
    assert cli.main(["--config", bad]) == 2
    assert sorted(os.listdir(out)) == ["00000-tiny"]
    # A failure after a completed step keeps the directory (its log and stats tell what happened).
    from training.trainer import Trainer
    original = Trainer.train_step

    def failing(self, step, real, **kwargs):
        if step == 1:
            raise RuntimeError("simulated crash in the second step")
        return original(self, step, real, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli.main(["--config", write_yaml(tmp_path / "crash.yaml", tiny_dict(face_dirs, out, train={"iters": 3}))])
    assert sorted(os.listdir(out)) == ["00000-tiny", "00001-tiny"]
    assert "step 1 " in (out / "00001-tiny" / "log.txt").read_text()
