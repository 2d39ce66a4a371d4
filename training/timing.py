"""Opt-in timing of the training step's phases (``train.time_phases``), as the StyleGAN3 loop
times its phases: the figures go to stats.jsonl and TensorBoard (``time_<phase>_ms``) and
scripts/benchmark.py reads the same timer.

On CUDA each phase records a pair of CUDA events on the current stream: no synchronisation is
added to the step; the elapsed times are read where the loop reads the device anyway (``collect``
at its consensus reads, at least every 100 steps), so what is held in between stays bounded.
On the CPU each phase is timed with ``time.perf_counter``. Off (the default), ``phase`` returns
one shared no-op context manager: nothing is recorded and nothing is allocated.
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import torch

_OFF = contextlib.nullcontext()


class _CpuPhase:
    __slots__ = ("timer", "name", "t0")

    def __init__(self, timer: "PhaseTimer", name: str):
        self.timer, self.name = timer, name

    def __enter__(self):
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        self.timer.pending.append((self.name, time.perf_counter() - self.t0))
        return False


class _CudaPhase:
    __slots__ = ("timer", "name", "start")

    def __init__(self, timer: "PhaseTimer", name: str):
        self.timer, self.name = timer, name

    def __enter__(self):
        self.start = torch.cuda.Event(enable_timing=True)
        self.start.record()

    def __exit__(self, *exc):
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        self.timer.pending.append((self.name, (self.start, end)))
        return False


class PhaseTimer:
    """``with timer.phase("d_main"): ...`` around each phase; ``read()`` returns the seconds
    of every phase recorded since the last read, ``{phase: [s, ...]}``, in recording order."""

    def __init__(self, device: torch.device, enabled: bool):
        self.enabled = bool(enabled)
        self.cuda = device.type == "cuda"
        self.pending: list = []
        self._sums: dict = {}     # phase -> [total seconds, count] since the last means_ms

    def phase(self, name: str):
        if not self.enabled:
            return _OFF
        return _CudaPhase(self, name) if self.cuda else _CpuPhase(self, name)

    def read(self) -> dict:
        """Seconds per phase since the last read (on CUDA this waits for the last recorded
        event: call it where the loop reads the device anyway)."""
        out: dict = defaultdict(list)
        pending, self.pending = self.pending, []
        for name, t in pending:
            if isinstance(t, tuple):
                start, end = t
                end.synchronize()
                t = start.elapsed_time(end) / 1000.0
            out[name].append(t)
        return dict(out)

    def collect(self) -> None:
        """Fold the phases recorded since the last read into the running means (the training
        loop calls it where it reads the device anyway)."""
        for k, v in self.read().items():
            total = self._sums.setdefault(k, [0.0, 0])
            total[0] += sum(v)
            total[1] += len(v)

    def means_ms(self) -> dict:
        """``{"time_<phase>_ms": mean milliseconds}`` of the phases since the last call (the
        rows of stats.jsonl); empty when off."""
        if not self.enabled:
            return {}
        self.collect()
        sums, self._sums = self._sums, {}
        return {f"time_{k}_ms": 1000.0 * s / n for k, (s, n) in sums.items()}
