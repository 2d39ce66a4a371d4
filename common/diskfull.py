"""A full disk while writing a checkpoint or results: one sentence, not the serializer's traceback.

``torch.save`` reports a failed write as ``RuntimeError: [enforce fail at inline_container.cc]``
without an errno; written through a Python file object the ``OSError(ENOSPC)`` of the write
survives as the RuntimeError's context, which :func:`is_disk_full` looks for (and, failing that,
compares the free space with what the write needed).
"""
from __future__ import annotations

import errno
import os
import shutil
from typing import Optional

from common.errors import UserError

_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class DiskFullError(UserError):
    """No space left for a write; the previous files are untouched."""

    def __init__(self, path: str, needed: int, then: str = "free some space and run it again"):
        self.path, self.needed = path, int(needed)
        super().__init__(f"no space left on {device_of(path)} for {path} (needed {_mb(needed)}); "
                         f"{then}.")

    def advise(self, then: str) -> "DiskFullError":
        """The same sentence with another remedy."""
        return DiskFullError(self.path, self.needed, then)


def _mb(n: int) -> str:
    mb = max(n, 0) / 1e6
    if mb >= 10:
        return f"~{mb:.0f} MB"
    return f"~{mb:.1f} MB" if mb >= 0.1 else "under 0.1 MB"


def device_of(path: str) -> str:
    """The device (and mount point) that holds ``path``, e.g. ``/dev/sda1 (mounted at /data)``;
    the mount point alone where the mount table cannot be read."""
    real = os.path.realpath(os.path.dirname(os.path.abspath(path)) or ".")
    best: Optional[tuple] = None
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 2:
                    continue
                dev, mnt = parts[0], parts[1].replace("\\040", " ")
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and (
                        best is None or len(mnt) >= len(best[1])):
                    best = (dev, mnt)
    except OSError:
        pass
    if best is not None:
        return f"{best[0]} (mounted at {best[1]})"
    mnt = real
    while not os.path.ismount(mnt) and os.path.dirname(mnt) != mnt:
        mnt = os.path.dirname(mnt)
    return mnt


def is_disk_full(exc: BaseException, folder: Optional[str] = None, needed: int = 0) -> bool:
    """True when ``exc`` (or an exception it was raised from or during) is ENOSPC / EDQUOT, or
    is a failed write while ``folder`` has less free space than ``needed`` bytes."""
    seen = set()
    e: Optional[BaseException] = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL:
            return True
        if "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    if folder is not None and needed > 0 and isinstance(exc, (OSError, RuntimeError)):
        try:
            return shutil.disk_usage(folder).free < needed
        except OSError:
            return False
    return False
