"""Numbered run directories: ``<outdir>/<NNNNN>-<name>`` (training runs and test.py results).

Directories are numbered from the highest existing number + 1 and created with an exclusive
mkdir, so two runs started at the same moment never share (or overwrite) a directory.
"""
from __future__ import annotations

import os
import re

_RUN_RE = re.compile(r"^(\d{5})-")


def _safe_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")
    return name or "run"


def create_run_dir(outdir: str, name: str) -> str:
    """Make a fresh `outdir/<NNNNN>-<name>`; never reuses an existing directory."""
    os.makedirs(outdir, exist_ok=True)
    name = _safe_name(name)
    taken = [int(m.group(1)) for m in map(_RUN_RE.match, os.listdir(outdir)) if m]
    number = max(taken, default=-1) + 1
    while True:
        path = os.path.join(outdir, f"{number:05d}-{name}")
        try:
            os.mkdir(path)  # exclusive: fails if another process took this number first
            return path
        except FileExistsError:
            number += 1
