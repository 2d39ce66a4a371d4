"""Interruptions of a real train.py process: SIGKILL in the middle of writing a checkpoint, and
SIGTERM (save, exit cleanly, resume)."""
import json
import os
import signal
import subprocess
import textwrap
import time

import torch

from training.checkpointing import load_training_checkpoint
from training.cli import EXIT_STOPPED
from training.run import run
from training.signals import STOP_MESSAGE
from trainutil import PYTHON, REPO, python_env, tiny_config, tiny_dict, write_yaml

# Runs train.py with torch.save replaced: the KILL_AT-th call writes half of the real bytes to
# its (temporary) target, leaves a marker file and hangs, so the test can SIGKILL it mid-write.
SLOW_SAVE_DRIVER = textwrap.dedent("""
    import io, os, sys, time
    import torch
    kill_at, marker = int(os.environ["KILL_AT"]), os.environ["MARKER"]
    real_save, calls = torch.save, [0]

    def save(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] == kill_at:
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            fh = open(f, "wb") if isinstance(f, (str, os.PathLike)) else f  # a path or the open file
            fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            fh.flush()
            os.fsync(fh.fileno())
            open(marker, "w").close()
            time.sleep(600)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save
    from training.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _wait_for(predicate, proc, timeout=240):
    t0 = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"train.py exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for train.py")
        time.sleep(0.2)


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(face_dirs, tmp_path):
    cfg = tiny_dict(face_dirs, tmp_path / "runs", train={"iters": 6, "ckpt_every": 2})
    cfg_path = write_yaml(tmp_path / "tiny.yaml", cfg)
    driver = tmp_path / "driver.py"
    driver.write_text(SLOW_SAVE_DRIVER)
    marker = tmp_path / "writing"
    # torch.save calls: 1 = ckpt at step 2, 2 = its G_ema export, 3 = ckpt at step 4 -> killed.
    env = dict(python_env(), KILL_AT="3", MARKER=str(marker))
    proc = subprocess.Popen([PYTHON, str(driver), "--config", cfg_path], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(marker.exists, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    ck = tmp_path / "runs" / "00000-tiny" / "checkpoints"
    names = os.listdir(ck)
    assert "ckpt-0000004.pt" not in names            # the interrupted file never got its name
    assert any(n.startswith(".ckpt-0000004.pt.") for n in names)  # the half-written temp file
    latest = load_training_checkpoint(str(ck / "latest.pt"))
    assert latest["step"] == 2
    # ... and the run resumes from it to the end.
    res = run(tiny_config(face_dirs, tmp_path / "runs", train={"iters": 3, "ckpt_every": 2}),
              resume=str(ck / "latest.pt"))
    assert res.step == 3 and load_training_checkpoint(str(ck / "latest.pt"))["step"] == 3


def test_sigterm_saves_and_exits_cleanly(face_dirs, tmp_path):
    cfg = tiny_dict(face_dirs, tmp_path / "runs", train={"iters": 10000})
    cfg_path = write_yaml(tmp_path / "tiny.yaml", cfg)
    proc = subprocess.Popen([PYTHON, "train.py", "--config", cfg_path], cwd=REPO, env=python_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stats = tmp_path / "runs" / "00000-tiny" / "stats.jsonl"
    _wait_for(lambda: stats.exists() and stats.read_text().count("\n") >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_STOPPED == 75, err[-2000:]  # stopped and saved != finished (0)
    assert f"SIGTERM: {STOP_MESSAGE}" in err and "Traceback" not in err
    run_dir = tmp_path / "runs" / "00000-tiny"
    rows = [json.loads(l) for l in stats.read_text().splitlines()]
    last = max(r["step"] for r in rows if r["kind"] == "train")
    latest = load_training_checkpoint(str(run_dir / "checkpoints" / "latest.pt"))
    assert latest["step"] == last >= 2 and last < 10000
    log = (run_dir / "log.txt").read_text()
    assert f"stopped at step {last} (SIGTERM)" in log and "--resume" in log
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGTERM" and summary["step"] == last


# -- what a Ctrl-C / SIGTERM does, seen from the terminal -------------------------------

# train.py whose step BLOCK_AT (0-based) waits until the file GO exists: a long step, during which
# the test sends its signals.
BLOCKING_STEP_DRIVER = textwrap.dedent("""
    import os, sys, time
    from training import run as loop, trainer
    block_at, go = int(os.environ["BLOCK_AT"]), os.environ["GO"]
    original = trainer.Trainer.train_step

    def train_step(self, step, real, **kwargs):
        if step == block_at:
            t0 = time.time()
            while not os.path.exists(go) and time.time() - t0 < 300:
                time.sleep(0.05)
        return original(self, step, real, **kwargs)

    trainer.Trainer.train_step = train_step
    from training.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _start_blocked(tmp_path, cfg_path, block_at):
    driver = tmp_path / "blocking_driver.py"
    driver.write_text(BLOCKING_STEP_DRIVER)
    err_path = tmp_path / "stderr.txt"
    env = dict(python_env(), BLOCK_AT=str(block_at), GO=str(tmp_path / "go"))
    err_file = open(err_path, "w")
    proc = subprocess.Popen([PYTHON, str(driver), "--config", cfg_path], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=err_file, text=True)
    proc.err_path, proc.err_file = err_path, err_file
    return proc


def _wait_text(proc, text, timeout=240):
    t0 = time.time()
    while text not in proc.err_path.read_text():
        assert proc.poll() is None, f"train.py exited ({proc.returncode}): {proc.err_path.read_text()[-2000:]}"
        assert time.time() - t0 < timeout, f"no {text!r} on stderr: {proc.err_path.read_text()[-2000:]}"
        time.sleep(0.05)


def _rows_of(run_dir):
    return [json.loads(l) for l in (run_dir / "stats.jsonl").read_text().splitlines()]


def test_ctrl_c_says_so_at_once_saves_after_the_step_exits_75_and_resumes_bitwise(face_dirs, tmp_path):
    from test_loop import _assert_same_state
    from training import cli

    sections = dict(train={"iters": 6, "deterministic": True, "diffaug": True, "ckpt_every": 2},
                    loss={"d_reg_every": 4, "g_reg_every": 2},
                    data={"num_workers": 1})  # a DataLoader worker also receives the terminal's SIGINT
    cfg_path = write_yaml(tmp_path / "tiny.yaml", tiny_dict(face_dirs, tmp_path / "runs", **sections))
    proc = _start_blocked(tmp_path, cfg_path, block_at=2)
    run_dir = tmp_path / "runs" / "00000-tiny"
    _wait_for(lambda: (run_dir / "stats.jsonl").exists()
              and len((run_dir / "stats.jsonl").read_text().splitlines()) >= 2, proc)
    proc.send_signal(signal.SIGINT)             # during step 3 (index 2), which is blocked
    # The message comes while the step still runs (it cannot end before the go file exists).
    _wait_text(proc, f"SIGINT: {STOP_MESSAGE}")
    assert not (run_dir / "checkpoints" / "ckpt-0000003.pt").exists()
    (tmp_path / "go").touch()
    assert proc.wait(timeout=240) == EXIT_STOPPED
    proc.err_file.close()
    err = proc.err_path.read_text()
    assert "Traceback" not in err and "stopped at step 3 (SIGINT)" in err
    assert load_training_checkpoint(str(run_dir / "checkpoints" / "latest.pt"))["step"] == 3
    assert json.loads((run_dir / "summary.json").read_text())["stopped_by"] == "SIGINT"

    # --resume finishes the run exactly as an uninterrupted one.
    sections["data"] = {"num_workers": 0}
    assert cli.main(["--resume", str(run_dir)]) == 0
    straight = run(tiny_config(face_dirs, tmp_path / "straight", **sections))
    torch.use_deterministic_algorithms(False)
    _assert_same_state(
        load_training_checkpoint(os.path.join(straight.run_dir, "checkpoints", "latest.pt")),
        load_training_checkpoint(str(run_dir / "checkpoints" / "latest.pt")))


def test_a_second_ctrl_c_aborts_without_saving_exit_130_one_line(face_dirs, tmp_path):
    cfg = tiny_dict(face_dirs, tmp_path / "runs", train={"iters": 6, "ckpt_every": 2})
    cfg_path = write_yaml(tmp_path / "tiny.yaml", cfg)
    proc = _start_blocked(tmp_path, cfg_path, block_at=2)
    run_dir = tmp_path / "runs" / "00000-tiny"
    _wait_for(lambda: (run_dir / "checkpoints" / "latest.pt").exists(), proc)  # the step-2 checkpoint
    proc.send_signal(signal.SIGINT)
    _wait_text(proc, STOP_MESSAGE)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    proc.err_file.close()
    err = proc.err_path.read_text()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last = [l for l in err.splitlines() if l.strip()][-1]
    assert last == (f"aborted by a second Ctrl-C during step 3; nothing was saved, the last checkpoint is "
                    f"{run_dir / 'checkpoints' / 'latest.pt'} (continue with: python train.py --resume "
                    f"{run_dir}).")
    assert load_training_checkpoint(str(run_dir / "checkpoints" / "latest.pt"))["step"] == 2
    assert not (run_dir / "checkpoints" / "ckpt-0000003.pt").exists()


# Two ranks; rank 1 alone gets SIGTERM during step 2 (index 1): both must stop after that step.
DDP_SIGNAL_DRIVER = textwrap.dedent("""
    import json, os, signal, sys
    from training import run as loop, trainer
    from training.config import load_config
    rank = int(os.environ["RANK"])
    original = trainer.Trainer.train_step

    def train_step(self, step, real, **kwargs):
        if rank == 1 and step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, step, real, **kwargs)

    trainer.Trainer.train_step = train_step
    res = loop.run(load_config(sys.argv[1]))
    with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as f:
        json.dump({"step": res.step, "stopped_by": res.stopped_by}, f)
""")


def test_under_torchrun_a_signal_on_one_rank_stops_every_rank_at_the_same_step(face_dirs, tmp_path):
    cfg = tiny_dict(face_dirs, tmp_path / "runs", train={"iters": 50, "batch": 2})
    cfg_path = write_yaml(tmp_path / "tiny.yaml", cfg)
    (tmp_path / "driver.py").write_text(DDP_SIGNAL_DRIVER)
    cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(tmp_path / "driver.py"), cfg_path, str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] == {"step": 2, "stopped_by": "SIGTERM"}
    ck = tmp_path / "runs" / "00000-tiny" / "checkpoints"
    assert load_training_checkpoint(str(ck / "latest.pt"))["step"] == 2
