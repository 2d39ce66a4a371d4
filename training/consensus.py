"""What every rank must agree on after a training step (losses finite? stop now?), read from
the device only at the steps where the loop has to decide: the loop's one device -> host read.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import distributed as dist_utils


# Stop requests as numbers for one max-reduction over ranks (the largest wins on every rank).
_STOP_CODES = {0: None, 1: "stop_at", 2: "SIGINT", 3: "SIGTERM"}


def stop_code(signal_name: Optional[str], stop_at_reached: bool) -> int:
    if signal_name is not None:
        return {v: k for k, v in _STOP_CODES.items()}[signal_name]
    return 1 if stop_at_reached else 0


class Consensus:
    """What every rank must agree on after a step, read from the device only where needed.

    Per step, ``add`` folds the step's losses into device tensors (no host read): whether any
    loss was non-finite since the last read, the first such step, the last d / g losses.
    ``read`` (one collective, one device -> host read: ``host_read``) returns (mean d loss, mean
    g loss over ranks, the first step with a non-finite loss on any rank or None, why the run
    stops: None or "SIGTERM" / "SIGINT" / "stop_at" when any rank was asked to). The loop reads
    every ``every`` steps (log.log_every; 100 when logging is off) and at the steps where it must
    decide anyway: before a checkpoint, an evaluation or samples (so a non-finite state is never
    saved), at the last step and at stop_at. All of these are the same steps on every rank, so
    all ranks stop at the same step for the same reason. The delay this buys: a non-finite loss
    is reported up to ``every - 1`` steps after it happened (naming its step), and under DDP a
    signal stops the run at the next read step, up to ``every - 1`` steps later (without DDP, at
    once). The GPU queue is drained there and nowhere else.
    """

    def __init__(self, every: int):
        self.every = every if every > 0 else 100
        self.bad = self.first_bad = self.last = None

    def add(self, step: int, stats: dict) -> None:
        total = sum(v.detach().float() for v in stats.values())
        bad = ~torch.isfinite(total)
        at = torch.where(bad, float(step), float("inf"))
        if self.bad is None:
            self.bad, self.first_bad = bad, at
        else:
            self.first_bad = torch.minimum(self.first_bad, at)
            self.bad = self.bad | bad
        self.last = (stats["d_loss"].detach().float(), stats["g_total"].detach().float())

    def due(self, step: int, forced: bool) -> bool:
        return forced or step % self.every == 0

    def read(self, stop_code: int) -> tuple:
        d, g = self.last
        flags = torch.stack([d.reshape(()), g.reshape(()), -self.first_bad.reshape(()),
                             torch.tensor(float(stop_code), device=d.device)])
        if dist_utils.is_enabled():
            # max of -first = -(earliest step any rank saw a non-finite loss)
            flags = torch.cat([dist_utils.reduce_mean(flags[:2]), dist_utils.reduce_max(flags[2:])])
        d, g, neg_first, stop = host_read(flags)
        self.bad = self.first_bad = None
        first = None if math.isinf(neg_first) else int(-neg_first)
        return d, g, first, _STOP_CODES[int(round(stop))]


def host_read(flags: torch.Tensor) -> list:
    """The training loop's one device -> host read of its step flags (tests count the calls)."""
    return flags.cpu().tolist()
