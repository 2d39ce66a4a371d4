"""Data order of the training loop: a seeded, resumable, rank-split batch sampler.

The global batch of iteration ``i`` is a pure function of ``(seed, i)``: with ``B = batch *
world_size`` images per step and ``N`` images in the dataset, an epoch has ``N // B`` steps (the
remainder is dropped); iteration ``i`` is batch ``i % (N // B)`` of epoch ``i // (N // B)``,
whose order is ``randperm(N)`` drawn from a generator seeded by ``(seed, epoch)``. Rank ``r``
takes the slice ``[r * batch, (r + 1) * batch)`` of that global batch. A run resumed at step
``i`` therefore reads exactly the batches the uninterrupted run would have read, with any
number of DataLoader workers.
"""
from __future__ import annotations

import torch
from torch.utils.data import Sampler

from common import seeding as rng
from common.errors import UserError


class DataError(UserError, ValueError):
    """The training data cannot serve the configured batch."""


class StepBatchSampler(Sampler):
    """Yields this rank's index list for iterations ``start_step, start_step + 1, ... < end_step``."""

    def __init__(self, n_items: int, batch: int, world_size: int, rank: int, seed: int,
                 start_step: int, end_step: int):
        global_batch = batch * world_size
        if n_items < global_batch:
            raise DataError(f"The training set has {n_items} images, fewer than one global batch "
                            f"({batch} per process x {world_size} processes = {global_batch}); "
                            f"lower train.batch or add images.")
        self.n_items, self.batch, self.world_size, self.rank = n_items, batch, world_size, rank
        self.seed, self.start_step, self.end_step = seed, start_step, end_step
        self.batches_per_epoch = n_items // global_batch
        self._perm_epoch, self._perm = None, None

    def position(self, step: int) -> dict:
        """Where iteration `step` reads from (recorded in checkpoints for humans and checks)."""
        return {"epoch": step // self.batches_per_epoch,
                "batch_in_epoch": step % self.batches_per_epoch,
                "batches_per_epoch": self.batches_per_epoch, "seed": self.seed}

    def indices(self, step: int) -> list[int]:
        epoch, j = divmod(step, self.batches_per_epoch)
        if epoch != self._perm_epoch:
            self._perm = torch.randperm(self.n_items, generator=rng.generator(self.seed, epoch, rng.DATA))
            self._perm_epoch = epoch
        start = j * self.batch * self.world_size + self.rank * self.batch
        return self._perm[start:start + self.batch].tolist()

    def __iter__(self):
        for step in range(self.start_step, self.end_step):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)
