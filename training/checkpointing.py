"""Training checkpoints of a run: last-K retention, latest/best links, G_ema exports, resume.

The file format is ``models.checkpoint``'s (docs/models.md, Checkpoints): ``make_checkpoint`` builds the plain
dict ``{format, g, d, g_ema, g_optim, d_optim, step, rng, config, best_metric, arch}`` and
``save_checkpoint`` writes it atomically (temp file in the same folder, then rename) after checking
that it holds only tensors and plain values, so it loads back with ``weights_only=True``. The loop
adds what an identical resume needs on top:

    pl_mean       [world_size] running mean path length of every process
    data          {"epoch", "batch_in_epoch", "batches_per_epoch", "seed"}: where step reads
    augment       DiffAugment settings (the augmentation itself is drawn per step, see rng.py)
    world_size    processes of the run that wrote it

Files under ``<run>/checkpoints/``: ``ckpt-<step>.pt`` (the last ``train.keep_last``),
``latest.pt`` and ``best.pt`` (hard links to a ckpt file - no extra disk - or copies where links
are not supported), and the small inference exports ``g_ema-<step>.pt`` / ``export.pt``
(``{"format": "exegan-export-v1", "g_ema", "arch": {"g": ...}, "step", "config"}``; read by
``models.load_generator``). A crash or SIGKILL mid-write leaves every previous file intact.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
from dataclasses import dataclass
from typing import Optional, Union

from models.checkpoint import (FORMAT, CheckpointError, fsync_dir, make_checkpoint, restore_rng_state,
                               safe_load, save_checkpoint)

EXPORT_FORMAT = "exegan-export-v1"


def _link_atomic(src: str, dst: str) -> None:
    """Point `dst` at the bytes of `src` (hard link, else copy), replacing `dst` atomically."""
    tmp = os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.tmp-{os.getpid()}")
    if os.path.exists(tmp):
        os.remove(tmp)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    fsync_dir(os.path.dirname(dst))


# The temporary names this module's writers use: save_checkpoint's mkstemp (".<name>.<8 random
# chars>.tmp") and _link_atomic (".<name>.tmp-<pid>"). Nothing else in checkpoints/ is touched.
_TEMP_RE = re.compile(r"^\.[^/]+\.pt\.(?:[A-Za-z0-9_]{8}\.tmp|tmp-\d+)$")


def remove_stale_temporaries(ckpt_dir: str) -> list:
    """Delete the temporary files that checkpoint writes killed mid-way left in ``ckpt_dir``;
    returns [(name, bytes)]. Only safe while holding the run directory's lock: then no other
    process can be writing one of them."""
    removed = []
    try:
        names = sorted(os.listdir(ckpt_dir))
    except OSError:
        return removed
    for name in names:
        path = os.path.join(ckpt_dir, name)
        if _TEMP_RE.match(name) and os.path.isfile(path) and not os.path.islink(path):
            size = os.path.getsize(path)
            os.remove(path)
            removed.append((name, size))
    return removed


def resolve_resume(path: str) -> str:
    """A run directory -> its checkpoints/latest.pt; a file -> itself."""
    if os.path.isdir(path):
        for cand in (os.path.join(path, "checkpoints", "latest.pt"), os.path.join(path, "latest.pt")):
            if os.path.isfile(cand):
                return cand
        raise CheckpointError(f"--resume {path}: the run directory holds no checkpoints/latest.pt; "
                              f"point --resume at a run directory with a checkpoint or at a .pt file.")
    if not os.path.isfile(path):
        raise CheckpointError(f"--resume {path}: no such file or run directory.")
    return path


def run_dir_of(ckpt_path: str) -> Optional[str]:
    """The run directory a checkpoint file belongs to (parent of checkpoints/), if any."""
    d = os.path.dirname(os.path.abspath(ckpt_path))
    if os.path.basename(d) == "checkpoints" and os.path.isfile(os.path.join(os.path.dirname(d), "config.yaml")):
        return os.path.dirname(d)
    return None


def load_training_checkpoint(path: str) -> dict:
    """Read a checkpoint written by train.py (weights_only); a foreign file is one clear error."""
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "pl_mean" not in ckpt:
        raise CheckpointError(f"{path} is not a training checkpoint written by train.py (e.g. "
                              f"<run>/checkpoints/latest.pt); released or exported generator files "
                              f"cannot be resumed.")
    return ckpt


def training_state(trainer, step: int, pl_mean: list, data_pos: dict, best) -> dict:
    """The checkpoint of a ``training.trainer.Trainer`` after ``step`` iterations (format
    ``exegan-checkpoint-v1``): networks, optimizers, RNG states, config, best metric, every
    rank's path-length mean, the data position, the augmentation settings, the world size."""
    cfg = trainer.cfg
    return make_checkpoint(
        g=trainer.G, d=trainer.D, g_ema=trainer.G_ema, g_optim=trainer.g_optim, d_optim=trainer.d_optim,
        step=step, config=cfg.to_dict(), best_metric=best,
        pl_mean=[float(v) for v in pl_mean], data=data_pos,
        augment={"diffaug": cfg.train.diffaug, "policy": cfg.train.diffaug_policy},
        world_size=trainer.info.world_size)


