"""A full disk while writing a checkpoint or results: one sentence "no space left on DEVICE for
PATH (needed ~N MB)", the last good checkpoint kept, exit status 2. On a real, tiny tmpfs where
the test may mount one (root), else through the real save path with a write that fails with
ENOSPC."""
import errno
import io
import os
import subprocess

import pytest
import torch

import models.checkpoint as checkpoint
from common.diskfull import DiskFullError
from models.checkpoint import save_checkpoint
from training import cli
from training.checkpointing import load_training_checkpoint
from trainutil import tiny_dict, write_yaml


@pytest.fixture
def tiny_fs(tmp_path):
    """A 1 MB tmpfs (skipped where this process may not mount one)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_a_real_full_filesystem_is_one_sentence_and_keeps_the_old_file(tiny_fs):
    path = tiny_fs / "ckpt.pt"
    save_checkpoint({"w": torch.zeros(1000)}, path)
    before = path.read_bytes()
    with pytest.raises(DiskFullError) as e:
        save_checkpoint({"w": torch.zeros(2_000_000)}, path)  # 8 MB into 1 MB
    msg = str(e.value)
    assert msg.startswith(f"no space left on tmpfs (mounted at {tiny_fs}) for {path} (needed ~8.0 MB)")
    assert "\n" not in msg and "inline_container" not in msg
    assert path.read_bytes() == before and os.listdir(tiny_fs) == ["ckpt.pt"]  # no temp left


def test_real_full_filesystem_for_results(tiny_fs):
    from metrics.results import _write_atomic

    with open(tiny_fs / "filler", "wb") as f:
        f.write(b"\0" * 1_000_000)
    with pytest.raises(DiskFullError, match=r"no space left on tmpfs .* for .*results\.json"):
        _write_atomic(str(tiny_fs / "results.json"), "x" * 200_000)
    assert sorted(os.listdir(tiny_fs)) == ["filler"]


class _FullAfter(io.FileIO):
    """A file whose writes fail with ENOSPC once `budget` bytes are written."""

    def __init__(self, fd, budget):
        super().__init__(fd, "wb")
        self.budget = budget

    def write(self, b):
        self.budget -= len(b)
        if self.budget < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(b)


def test_train_py_stops_with_one_sentence_exit_2_and_keeps_the_last_checkpoint(
        face_dirs, tmp_path, monkeypatch, capsys):
    calls = []
    real_open = checkpoint._open_for_write

    def open_for_write(fd):
        calls.append(fd)
        # 1, 2: the step-1 checkpoint and its G_ema export; 3: the step-2 checkpoint, disk full
        return _FullAfter(fd, 4096) if len(calls) == 3 else real_open(fd)

    monkeypatch.setattr(checkpoint, "_open_for_write", open_for_write)
    cfg_path = write_yaml(tmp_path / "tiny.yaml", tiny_dict(face_dirs, tmp_path / "runs",
                                                            train={"iters": 4, "ckpt_every": 1}))
    assert cli.main(["--config", cfg_path]) == 2
    err = capsys.readouterr().err
    run_dir = tmp_path / "runs" / "00000-tiny"
    ck = run_dir / "checkpoints"
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err and "inline_container" not in err
    assert lines[0].startswith("error: no space left on ") and f" for {ck / 'ckpt-0000002.pt'} (needed ~" in lines[0]
    assert lines[0].endswith(f"; the last good checkpoint {ck / 'latest.pt'} is kept; free some space, "
                             f"then continue with: python train.py --resume {run_dir}.")
    assert load_training_checkpoint(str(ck / "latest.pt"))["step"] == 1
    assert sorted(n for n in os.listdir(ck) if n.startswith(".")) == []  # no temp file left


def test_a_full_disk_under_stats_jsonl_is_the_same_sentence(face_dirs, tmp_path, monkeypatch, capsys):
    import builtins

    import training.outputs as rundir

    def open_(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        if str(path).endswith("stats.jsonl"):
            real_write, rows = f.write, []

            def write(text):  # the third row (step 3) does not fit
                rows.append(text)
                if len(rows) >= 3:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real_write(text)
            f.write = write
        return f

    monkeypatch.setattr(rundir, "open", open_, raising=False)
    cfg_path = write_yaml(tmp_path / "tiny.yaml", tiny_dict(face_dirs, tmp_path / "runs",
                                                            train={"iters": 4, "ckpt_every": 1}))
    assert cli.main(["--config", cfg_path]) == 2
    err = capsys.readouterr().err
    run_dir = tmp_path / "runs" / "00000-tiny"
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert f" for {run_dir / 'stats.jsonl'} (needed under 0.1 MB); the last good checkpoint " in lines[0]
    assert load_training_checkpoint(str(run_dir / "checkpoints" / "latest.pt"))["step"] == 2
