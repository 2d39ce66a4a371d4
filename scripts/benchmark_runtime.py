#!/usr/bin/env python
"""What the CPU runtimes (inference/runtime.py) cost a user end to end: ``scripts/inpaint.py`` on
the full-size 256-px networks (random weights written in the released files' formats), timed as
whole processes, as a user would run them:

* ``torch``   ``--runtime torch``: eager PyTorch;
* ``first``   ``--runtime onnx`` with an empty cache: loads the checkpoint, exports both graphs, runs;
* ``cached``  ``--runtime onnx`` again: loads the cached graphs (no checkpoint load), runs.

    python scripts/benchmark_runtime.py --samples 4 --repeats 2 --out docs/bench/cpu256_runtime.json

Also records the export's own seconds (from its progress line), the cache's size on disk, the
machine's load average before each run, and the largest difference between the torch and the
default results (8-bit levels; known pixels must be equal) and each process's peak memory (its own
maximum resident set, from wait4). Takes about 4 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from models import Discriminator, make_checkpoint, save_checkpoint  # noqa: E402
from scripts.benchmark_cpu_inference import build_model  # noqa: E402


def write_files(root: str) -> tuple:
    """The full-size model as ``exe.pt`` (our checkpoint format) and ``psp.pt`` (the pSp dict)."""
    model = build_model(256, tiny=False)
    exe, psp = os.path.join(root, "exe.pt"), os.path.join(root, "psp.pt")
    g = model.generator
    save_checkpoint(make_checkpoint(g=g, d=Discriminator(256), g_ema=g, step=1), exe)
    enc = model.style_encoder
    torch.save({"opts": {"encoder_type": "GradualStyleEncoder"},
                "state_dict": {f"encoder.{k}": v for k, v in enc.state_dict().items()},
                "latent_avg": enc.latent_avg.clone()}, psp)
    return exe, psp


def write_inputs(root: str) -> dict:
    rng = np.random.default_rng(0)
    paths = {}
    for name, hw in (("image", (512, 512)), ("exemplar", (300, 300))):
        paths[name] = os.path.join(root, f"{name}.png")
        Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(paths[name])
    hole = np.zeros((512, 512), np.uint8)
    hole[128:384, 160:352] = 255
    paths["mask"] = os.path.join(root, "mask.png")
    Image.fromarray(hole).save(paths["mask"])
    return paths


def run(argv: list, env: dict) -> tuple:
    """(wall s, load average before, export s or None, peak RSS MiB) of one inpaint.py process."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "inpaint.py"), *argv], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        wall = time.perf_counter() - start
        err.seek(0)
        text = err.read()
    if proc.returncode != 0:
        sys.exit(f"inpaint.py failed ({proc.returncode}):\n{text[-2000:]}")
    m = re.search(r"exported in (\d+) s", text)
    return wall, load, (int(m.group(1)) if m else None), usage.ru_maxrss / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2, help="runs of torch and cached each (default 2)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "bench", "cpu256_runtime.json"))
    args = p.parse_args()
    root = tempfile.mkdtemp(prefix="exegan_runtime_")
    try:
        exe, psp = write_files(root)
        inputs = write_inputs(root)
        cache = os.path.join(root, "cache")
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        env.pop("EXEGAN_RUNTIME", None)
        base = ["--ckpt", exe, "--psp", psp, "--image", inputs["image"], "--mask", inputs["mask"],
                "--exemplar", inputs["exemplar"], "--samples", str(args.samples), "--no-sheet",
                "--onnx-cache", cache]
        rows = {"torch": [], "first": [], "cached": []}
        outs = {}
        for name in ["torch", "first", "cached"] + ["torch", "cached"] * (args.repeats - 1):
            out = os.path.join(root, f"out_{name}_{len(rows[name])}")
            flag = ["--runtime", "torch" if name == "torch" else "onnx"]
            wall, load, export_s, peak = run([*base, *flag, "--out", out], env)
            rows[name].append({"wall_s": round(wall, 2), "load_before": round(load, 2), "export_s": export_s,
                               "peak_rss_mib": round(peak)})
            outs.setdefault(name, out)
            print(f"{name}: {wall:.1f} s (load {load:.2f}), peak {peak:.0f} MiB"
                  + (f", export {export_s} s" if export_s else ""),
                  flush=True)
        cache_mib = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(cache) for f in fs) / 2 ** 20
        hole = np.asarray(Image.open(inputs["mask"])) > 127
        image = np.asarray(Image.open(inputs["image"]).convert("RGB"))
        worst, known_equal = 0, True
        for k in range(args.samples):
            a, b = (np.asarray(Image.open(os.path.join(outs[n], f"image_sample{k}.png")).convert("RGB")).astype(int)
                    for n in ("torch", "cached"))
            worst = max(worst, int(np.abs(a - b).max()))
            known_equal &= bool(np.array_equal(b[~hole], image[~hole]))
        best = {n: min(r["wall_s"] for r in rs) for n, rs in rows.items() if rs}
        record = {"what": "scripts/inpaint.py end to end, 512x512 photo, 256-px full-size networks",
                  "samples": args.samples, "threads": args.threads, "torch": torch.__version__,
                  "cpu": platform.processor() or platform.machine(), "runs": rows, "best_wall_s": best,
                  "cached_speedup_over_torch": round(best["torch"] / best["cached"], 2),
                  "cache_mib": round(cache_mib, 1), "max_level_difference": worst,
                  "known_pixels_equal": known_equal}
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(record, f, indent=2)
        print(json.dumps({k: record[k] for k in ("best_wall_s", "cached_speedup_over_torch", "cache_mib",
                                                 "max_level_difference", "known_pixels_equal")}))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
