"""The step loop reads its flags from the device once every log.log_every steps (and at the steps
where it must decide anyway), not every step; a non-finite loss between two reads is still
caught before anything is saved, naming its step. Counted through the loop's one read
function (training.consensus.host_read) on the tiny CPU run."""
import pytest
import torch
from trainutil import tiny_config
from training import consensus
from training.errors import NonFiniteLossError
from training.run import run
from training.trainer import Trainer


def _count_train_steps(monkeypatch):
    done = []
    original = Trainer.train_step

    def counted(self, step, real):
        out = original(self, step, real)
        done.append(step + 1)
        return out

    monkeypatch.setattr(Trainer, "train_step", counted)
    return done


def test_one_read_per_log_every_steps(face_dirs, tmp_path, monkeypatch):
    done = _count_train_steps(monkeypatch)
    at = []
    original = consensus.host_read
    monkeypatch.setattr(consensus, "host_read", lambda flags: at.append(done[-1]) or original(flags))
    cfg = tiny_config(face_dirs, tmp_path, train={"iters": 9, "ckpt_every": 0},
                      log={"log_every": 4})
    result = run(cfg)
    assert result.step == 9
    # Steps 4 and 8 (log), 9 (the last step, which saves): 3 reads in 9 steps, not 9.
    assert at == [4, 8, 9]
    # Steps that save read first (a checkpoint every 3 steps: 3, 6, 9, plus the log steps).
    at.clear()
    done.clear()
    cfg = tiny_config(face_dirs, tmp_path / "b", train={"iters": 9, "ckpt_every": 3},
                      log={"log_every": 4})
    run(cfg)
    assert at == [3, 4, 6, 8, 9]


def test_a_non_finite_loss_between_reads_is_caught_before_a_save(face_dirs, tmp_path, monkeypatch):
    original = Trainer.train_step

    def poisoned(self, step, real):
        out = original(self, step, real)
        if step == 5:  # the sixth iteration: no read due until step 8
            out = dict(out, d_loss=torch.tensor(float("nan")))
        return out

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    cfg = tiny_config(face_dirs, tmp_path, train={"iters": 10, "ckpt_every": 4},
                      log={"log_every": 4})
    with pytest.raises(NonFiniteLossError, match=r"Non-finite loss at step 6 \(seen at step 8\)"):
        run(cfg)


def test_consensus_keeps_the_first_bad_step_until_read_and_then_starts_again():
    c = consensus.Consensus(0)
    assert c.every == 100  # logging off: still a read every 100 steps
    ok = {"d_loss": torch.tensor(1.0), "g_total": torch.tensor(2.0)}
    nan = dict(ok, g_total=torch.tensor(float("inf")))
    for step, stats in ((1, ok), (2, nan), (3, ok), (4, nan), (5, ok)):
        c.add(step, stats)
    assert not c.due(5, False) and c.due(100, False) and c.due(5, True)
    assert c.read(3) == (1.0, 2.0, 2, "SIGTERM")
    c.add(6, ok)
    assert c.read(0) == (1.0, 2.0, None, None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_consensus_add_does_not_synchronise_on_cuda():
    """Between reads the loop's per-step work on the flags never waits for the GPU."""
    c = consensus.Consensus(4)
    stats = {"d_loss": torch.tensor(1.0, device="cuda"), "g_total": torch.tensor(2.0, device="cuda")}
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 4):
            c.add(step, stats)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert c.read(0) == (1.0, 2.0, None, None)
