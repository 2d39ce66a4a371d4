"""A signal whose handler raises (a second Ctrl-C, SIGTERM during start-up) arriving while a
checkpoint is written through its Python file object: the exception must wait until the file is
whole (or cleaned up) - raised inside the file's write it unwinds through torch's C++ writer and
the process dies of SIGABRT instead of printing its one line."""
import os
import subprocess
import sys
import textwrap

import pytest

from common.interrupts import raise_or_defer, uninterruptible

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A process that installs the loop's StopFlag, then writes a checkpoint during which two SIGINTs
# arrive (sent from inside the file object's write, so their handlers run in the middle of it).
DRIVER = textwrap.dedent("""
    import os, signal, sys
    import torch
    from models import checkpoint
    from training.signals import StopFlag, TrainingAborted

    real_open = checkpoint._open_for_write

    class Writer:
        def __init__(self, f):
            self.f, self.sent = f, 0
        def write(self, b):
            if self.sent < 2:
                self.sent += 1
                os.kill(os.getpid(), signal.SIGINT)   # the handler runs at the next bytecode: here
            return self.f.write(b)
        def __getattr__(self, name):
            return getattr(self.f, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    checkpoint._open_for_write = lambda fd: Writer(real_open(fd))
    path = sys.argv[1]
    with StopFlag(announce=False):
        try:
            checkpoint.save_checkpoint({"w": torch.arange(300000.0)}, path)
        except TrainingAborted as e:
            print("aborted:", e, flush=True)
            sys.exit(130)
    sys.exit(0)
""")


def test_a_second_ctrl_c_during_a_checkpoint_write_waits_for_the_file(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "ck.pt"
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(driver), str(out)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 130, (proc.returncode, proc.stderr[-2000:])   # not -6 (SIGABRT)
    assert proc.stdout.startswith("aborted: aborted by a second Ctrl-C")
    import torch
    assert torch.equal(torch.load(out, weights_only=True)["w"], torch.arange(300000.0))  # whole
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []


def test_raise_or_defer_raises_at_the_end_of_the_outermost_block():
    with pytest.raises(KeyError):
        raise_or_defer(KeyError("now"))
    done = []
    with pytest.raises(KeyError, match="first"):
        with uninterruptible():
            with uninterruptible():
                raise_or_defer(KeyError("first"))
                raise_or_defer(KeyError("second"))
                done.append("inner")
            done.append("outer")
    assert done == ["inner", "outer"]
    with uninterruptible():
        pass                                            # nothing pending afterwards
