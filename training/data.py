"""Data of the training loop: the train / test sets (``build_datasets``) and their order, a
seeded, resumable, rank-split batch sampler.

The global batch of iteration ``i`` is a pure function of ``(seed, i)``: with ``B = batch *
world_size`` images per step and ``N`` images in the dataset, an epoch has ``N // B`` steps (the
remainder is dropped); iteration ``i`` is batch ``i % (N // B)`` of epoch ``i // (N // B)``,
whose order is ``randperm(N)`` drawn from a generator seeded by ``(seed, epoch)``. Rank ``r``
takes the slice ``[r * batch, (r + 1) * batch)`` of that global batch. A run resumed at step
``i`` therefore reads exactly the batches the uninterrupted run would have read, with any
number of DataLoader workers.
"""
from __future__ import annotations

import os

import torch
from torch.utils.data import Sampler

from common import seeding as rng
from common.errors import UserError
from datasets.demo import make_demo_faces
from datasets.lmdb_dataset import open_dataset

from . import distributed as dist_utils


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


def build_datasets(cfg, is_main: bool, log):
    """(train set, test set): image folders or LMDB packs, opened by ``datasets.open_dataset`` as
    test.py opens ``--data``; the demo faces are generated on first use."""
    d = cfg.data
    if d.kind == "demo":
        root = d.demo_root
        if is_main:  # generated on first use, reused after (regenerated if the parameters change)
            log.info("demo faces: %s", root)
            make_demo_faces(root, d.demo_train, cfg.model.size, d.demo_seed, n_test=d.demo_test)
        dist_utils.barrier()
        train_root, test_root = os.path.join(root, "train"), os.path.join(root, "test")
    else:
        train_root, test_root = d.train, d.test
    # Flips are drawn by the loop from its per-step stream (resumable), not by the dataset.
    train = open_dataset(train_root, cfg.model.size, hflip=False)
    test = open_dataset(test_root, cfg.model.size, hflip=False) if test_root else None
    return train, test


def dataset_location(ds) -> str:
    """The folder or LMDB pack a dataset reads (ImageFolderDataset.root, LMDBDataset.path)."""
    return getattr(ds, "root", None) or getattr(ds, "path")
