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
from training.loop import run
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
            with open(f, "wb") as fh:
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
    assert proc.returncode == 0, err[-2000:]
    run_dir = tmp_path / "runs" / "00000-tiny"
    rows = [json.loads(l) for l in stats.read_text().splitlines()]
    last = max(r["step"] for r in rows if r["kind"] == "train")
    latest = load_training_checkpoint(str(run_dir / "checkpoints" / "latest.pt"))
    assert latest["step"] == last >= 2 and last < 10000
    log = (run_dir / "log.txt").read_text()
    assert f"stopped at step {last} (SIGTERM)" in log and "--resume" in log
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGTERM" and summary["step"] == last
