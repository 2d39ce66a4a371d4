"""The benchmarks' measuring tools: the machine's description, the process's memory (peak RSS
from ``/proc/self/status``, reset through ``/proc/self/clear_refs``; CUDA max allocated), timing a
callable with the training loop's phase timer, and the atomic JSON writer. ``scripts/benchmark.py``,
``scripts/benchmark_single.py``, ``scripts/benchmark_photo.py`` and ``scripts/gpu_check.py`` share
them.
"""
from __future__ import annotations

import json
import os
import platform
import re
import statistics
import sys
from typing import Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from training.timing import PhaseTimer  # noqa: E402


def _status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_mib(field: str = "VmRSS") -> Optional[float]:
    kib = _status_kib(field)
    return None if kib is None else round(kib / 1024.0, 1)


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(), "mkldnn": torch.backends.mkldnn.is_available()}
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def write_report(report: dict, out: str) -> str:
    """Write the JSON report atomically (temp file, then rename); returns ``out``."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, out)
    return out


def reset_memory_peaks(device: torch.device) -> tuple:
    """Reset the peak counters; returns (peak-RSS reset worked, RSS now in MiB)."""
    ok = reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return ok, rss_mib()


def memory_peaks(device: torch.device, rss_reset: bool, rss_start) -> dict:
    out = {"peak_rss_mib": rss_mib("VmHWM") if rss_reset else None, "rss_start_mib": rss_start}
    if device.type == "cuda":
        out["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)
    return out


def time_summary(times: list) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def measure(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> dict:
    """Median / min time of ``fn`` over ``repeats`` runs after ``warmup`` runs, timed by the
    training loop's phase timer (CUDA events / perf_counter), with the peak memory of the timed
    runs (the process's peak RSS; CUDA max allocated)."""
    timer = PhaseTimer(device, enabled=True)
    first, times = None, []
    for i in range(warmup + repeats):
        if i == warmup:
            rss_reset, rss_start = reset_memory_peaks(device)
        with timer.phase("run"):
            fn()
        t = timer.read()["run"][0]
        if i == 0 and warmup:
            first = t
        if i >= warmup:
            times.append(t)
    return {**time_summary(times), "first_warmup_s": first, **memory_peaks(device, rss_reset, rss_start)}
