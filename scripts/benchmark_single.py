"""Two single measurements quoted in docs/benchmarks.md, next to the loop benchmark:

* D forward + backward at 64 px in float32 vs under CPU bf16 autocast (is ``train.amp=bf16``
  worth it on this CPU?);
* the confidence map M_w of 256x256 masks, separable (two matrix products, the default) vs the
  literal reflect pad + 65x65 convolution.

    python scripts/benchmark_single.py                  # writes runs/bench/single_<device>.json
    python scripts/benchmark_single.py --size 32 --mask-size 64 --repeats 1   # quick

Each figure is the median of ``--repeats`` runs after one warm-up run (bf16 on a CPU without bf16
instructions is slow: ``--bf16-repeats`` defaults to 1).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from common.cli import DefaultsHelpFormatter  # noqa: E402
from losses.weight_maps import ConfidenceMap  # noqa: E402
from models.discriminator import Discriminator  # noqa: E402

from scripts.benchmark_measure import machine_info, measure, write_report  # noqa: E402


def d_step(size: int, batch: int, device: torch.device, bf16: bool, repeats: int) -> dict:
    """D forward + backward (parameter gradients), at channel multiplier 2."""
    torch.manual_seed(0)
    D = Discriminator(size, channel_multiplier=2).to(device)
    x = torch.randn(batch, 3, size, size, device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            y = D(x).float().sum()
        D.zero_grad(set_to_none=True)
        y.backward()

    return measure(step, device, repeats, warmup=1)


def confidence_map(size: int, batch: int, device: torch.device, separable: bool, repeats: int) -> dict:
    m = torch.zeros(batch, 1, size, size, device=device)
    m[:, :, size // 4:3 * size // 4, 3 * size // 16:25 * size // 32] = 1
    cm = ConfidenceMap(separable=separable).to(device)
    with torch.no_grad():
        return measure(lambda: cm(m), device, repeats, warmup=1)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=64, help="D resolution")
    p.add_argument("--mask-size", type=int, default=256, help="confidence-map resolution")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bf16-repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--out", default=None, help="JSON path (default runs/bench/single_<device>.json)")
    opts = p.parse_args(argv)
    device = torch.device(opts.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmark_single: --device cuda was given but no CUDA device is visible.")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    rows = {}
    rows["d_step_fp32"] = d_step(opts.size, opts.batch, device, False, opts.repeats)
    print(f"D fwd+bwd {opts.size}px fp32: {rows['d_step_fp32']['median_s']:.3f} s", flush=True)
    rows["d_step_bf16"] = d_step(opts.size, opts.batch, device, True, opts.bf16_repeats)
    print(f"D fwd+bwd {opts.size}px bf16 autocast: {rows['d_step_bf16']['median_s']:.3f} s "
          f"(speed-up x{rows['d_step_fp32']['median_s'] / rows['d_step_bf16']['median_s']:.2f})", flush=True)
    for sep in (True, False):
        key = f"confidence_map_{'separable' if sep else 'conv2d'}"
        rows[key] = confidence_map(opts.mask_size, opts.batch, device, sep, opts.repeats)
        print(f"confidence map {opts.batch}x{opts.mask_size}^2 {key.split('_')[-1]}: "
              f"{rows[key]['median_s'] * 1000:.1f} ms", flush=True)
    report = {"command": "python scripts/benchmark_single.py " + " ".join(argv or sys.argv[1:]),
              "machine": machine_info(device), "settings": vars(opts),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": rows}
    out = write_report(report, opts.out or os.path.join("runs", "bench", f"single_{device.type}.json"))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
