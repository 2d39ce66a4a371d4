"""A checkpoint is read once per use: train.py --resume reads the run's checkpoint once (the
command line reads it for the run's config and hands it on), a sketch fine-tune reads its base
checkpoint once (G, G_ema and D come from the one read). Counted through the real loader:
every read of a whole checkpoint is ``torch.load`` inside ``models.checkpoint.safe_load``."""
import os
from collections import Counter

import pytest
import torch

from training import cli
from training.run import run
from trainutil import tiny_config, tiny_dict, write_yaml


@pytest.fixture
def reads(monkeypatch):
    """Counter of torch.load calls per absolute path (the loader's full reads)."""
    counts = Counter()
    original = torch.load

    def counted(f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            counts[os.path.realpath(f)] += 1
        return original(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    return counts


def test_a_resume_reads_its_checkpoint_once(face_dirs, tmp_path, reads):
    cfg_path = write_yaml(tmp_path / "tiny.yaml", tiny_dict(face_dirs, tmp_path / "runs",
                                                            train={"iters": 2, "ckpt_every": 1}))
    assert cli.main(["--config", cfg_path, "--set", "train.iters=1"]) == 0
    run_dir = sorted(p for p in (tmp_path / "runs").iterdir() if p.is_dir())[0]
    latest = os.path.realpath(run_dir / "checkpoints" / "latest.pt")
    reads.clear()
    assert cli.main(["--resume", str(run_dir), "--set", "train.iters=2"]) == 0
    assert reads[latest] == 1, dict(reads)
    # No other file of the run is read whole (ckpt-*.pt is the same file as latest.pt).
    assert not [p for p in reads if p.startswith(os.path.realpath(run_dir)) and p != latest], dict(reads)


def test_a_sketch_finetune_reads_its_base_once(face_dirs, tmp_path, reads):
    base = run(tiny_config(face_dirs, tmp_path / "base", train={"iters": 1}))
    base_ckpt = os.path.join(base.run_dir, "checkpoints", "latest.pt")
    cfg = tiny_config(face_dirs, tmp_path / "ft", train={"iters": 1},
                      sketch={"enabled": True, "base_checkpoint": base_ckpt})
    reads.clear()
    res = run(cfg)
    assert res.step == 1
    assert reads[os.path.realpath(base_ckpt)] == 1, dict(reads)