def restore_training_state(trainer, ckpt: dict) -> None:
    """Load a checkpoint of ``training_state`` into a built Trainer (and the RNG states)."""
    trainer.G.load_state_dict(ckpt["g"])
    trainer.D.load_state_dict(ckpt["d"])
    trainer.G_ema.load_state_dict(ckpt["g_ema"])
    trainer.g_optim.load_state_dict(ckpt["g_optim"])
    trainer.d_optim.load_state_dict(ckpt["d_optim"])
    for group in trainer.g_optim.param_groups + trainer.d_optim.param_groups:
        group.update(trainer.adam_impl)  # this run's implementation, not the writer's
    pl, info = ckpt["pl_mean"], trainer.info
    own = pl[info.rank] if len(pl) == info.world_size else sum(pl) / len(pl)
    trainer.path_reg.mean_path_length.fill_(own)
    if ckpt.get("rng") is not None:
        restore_rng_state(ckpt["rng"])


@dataclass
class Resume:
    """The checkpoint a run continues from: its path and, once read, its content. train.py's
    command line reads the file for the run's config and hands it on, so that a resume reads
    its checkpoint once; ``take`` gives the content away (the holder keeps no reference)."""
    path: str
    state: Optional[dict] = None

    @classmethod
    def of(cls, resume: Union[str, "Resume", None]) -> Optional["Resume"]:
        return resume if resume is None or isinstance(resume, Resume) else cls(str(resume))

    def take(self) -> dict:
        """The checkpoint's content (read now unless it was read already); read once."""
        state, self.state = self.state, None
        return state if state is not None else load_training_checkpoint(self.path)


class CheckpointManager:
    """Writes the checkpoint files of one run (call on rank 0 only)."""

    def __init__(self, run_dir: str, keep_last: int = 3):
        self.dir = os.path.join(run_dir, "checkpoints")
        self.keep_last = max(1, keep_last)
        os.makedirs(self.dir, exist_ok=True)

    def path(self, step: int) -> str:
        return os.path.join(self.dir, f"ckpt-{step:07d}.pt")

    def save(self, state: dict, step: int, best: bool = False) -> str:
        path = self.path(step)
        save_checkpoint(state, path)
        _link_atomic(path, os.path.join(self.dir, "latest.pt"))
        if best:
            _link_atomic(path, os.path.join(self.dir, "best.pt"))
        self._prune()
        return path

    def mark_best(self, step: int) -> None:
        _link_atomic(self.path(step), os.path.join(self.dir, "best.pt"))

    def export(self, g_ema_state: dict, model_cfg: dict, step: int, config: dict) -> str:
        """Small inference file: G_ema weights + its constructor arguments (also as export.pt)."""
        obj = {"format": EXPORT_FORMAT, "g_ema": g_ema_state, "arch": {"g": dict(model_cfg)},
               "step": int(step), "config": config}
        path = os.path.join(self.dir, f"g_ema-{step:07d}.pt")
        save_checkpoint(obj, path)
        _link_atomic(path, os.path.join(self.dir, "export.pt"))
        self._prune(prefix="g_ema-")
        return path

    def _prune(self, prefix: str = "ckpt-") -> None:
        files = sorted(glob.glob(os.path.join(self.dir, f"{prefix}*.pt")))
        for old in files[:-self.keep_last]:
            os.remove(old)  # latest.pt / best.pt are separate links and keep their bytes
