"""Run directories and their outputs: log.txt, stats.jsonl, TensorBoard events, sample grids.

Layout of one run (only rank 0 writes):

    runs/00003-demo/
        .lock              flock of the one process writing the run (common.rundir.RunDirLock)
        config.yaml        resolved config of the run
        log.txt            human-readable log (appended to on resume)
        stats.jsonl        one JSON object per log / eval event: {"step": ..., "kind": ..., ...}
        events.out.tfevents.*   TensorBoard scalars and sample images
        samples/step-000100.png  grids: input with hole | mask | exemplar | output | ground truth
        checkpoints/       ckpt-<step>.pt (last K), latest.pt, best.pt, g_ema-<step>.pt, export.pt

Directories are numbered from the highest existing number + 1 and created with an exclusive
mkdir, so two runs started at the same moment never share (or overwrite) a directory
(``common.rundir.create_run_dir``, which test.py's results directories use too).
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
from typing import Optional

import torch

from common.diskfull import DiskFullError, is_disk_full
from common.rundir import create_run_dir  # noqa: F401  (re-exported: the loop and tests use it)


def setup_logger(run_dir: Optional[str], is_main: bool) -> logging.Logger:
    """Logger 'exegan.train': stderr + run_dir/log.txt on rank 0, errors only on other ranks.

    Warnings of the other packages (a skipped image, a random stand-in) go to log.txt as well:
    the file handler is also attached to the root logger at WARNING level. Other ranks raise
    the root level to ERROR so that N processes do not print N copies of each warning.
    """
    log = logging.getLogger("exegan.train")
    root = logging.getLogger()
    for h in list(log.handlers) + [h for h in root.handlers if getattr(h, "_exegan_run", False)]:
        log.removeHandler(h)
        root.removeHandler(h)
        h.close()
    log.propagate = False
    log.setLevel(logging.INFO if is_main else logging.ERROR)
    if not is_main:
        root.setLevel(logging.ERROR)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    log.addHandler(stream)
    if is_main and run_dir is not None:
        fh = logging.FileHandler(os.path.join(run_dir, "log.txt"), mode="a", encoding="utf-8")
        fh.setFormatter(fmt)
        log.addHandler(fh)
        named = logging.Formatter("%(asctime)s [%(name)s] %(message)s", "%Y-%m-%d %H:%M:%S")
        for h in (logging.FileHandler(os.path.join(run_dir, "log.txt"), mode="a", encoding="utf-8"),
                  logging.StreamHandler(sys.stderr)):
            h.setFormatter(named)
            h.setLevel(logging.WARNING)
            h._exegan_run = True
            root.addHandler(h)
    return log


def close_logger() -> None:
    """Detach and close the run's handlers (the run directory's log.txt)."""
    for lg in (logging.getLogger("exegan.train"), logging.getLogger()):
        for h in list(lg.handlers):
            if lg.name == "exegan.train" or getattr(h, "_exegan_run", False):
                lg.removeHandler(h)
                h.close()


class StatsWriter:
    """stats.jsonl + TensorBoard scalars/images; a no-op on ranks other than 0."""

    def __init__(self, run_dir: Optional[str], enabled: bool, tensorboard: bool = True,
                 purge_step: Optional[int] = None):
        self.enabled = enabled and run_dir is not None
        self.run_dir = run_dir
        self._jsonl = None
        self._tb = None
        if not self.enabled:
            return
        self._jsonl = open(os.path.join(run_dir, "stats.jsonl"), "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            # purge_step: on resume, drop events logged after the checkpoint we restart from.
            self._tb = SummaryWriter(log_dir=run_dir, purge_step=purge_step)

    def scalars(self, step: int, values: dict, kind: str = "train") -> None:
        if not self.enabled:
            return
        row = {"step": int(step), "kind": kind}
        row.update({k: (float(v) if isinstance(v, (int, float)) else v) for k, v in values.items()})
        line = json.dumps(row, allow_nan=True) + "\n"
        try:
            self._jsonl.write(line)
            self._jsonl.flush()
        except OSError as e:
            if is_disk_full(e):
                raise DiskFullError(self._jsonl.name, len(line)) from None
            raise
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(float(v)):
                    self._tb.add_scalar(f"{kind}/{k}", float(v), global_step=step)

    def image(self, step: int, tag: str, grid: torch.Tensor) -> None:
        """grid: [3, H, W] in [0, 1]."""
        if self.enabled and self._tb is not None:
            self._tb.add_image(tag, grid, global_step=step)

    def close(self) -> None:
        if self._jsonl is not None:
            try:
                self._jsonl.close()
            except OSError as e:  # the rows a full disk refused: already reported by scalars()
                if not is_disk_full(e):
                    raise
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def sample_grid(real: torch.Tensor, mask: torch.Tensor, exemplar: torch.Tensor,
                completed: torch.Tensor) -> torch.Tensor:
    """One row per sample: input with hole | mask | exemplar | output | ground truth.

    Inputs are [B,3,H,W] in [-1,1] and mask [B,1,H,W] (1 = hole); the hole is shown in grey
    (value 0) in the input column. Returns [3, H', W'] in [0, 1].
    """
    import torchvision.utils as vutils

    masked = real * (1 - mask)
    mask_rgb = (mask * 2 - 1).expand(-1, 3, -1, -1)
    cols = torch.stack([masked, mask_rgb, exemplar, completed, real], dim=1)  # [B, 5, 3, H, W]
    cols = cols.flatten(0, 1).float().clamp(-1, 1)
    return vutils.make_grid(cols, nrow=5, padding=2, normalize=True, value_range=(-1, 1))


def save_grid(grid: torch.Tensor, path: str) -> None:
    import torchvision.utils as vutils

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.png"
    vutils.save_image(grid, tmp)
    os.replace(tmp, path)
