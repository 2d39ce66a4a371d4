"""One writer per run directory, stale temporary files, resuming with another architecture and
signals during start-up, with real train.py processes where the OS is involved (locks, signals)."""
import os
import signal
import socket
import subprocess
import textwrap
import time

import pytest

from training import cli
from training.checkpointing import load_training_checkpoint
from training.config import ConfigError
from training.run import run
from trainutil import PYTHON, REPO, python_env, tiny_config, tiny_dict, write_yaml

# train.py whose function named by BLOCK (a name in training.run) waits, after touching the
# file READY, until the file GO exists (at step BLOCK_AT for train_step).
BLOCKING_DRIVER = textwrap.dedent("""
    import os, sys, time
    from training import run as loop, trainer
    block, ready, go = os.environ["BLOCK"], os.environ["READY"], os.environ["GO"]
    block_at = int(os.environ.get("BLOCK_AT", "0"))

    def wait():
        open(ready, "w").close()
        t0 = time.time()
        while not os.path.exists(go) and time.time() - t0 < 300:
            time.sleep(0.05)

    if block == "train_step":
        original = trainer.Trainer.train_step
        def train_step(self, step, real, **kwargs):
            if step == block_at:
                wait()
            return original(self, step, real, **kwargs)
        trainer.Trainer.train_step = train_step
    else:
        original_fn = getattr(loop, block)
        def blocked(*args, **kwargs):
            wait()
            return original_fn(*args, **kwargs)
        setattr(loop, block, blocked)
    from training.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _start(tmp_path, args, block, block_at=0, tag="a"):
    driver = tmp_path / "blocking_driver.py"
    driver.write_text(BLOCKING_DRIVER)
    ready, go = tmp_path / f"ready-{tag}", tmp_path / f"go-{tag}"
    env = dict(python_env(), BLOCK=block, BLOCK_AT=str(block_at), READY=str(ready), GO=str(go))
    err = open(tmp_path / f"stderr-{tag}.txt", "w")
    proc = subprocess.Popen([PYTHON, str(driver), *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=err, text=True)
    proc.ready, proc.go, proc.err_file, proc.err_path = ready, go, err, tmp_path / f"stderr-{tag}.txt"
    return proc


def _wait_ready(proc, timeout=240):
    t0 = time.time()
    while not proc.ready.exists():
        assert proc.poll() is None, f"exited early ({proc.returncode}): {proc.err_path.read_text()[-2000:]}"
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.05)


def _stderr(proc):
    proc.err_file.close()
    return proc.err_path.read_text()


def _train(*args):
    return subprocess.run([PYTHON, "train.py", *args], cwd=REPO, env=python_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def finished_run(face_dirs, tmp_path):
    """A tiny run of 2 steps with a checkpoint: (run directory, its config)."""
    cfg = tiny_config(face_dirs, tmp_path / "runs", train={"iters": 2, "ckpt_every": 1})
    res = run(cfg)
    return res.run_dir, cfg


# -- one writer per run directory ------------------------------------------------------------

def test_a_second_process_on_a_live_run_is_refused_naming_the_holder_and_sigkill_frees_it(
        face_dirs, tmp_path):
    cfg = tiny_dict(face_dirs, tmp_path / "runs", train={"iters": 6, "ckpt_every": 1})
    cfg_path = write_yaml(tmp_path / "tiny.yaml", cfg)
    holder = _start(tmp_path, ["--config", cfg_path], "train_step", block_at=2)
    run_dir = tmp_path / "runs" / "00000-tiny"
    try:
        _wait_ready(holder)  # steps 1 and 2 are saved; step 3 waits
        stats_before = (run_dir / "stats.jsonl").read_bytes()
        second = _train("--resume", str(run_dir))
        assert second.returncode == 2, second.stderr[-2000:]
        line = second.stderr.strip()
        assert line == (f"error: run directory {run_dir} is in use by process {holder.pid} on host "
                        f"{socket.gethostname()}; wait for that run to end or stop it first (two "
                        f"writers would interleave stats.jsonl and overwrite each other's "
                        f"checkpoints).")
        assert (run_dir / "stats.jsonl").read_bytes() == stats_before
        assert not (run_dir / "config.resumed.yaml").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel drops the lock with the process
        holder.wait(timeout=30)
        _stderr(holder)
    again = _train("--resume", str(run_dir), "--set", "train.iters=3")
    assert again.returncode == 0, again.stderr[-2000:]
    assert load_training_checkpoint(str(run_dir / "checkpoints" / "latest.pt"))["step"] == 3


def test_the_lock_is_taken_again_by_later_runs_of_the_same_process(finished_run, face_dirs):
    run_dir, cfg = finished_run
    latest = os.path.join(run_dir, "checkpoints", "latest.pt")
    res = run(tiny_config(face_dirs, os.path.dirname(run_dir), train={"iters": 3, "ckpt_every": 1}),
              resume=latest)
    assert res.step == 3 and os.path.isfile(os.path.join(run_dir, ".lock"))


# -- stale temporary files -------------------------------------------------------------------

def test_resume_removes_the_temporaries_of_killed_checkpoint_writes_and_nothing_else(
        finished_run, face_dirs):
    run_dir, _ = finished_run
    ck = os.path.join(run_dir, "checkpoints")
    stale = [".ckpt-0000003.pt.k2j_x9q1.tmp", ".latest.pt.tmp-4242", ".g_ema-0000003.pt.abcdefgh.tmp"]
    foreign = ["notes.tmp", ".ckpt-0000003.pt.tmp", "ckpt-0000003.pt.abcdefgh.tmp", ".mine.txt"]
    for name in stale + foreign:
        with open(os.path.join(ck, name), "wb") as f:
            f.write(b"x" * 1000)
    res = run(tiny_config(face_dirs, os.path.dirname(run_dir), train={"iters": 3, "ckpt_every": 1}),
              resume=os.path.join(ck, "latest.pt"))
    assert res.step == 3
    left = set(os.listdir(ck))
    assert not (set(stale) & left) and set(foreign) <= left
    log = open(os.path.join(run_dir, "log.txt"), encoding="utf-8").read()
    assert "removed 3 temporary file(s) of checkpoint writes that never finished" in log


# -- resuming with another architecture ------------------------------------------------------

def test_resume_with_another_model_is_refused_before_anything_is_written(finished_run, capsys):
    run_dir, _ = finished_run
    resumed = os.path.join(run_dir, "config.resumed.yaml")
    with open(resumed, "w") as f:
        f.write("earlier: session\n")
    stats = open(os.path.join(run_dir, "stats.jsonl"), "rb").read()
    for argv in (["--resume", run_dir, "--set", "model.size=32", "--set", "model.n_mlp=3"],
                 ["--resume", run_dir, "--set", "model.size=32", "--set", "model.n_mlp=3", "--dry-run"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --resume ") and err.count("\n") == 0
        assert "model.size (16 in the run, 32 now)" in err and "model.n_mlp (2 in the run, 3 now)" in err
        assert "model.style_dim" not in err
    assert open(resumed).read() == "earlier: session\n"
    assert open(os.path.join(run_dir, "stats.jsonl"), "rb").read() == stats


def test_the_loop_itself_refuses_another_model_on_resume(finished_run, face_dirs):
    run_dir, _ = finished_run
    cfg = tiny_config(face_dirs, os.path.dirname(run_dir), model={"channel_max": 32})
    with pytest.raises(ConfigError, match=r"model\.channel_max \(16 in the run, 32 now\)"):
        run(cfg, resume=os.path.join(run_dir, "checkpoints", "latest.pt"))
    assert not os.path.exists(os.path.join(run_dir, "config.resumed.yaml"))


# -- signals during start-up -----------------------------------------------------------------

def test_sigterm_during_startup_says_so_removes_the_fresh_run_and_exits_143(face_dirs, tmp_path):
    cfg_path = write_yaml(tmp_path / "tiny.yaml", tiny_dict(face_dirs, tmp_path / "runs"))
    proc = _start(tmp_path, ["--config", cfg_path], "build_datasets")  # the dataset scan
    _wait_ready(proc)
    run_dir = tmp_path / "runs" / "00000-tiny"
    assert run_dir.is_dir()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == cli.EXIT_TERMINATED == 143
    err = _stderr(proc)
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last == (f"stopped by SIGTERM before the first training step of this session; nothing was "
                    f"saved, the run directory {run_dir} was removed (no training step had finished).")
    assert not run_dir.exists()


def test_sigterm_during_a_resumed_startup_keeps_the_run_and_says_how_to_continue(finished_run, tmp_path):
    run_dir, _ = finished_run
    proc = _start(tmp_path, ["--resume", run_dir], "build_datasets")
    _wait_ready(proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    last = [line for line in _stderr(proc).splitlines() if line.strip()][-1]
    latest = os.path.join(run_dir, "checkpoints", "latest.pt")
    assert last == (f"stopped by SIGTERM before the first training step of this session; nothing was "
                    f"saved, the last checkpoint is {latest} (continue with: python train.py "
                    f"--resume {run_dir}).")
    assert load_training_checkpoint(latest)["step"] == 2


def test_a_second_ctrl_c_that_removed_the_run_does_not_suggest_resuming_it(face_dirs, tmp_path):
    # eval.at_start saves a step-0 checkpoint; the first step is then aborted: no step finished,
    # so the fresh directory goes, and with it the checkpoint the message used to point at.
    cfg = tiny_dict(face_dirs, tmp_path / "runs", eval={"every": 5, "at_start": True, "n_images": 4,
                                                         "batch": 4},
                    train={"iters": 5})
    cfg_path = write_yaml(tmp_path / "tiny.yaml", cfg)
    proc = _start(tmp_path, ["--config", cfg_path], "train_step", block_at=0)
    _wait_ready(proc)
    run_dir = tmp_path / "runs" / "00000-tiny"
    assert (run_dir / "checkpoints" / "latest.pt").exists()
    proc.send_signal(signal.SIGINT)
    t0 = time.time()
    while "press Ctrl-C again" not in proc.err_path.read_text() and time.time() - t0 < 60:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    err = _stderr(proc)
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert "--resume" not in last and "Traceback" not in err
    assert last == (f"aborted by a second Ctrl-C during step 1; nothing was saved, the run directory "
                    f"{run_dir} was removed (no training step had finished).")
    assert not run_dir.exists()
