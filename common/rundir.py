"""Numbered run directories: ``<outdir>/<NNNNN>-<name>`` (training runs and test.py results).

Directories are numbered from the highest existing number + 1 and created with an exclusive
mkdir, so two runs started at the same moment never share (or overwrite) a directory.
"""
from __future__ import annotations

import os
import re
import socket
from typing import Optional

from common.errors import UserError

_RUN_RE = re.compile(r"^(\d{5})-")


def _safe_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")
    return name or "run"


class RunDirCreateError(UserError, OSError):
    """The folder of the run directories cannot hold a new one (a file, read-only, no space)."""


def create_run_dir(outdir: str, name: str) -> str:
    """Make a fresh `outdir/<NNNNN>-<name>`; never reuses an existing directory."""
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise RunDirCreateError(f"the runs folder {outdir} (--outdir / log.outdir) is a file; give a folder "
                                f"for the run directories.")
    name = _safe_name(name)
    try:
        os.makedirs(outdir, exist_ok=True)
        taken = [int(m.group(1)) for m in map(_RUN_RE.match, os.listdir(outdir)) if m]
        number = max(taken, default=-1) + 1
        while True:
            path = os.path.join(outdir, f"{number:05d}-{name}")
            try:
                os.mkdir(path)  # exclusive: fails if another process took this number first
                return path
            except FileExistsError:
                number += 1
    except OSError as e:
        raise RunDirCreateError(f"cannot create a run directory in {outdir} (--outdir / log.outdir): "
                                f"{e.strerror or e}; give a folder you can write to.") from None


LOCK_NAME = ".lock"

# Locks this process holds, by run directory: flock conflicts between two open file descriptions
# even inside one process, so a second run() in the same process (tests, notebooks) must reuse
# the first one's descriptor instead of refusing itself.
_HELD: dict = {}


class RunDirBusyError(UserError, RuntimeError):
    """Another live process writes this run directory."""


class RunDirLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock``, held until :meth:`release` or the end of
    the process.

    An OS lock rather than a PID file: the kernel drops it when the holder exits in any way,
    SIGKILL and power loss included, so a crashed run never blocks its own ``--resume``. The file
    keeps the holder's PID and host only to name them in the refusal.
    """

    def __init__(self, run_dir: str):
        self.run_dir = os.path.abspath(run_dir)
        self.path = os.path.join(self.run_dir, LOCK_NAME)
        self._fd: Optional[int] = None
        self._count = 0

    def acquire(self) -> "RunDirLock":
        try:
            import fcntl  # optional: POSIX only (Windows has no flock)
        except ImportError:  # no flock (Windows): one writer per run is the user's to keep
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirBusyError(
                f"run directory {self.run_dir} is in use by {holder}; wait for that run to end or "
                f"stop it first (two writers would interleave stats.jsonl and overwrite each "
                f"other's checkpoints).") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} host {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
    except OSError:
        text = []
    if len(text) >= 4 and text[0] == "pid" and text[2] == "host":
        return f"process {text[1]} on host {text[3]}"
    return "another process (its PID and host are not recorded yet)"


def lock_run_dir(run_dir: str) -> RunDirLock:
    """Take (or, inside the process holding it, take again) the run directory's lock; raises
    :class:`RunDirBusyError` naming the holder when another process has it."""
    key = os.path.abspath(run_dir)
    lock = _HELD.get(key)
    if lock is None:
        lock = RunDirLock(key).acquire()
        _HELD[key] = lock
    lock._count += 1
    return lock


def unlock_run_dir(lock: Optional[RunDirLock]) -> None:
    """Undo one :func:`lock_run_dir`; the lock goes when the last user of this process is done."""
    if lock is None:
        return
    lock._count -= 1
    if lock._count <= 0:
        _HELD.pop(lock.run_dir, None)
        lock.release()
