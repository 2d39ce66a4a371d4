"""Run-directory numbering, the resumable data order, and checkpoint-file bookkeeping."""
import os
import threading

import pytest
import torch

from training.checkpointing import CheckpointManager, load_training_checkpoint, resolve_resume
from training.data import DataError, StepBatchSampler
from common.rundir import create_run_dir
from training.outputs import sample_grid


def test_run_dirs_are_numbered_and_never_reused(tmp_path):
    os.makedirs(tmp_path / "00000-a")
    os.makedirs(tmp_path / "00007-b")
    (tmp_path / "00007-b" / "keep.txt").write_text("x")
    os.makedirs(tmp_path / "notes")
    first = create_run_dir(str(tmp_path), "demo")
    second = create_run_dir(str(tmp_path), "demo")
    assert os.path.basename(first) == "00008-demo" and os.path.basename(second) == "00009-demo"
    assert (tmp_path / "00007-b" / "keep.txt").read_text() == "x"
    assert os.path.basename(create_run_dir(str(tmp_path), "a b/c")) == "00010-a-b-c"


def test_run_dir_race_gives_distinct_directories(tmp_path, monkeypatch):
    # Every thread lists the folder before any creates its directory: all compute the same
    # number, and the exclusive mkdir must push all but one to the next free number.
    real_listdir = os.listdir
    barrier = threading.Barrier(6)

    def listdir_then_wait(path):
        out = real_listdir(path)
        barrier.wait(timeout=10)
        return out

    monkeypatch.setattr(os, "listdir", listdir_then_wait)
    made = []
    threads = [threading.Thread(target=lambda: made.append(create_run_dir(str(tmp_path), "r")))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 6 and len(set(made)) == 6
    assert sorted(os.path.basename(p) for p in made) == [f"{i:05d}-r" for i in range(6)]


def test_data_order_is_a_function_of_seed_and_step():
    n, batch, world = 23, 3, 2  # 3 steps per epoch, 5 images dropped per epoch
    samplers = [StepBatchSampler(n, batch, world, r, seed=5, start_step=0, end_step=9) for r in range(world)]
    per_rank = [list(s) for s in samplers]
    assert all(len(p) == 9 and all(len(b) == batch for b in p) for p in per_rank)
    for epoch in range(3):
        seen = [i for step in range(3 * epoch, 3 * epoch + 3) for r in range(world) for i in per_rank[r][step]]
        assert len(seen) == len(set(seen)) == 18  # no image twice in an epoch, across ranks
    assert per_rank[0][0] != per_rank[0][3]      # a new permutation each epoch
    # Resuming at step 4 reads exactly the batches the uninterrupted run reads from step 4 on.
    resumed = list(StepBatchSampler(n, batch, world, 1, seed=5, start_step=4, end_step=9))
    assert resumed == per_rank[1][4:]
    other_seed = list(StepBatchSampler(n, batch, world, 0, seed=6, start_step=0, end_step=9))
    assert other_seed != per_rank[0]
    assert samplers[0].position(4) == {"epoch": 1, "batch_in_epoch": 1, "batches_per_epoch": 3, "seed": 5}


def test_data_smaller_than_a_global_batch_is_a_clear_error():
    with pytest.raises(DataError, match="fewer than one global batch"):
        StepBatchSampler(7, 4, 2, 0, seed=0, start_step=0, end_step=1)


def test_checkpoint_manager_keeps_last_k_and_links(tmp_path):
    run = tmp_path / "00000-x"
    os.makedirs(run)
    (run / "config.yaml").write_text("{}")
    m = CheckpointManager(str(run), keep_last=2)
    for step in (10, 20, 30):
        m.save({"format": "exegan-checkpoint-v1", "pl_mean": [0.0], "step": step}, step,
               best=(step == 10))
    ck = run / "checkpoints"
    assert sorted(os.listdir(ck)) == ["best.pt", "ckpt-0000020.pt", "ckpt-0000030.pt", "latest.pt"]
    assert load_training_checkpoint(str(ck / "latest.pt"))["step"] == 30
    assert load_training_checkpoint(str(ck / "best.pt"))["step"] == 10  # survives pruning
    assert resolve_resume(str(run)) == str(ck / "latest.pt")


def test_foreign_checkpoint_is_refused(tmp_path):
    from training.checkpointing import CheckpointError

    torch.save({"g_ema": {"w": torch.zeros(1)}}, tmp_path / "release.pt")
    with pytest.raises(CheckpointError, match="not a training checkpoint written by train.py"):
        load_training_checkpoint(str(tmp_path / "release.pt"))


def test_sample_grid_layout():
    b, s = 3, 8
    real = torch.rand(b, 3, s, s) * 2 - 1
    mask = torch.zeros(b, 1, s, s)
    mask[..., 2:6, 2:6] = 1
    grid = sample_grid(real, mask, real.flip(0), real)
    pad = 2
    assert grid.shape == (3, b * (s + pad) + pad, 5 * (s + pad) + pad)
    # Column 2 (mask) is white inside the hole, black outside; column 5 is the ground truth.
    cell = lambda row, col: grid[:, pad + row * (s + pad):pad + row * (s + pad) + s,
                                 pad + col * (s + pad):pad + col * (s + pad) + s]
    assert torch.equal(cell(0, 1)[0], mask[0, 0])
    assert torch.allclose(cell(1, 4), (real[1] + 1) / 2, atol=1e-6)


def test_a_runs_folder_that_cannot_hold_a_run_is_one_sentence(tmp_path, capsys):
    """--outdir (log.outdir) that is a file, lies under a file, or cannot be written: one sentence
    before the first step, exit 2, nothing created."""
    from common.rundir import RunDirCreateError
    from training import cli
    from trainutil import make_faces, tiny_dict, write_yaml
    (tmp_path / "a_file").write_text("x")
    for outdir, want in ((tmp_path / "a_file", "is a file; give a folder"),
                         (tmp_path / "a_file" / "runs", "cannot create a run directory in"),
                         ("/proc/exegan-test/runs", "cannot create a run directory in")):
        with pytest.raises(RunDirCreateError, match=want):
            create_run_dir(str(outdir), "demo")
    faces = make_faces(tmp_path / "faces")
    cfg = write_yaml(tmp_path / "tiny.yaml", tiny_dict(faces, tmp_path / "runs"))
    capsys.readouterr()
    assert cli.main(["--config", cfg, "--outdir", str(tmp_path / "a_file")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file; give a folder for the run directories" in err[0], err
    assert not (tmp_path / "runs").exists()
