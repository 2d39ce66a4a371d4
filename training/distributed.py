"""torch.distributed helpers for multi-GPU / multi-node training (launched by torchrun).

The world comes from the environment variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT). Without them the process runs alone (rank 0 of 1) and nothing here
touches torch.distributed.

Batch semantics: ``train.batch`` is the per-process (per-GPU) batch; the global batch of one
optimizer step is ``train.batch * world_size``. Data, masks and noise are split by rank.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .errors import ConfigError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False     # init() created the process group (shutdown() destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(kind: str, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda:<local_rank> when CUDA is available, else cpu."""
    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is visible; use train.device=cpu.")
    return torch.device("cuda", local_rank)


def init(device_kind: str = "auto", backend: str = "auto", timeout_min: int = 30) -> DistInfo:
    """Join the process group described by torchrun's environment (or run alone)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_kind, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        owns = True
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = dict(backend=backend, timeout=datetime.timedelta(minutes=timeout_min))
        if backend == "nccl":
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device, owns_group=owns)


def shutdown(info: DistInfo) -> None:
    """Destroy the process group if `init` created it (a caller's own group is left alone)."""
    if info.owns_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_enabled() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if is_enabled():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from `src` to every rank (e.g. the run directory)."""
    if not is_enabled():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of a tensor (a copy; logging and consensus flags)."""
    values = values.detach().clone()
    if is_enabled():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
    return values


def reduce_max(values: torch.Tensor) -> torch.Tensor:
    values = values.detach().clone()
    if is_enabled():
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


def reduce_dict(stats: dict[str, torch.Tensor], device: torch.device) -> dict[str, float]:
    """Average scalar stats over ranks in one collective; returns python floats."""
    if not stats:
        return {}
    keys = sorted(stats)
    vec = torch.stack([torch.as_tensor(stats[k], dtype=torch.float32, device=device).detach().reshape(())
                       for k in keys])
    vec = reduce_mean(vec).cpu().tolist()
    return dict(zip(keys, vec))


def wrap_ddp(module: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DDP-wrap a trained network (G or D); identity in a single process.

    broadcast_buffers=False: G's buffers are fixed noise maps and blur kernels, D's only blur
    kernels; none change during training, and broadcasting them every forward would only cost.
    """
    if not info.enabled:
        return module
    kwargs = dict(broadcast_buffers=False)
    if info.device.type == "cuda":
        kwargs.update(device_ids=[info.device.index], output_device=info.device.index)
    return torch.nn.parallel.DistributedDataParallel(module, **kwargs)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module
