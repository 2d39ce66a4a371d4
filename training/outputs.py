"""What a run writes besides checkpoints: log.txt, stats.jsonl, TensorBoard events, sample grids.

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
from dataclasses import dataclass, field
from typing import Optional

import torch
import yaml

from common.diskfull import DiskFullError, is_disk_full
from common.rundir import RunDirBusyError, RunDirLock, create_run_dir, lock_run_dir

from . import distributed as dist_utils
from .checkpointing import remove_stale_temporaries, run_dir_of


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
            from torch.utils.tensorboard import SummaryWriter  # optional: only with log.tensorboard
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
    import torchvision.utils as vutils  # heavy: only when a sample grid is made

    masked = real * (1 - mask)
    mask_rgb = (mask * 2 - 1).expand(-1, 3, -1, -1)
    cols = torch.stack([masked, mask_rgb, exemplar, completed, real], dim=1)  # [B, 5, 3, H, W]
    cols = cols.flatten(0, 1).float().clamp(-1, 1)
    return vutils.make_grid(cols, nrow=5, padding=2, normalize=True, value_range=(-1, 1))


def save_grid(grid: torch.Tensor, path: str) -> None:
    import torchvision.utils as vutils  # heavy: only when a sample grid is made

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.png"
    vutils.save_image(grid, tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# The run directory of a session
# ----------------------------------------------------------------------------------------------

@dataclass
class FreshRunDir:
    """The run directory of this session: removed again when a run this session created fails
    before its first training step (so a typo or an unreadable file leaves no empty
    runs/NNNNN-* behind); unlocked when the session ends."""
    path: Optional[str] = None             # set only when this session created the directory
    run_dir: Optional[str] = None          # the directory written, fresh or resumed
    made_outdir: Optional[str] = None      # log.outdir, when this session created it
    stepped: bool = False                  # a training step completed: keep everything
    closers: list = field(default_factory=list)
    lock: Optional[RunDirLock] = None

    def remove_if_unused(self) -> bool:
        """True when the directory was removed."""
        if self.path is None or self.stepped:
            return False
        import shutil  # only on this failure path

        for close in self.closers:
            try:
                close()
            except OSError:  # the directory goes anyway
                pass
        shutil.rmtree(self.path, ignore_errors=True)
        print(f"removed {self.path} (the run ended before its first step; nothing in it to keep)",
              file=sys.stderr)
        if self.made_outdir is not None:
            try:
                os.rmdir(self.made_outdir)  # only if empty
            except OSError:
                pass
        return True

    def latest(self) -> Optional[str]:
        """checkpoints/latest.pt of the run directory, when it exists."""
        path = os.path.join(self.run_dir, "checkpoints", "latest.pt") if self.run_dir else None
        return path if path and os.path.isfile(path) else None


def open_run_dir(cfg, info, resume, fresh: FreshRunDir):
    """(run directory, logger): fresh and numbered, or the resumed run's own; locked (one
    writer per run directory, rank 0 writes), its stale temporaries removed, the resolved
    config written."""
    run_dir, refusal = None, None
    if info.is_main:
        try:
            if resume:
                run_dir = fresh.run_dir = run_dir_of(resume.path) or create_run_dir(cfg.log.outdir, cfg.name)
            else:
                fresh.made_outdir = None if os.path.isdir(cfg.log.outdir) else cfg.log.outdir
                run_dir = fresh.path = fresh.run_dir = create_run_dir(cfg.log.outdir, cfg.name)
            fresh.lock = lock_run_dir(run_dir)
        except RunDirBusyError as e:
            refusal = str(e)
    # The other ranks learn of a refusal here instead of waiting for rank 0 until the timeout.
    run_dir, refusal = dist_utils.broadcast_object((run_dir, refusal))
    if refusal is not None:
        raise RunDirBusyError(refusal)
    log = setup_logger(run_dir if info.is_main else None, info.is_main)
    if info.is_main:
        stale = remove_stale_temporaries(os.path.join(run_dir, "checkpoints"))
        if stale:
            log.warning("removed %d temporary file(s) of checkpoint writes that never finished "
                        "(an earlier process was killed while saving), %.1f MB: %s", len(stale),
                        sum(size for _, size in stale) / 1e6, ", ".join(name for name, _ in stale))
        with open(os.path.join(run_dir, "config.yaml" if not resume else "config.resumed.yaml"), "w") as f:
            yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
    return run_dir, log


def write_summary(run_dir: str, result, last_samples: Optional[str], train_root: str,
                   test_root: str, standin_psp: Optional[str] = None) -> None:
    """summary.json: where things are and the first / last evaluation (for scripts and humans).

    On resume the evaluations of the earlier sessions are read back from stats.jsonl.
    """
    evals = []
    with open(os.path.join(run_dir, "stats.jsonl"), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row.get("kind") == "eval":
                evals.append({k: v for k, v in row.items() if k != "kind"})
    ck = os.path.join(run_dir, "checkpoints")
    summary = {
        "run_dir": run_dir, "step": result.step, "stopped_by": result.stopped_by,
        "train_data": train_root, "test_data": test_root,
        "latest_checkpoint": os.path.join(ck, "latest.pt"), "export": os.path.join(ck, "export.pt"),
        "best_checkpoint": os.path.join(ck, "best.pt") if os.path.exists(os.path.join(ck, "best.pt")) else None,
        "final_samples": last_samples, "first_eval": evals[0] if evals else None,
        "last_eval": evals[-1] if evals else None, "last_train_stats": result.last_stats,
        # pretrained.allow_random only: the random stand-in pSp encoder in the pSp file layout
        # (for scripts/inpaint.py --psp and test.py on this run's models); null otherwise.
        "standin_psp": standin_psp,
    }
    tmp = os.path.join(run_dir, ".summary.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    os.replace(tmp, os.path.join(run_dir, "summary.json"))
