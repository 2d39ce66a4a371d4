#!/usr/bin/env python
"""CPU inference speed of the ways EXE-GAN can run, side by side in one run (docs/benchmarks.md,
"CPU inference: PyTorch, bf16 and ONNX Runtime"):

* ``eager``          PyTorch eager fp32, the default (reference ops, grouped modulated conv);
* ``eager_batched``  PyTorch eager fp32 with the "batched" modulated conv (the exported form);
* ``onnxruntime``    the graph of scripts/export_onnx.py in onnxruntime (CPU provider), fp32;
* ``bf16``           PyTorch eager under ``torch.autocast('cpu', torch.bfloat16)``.

Every path runs ``exemplar -> pSp codes -> generator -> composite`` on the same inputs (random
faces, a centre-square hole, the same z and noise), at the full-width networks with random weights
(generator at channel multiplier 2, pSp IR-SE50 with 18 heads: the released architectures),
batch 1 and 4. The runs are interleaved (one run of every path and batch size per round) so that the load of a
shared machine spreads over all of them. In the same process it measures the practical peak: a
large fp32 and a bf16 ``torch.matmul`` on the same threads (the fp32 one again in every round: the
peak is the best of them); every path is reported in images/s,
GFLOP/s (the FLOPs of one image counted by ``torch.utils.flop_counter.FlopCounterMode``) and as a
fraction of the fp32 peak. Fidelity: onnxruntime against eager fp32 (max abs before
quantisation, max uint8 difference, known pixels bit-exact), bf16 against fp32 as PSNR on the hole.

A path whose matmul peak is below a quarter of fp32's (bf16 on a CPU without bf16 instructions:
it is emulated, hundreds of times slower) runs once at batch 1 only, for its fidelity and one time.

    python scripts/benchmark_cpu_inference.py                       # 256 px, batch 1 and 4
    python scripts/benchmark_cpu_inference.py --tiny --repeats 1    # 32 px narrow networks (smoke)

The JSON (``--out``, default ``runs/bench/cpu_inference.json``) holds the machine, the settings,
every time and the derived figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from inference import onnx_export as ox  # noqa: E402
from metrics.standins import STANDIN_UNITS, STANDIN_WIDTH  # noqa: E402
from models.exegan import EXEGAN  # noqa: E402
from models.generator import Generator  # noqa: E402
from models.psp import StyleEncoder  # noqa: E402
from models.stylegan2 import set_modconv_impl  # noqa: E402

try:  # the onnxruntime path is skipped without it
    import onnxruntime as ort
except ImportError:
    ort = None

PATHS = ("eager", "eager_batched", "onnxruntime", "bf16")
AUTHORS_IMAGES_PER_S = 0.33  # the authors' code at batch 4, 256 px, 2 threads (docs/benchmarks.md)


def build_model(size: int, tiny: bool, seed: int = 0):
    torch.manual_seed(seed)
    if tiny:
        g = Generator(size, style_dim=64, n_mlp=2, channel_multiplier=0.25, channel_max=64)
        enc = StyleEncoder(start=g.exemplar_start, n=g.n_exemplar, n_styles=max(18, g.n_latent), style_dim=64,
                           width=STANDIN_WIDTH, units=STANDIN_UNITS, input_size=32)
    else:
        g = Generator(size)  # style_dim 512, 8 mapping layers, channel multiplier 2: the released G
        enc = StyleEncoder(start=g.exemplar_start, n=g.n_exemplar, n_styles=max(18, g.n_latent),
                           style_dim=g.style_dim)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.1)  # trained noise strengths are non-zero; fresh ones are 0
        enc.set_latent_avg(torch.randn(enc.n_styles, enc.style_dim) * 0.1)
    return EXEGAN(g.eval(), enc.eval()).eval()


def matmul_peak(dtype: torch.dtype, n: int, repeats: int = 3) -> Dict[str, float]:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - t)
    return {"n": n, "times_s": times, "gflops": 2 * n ** 3 / min(times) / 1e9}


class BF16Emulation(torch.overrides.TorchFunctionMode):
    """bf16 autocast's rounding without its kernels: the inputs, weights and outputs of every
    convolution and matrix product are rounded to bf16 (the products then accumulate in fp32, as
    oneDNN's bf16 kernels do); the other ops stay fp32 (autocast runs some of them in bf16, so this
    is an upper bound on autocast's fidelity). Used where bf16 kernels are emulated and too slow."""

    OPS = {torch.nn.functional.conv2d, torch.nn.functional.conv_transpose2d, torch.nn.functional.linear,
           torch.matmul, torch.mm, torch.bmm, torch.addmm, torch.Tensor.__matmul__}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in self.OPS:
            return func(*args, **kwargs)
        r = lambda t: t.to(torch.bfloat16).float() if torch.is_tensor(t) and t.is_floating_point() else t  # noqa: E731
        return r(func(*[r(a) for a in args], **{k: r(v) for k, v in kwargs.items()}))


def conv_rate(autocast: bool, hw: int = 32) -> float:
    """GFLOP/s of one 3x3 convolution, 256 -> 256 channels (fp32, or under bf16 autocast)."""
    x, w = torch.randn(1, 256, hw, hw), torch.randn(256, 256, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        F.conv2d(x, w, padding=1)
        t = time.perf_counter()
        F.conv2d(x, w, padding=1)
        dt = time.perf_counter() - t
    return 2 * 256 * 256 * 9 * hw * hw / dt / 1e9


def count_flops(model, inp) -> float:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        torch_inpaint(model, inp, 1)
    return float(fc.get_total_flops())


def torch_inputs(inp: Dict[str, torch.Tensor], b: int):
    f = lambda a: a[:b].permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    return f(inp["image"]), (inp["mask"][:b].permute(0, 3, 1, 2) >= 128).float(), f(inp["exemplar"])


def torch_inpaint(model, inp, b: int) -> torch.Tensor:
    x, m, e = torch_inputs(inp, b)
    noise = ox.split_noise(inp["noise"][:b], ox.noise_sizes(model.generator))
    return model.inpaint(x, m, e, z=inp["z"][:b], noise=noise)


def main(argv=None) -> int:
    with torch.no_grad():
        return _main(argv)


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--tiny", action="store_true", help="narrow 32-px networks (a smoke run)")
    p.add_argument("--batches", default="1,4")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    p.add_argument("--paths", default=",".join(PATHS))
    p.add_argument("--matmul-n", type=int, default=4096)
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "bench", "cpu_inference.json"))
    args = p.parse_args(argv)
    size = 32 if args.tiny else args.size
    batches = [int(b) for b in args.batches.split(",")]
    paths = [q for q in args.paths.split(",") if q]
    threads = torch.get_num_threads()
    rec: dict = {"settings": {"size": size, "tiny": args.tiny, "batches": batches, "repeats": args.repeats,
                              "threads": threads, "paths": paths},
                 "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                             "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                             "load_average_start": os.getloadavg()},
                 "command": " ".join([os.path.basename(sys.argv[0])] + list(argv or sys.argv[1:]))}
    if ort is not None:
        rec["machine"]["onnxruntime"] = ort.__version__
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

    def save():
        with open(args.out, "w") as f:
            json.dump(rec, f, indent=1)

    print(f"peak: fp32 and bf16 matmul ({threads} threads)", flush=True)
    rec["peak"] = {"fp32": matmul_peak(torch.float32, args.matmul_n)}
    probe = matmul_peak(torch.bfloat16, 256, 1)["gflops"]
    bf16_n = args.matmul_n if probe > 0.25 * rec["peak"]["fp32"]["gflops"] else min(1024, args.matmul_n)
    rec["peak"]["bf16"] = matmul_peak(torch.bfloat16, bf16_n, 2 if bf16_n < args.matmul_n else 3)
    peak = rec["peak"]["fp32"]["gflops"]
    bf16_slow = rec["peak"]["bf16"]["gflops"] < 0.25 * peak
    rec["peak"]["conv3x3_fp32_gflops"] = conv_rate(False)
    rec["peak"]["conv3x3_bf16_autocast_gflops"] = conv_rate(True)
    print(f"  fp32 {peak:.1f} GFLOP/s, bf16 {rec['peak']['bf16']['gflops']:.2f} GFLOP/s; conv 3x3 fp32 "
          f"{rec['peak']['conv3x3_fp32_gflops']:.1f}, bf16 autocast {rec['peak']['conv3x3_bf16_autocast_gflops']:.2f}",
          flush=True)
    save()

    model = build_model(size, args.tiny)
    graph = ox.InpaintGraph(model)
    inp = ox.example_inputs(graph, batch=max(batches), seed=1)
    flops = count_flops(model, inp)
    rec["flops_per_image"] = flops
    print(f"{flops / 1e12:.3f} TFLOP per image", flush=True)

    runners: Dict[str, Callable[[int], np.ndarray]] = {}

    def eager(b):
        return torch_inpaint(model, inp, b).permute(0, 2, 3, 1).numpy()

    def eager_batched(b):
        set_modconv_impl("batched")
        try:
            return eager(b)
        finally:
            set_modconv_impl("grouped")

    def bf16(b):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return torch_inpaint(model, inp, b).float().permute(0, 2, 3, 1).numpy()

    def bf16_emulated(b):
        with BF16Emulation():
            return eager(b)

    if bf16_slow and "bf16" in paths:  # hundreds of times slower: fidelity from the emulation, time projected
        paths = [q if q != "bf16" else "bf16_emulated" for q in paths]
        rec["bf16_projected_s_per_image"] = flops / (rec["peak"]["conv3x3_bf16_autocast_gflops"] * 1e9)
        print(f"bf16 kernels are emulated on this CPU: projected {rec['bf16_projected_s_per_image']:.0f} s per "
              f"image; its fidelity comes from bf16_emulated (rounding only, fp32 speed)", flush=True)
    for name, fn in (("eager", eager), ("eager_batched", eager_batched), ("bf16", bf16),
                     ("bf16_emulated", bf16_emulated)):
        if name in paths:
            runners[name] = fn
    tmp = tempfile.TemporaryDirectory()
    if "onnxruntime" in paths and ort is not None:
        onnx_path = os.path.join(tmp.name, "exegan.onnx")
        t = time.perf_counter()
        ox.export_graph(model, onnx_path)
        rec["export_s"] = time.perf_counter() - t
        rec["onnx_mib"] = os.path.getsize(onnx_path) / 2 ** 20
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        t = time.perf_counter()
        sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        rec["ort_session_s"] = time.perf_counter() - t
        print(f"exported in {rec['export_s']:.0f} s ({rec['onnx_mib']:.0f} MiB); session {rec['ort_session_s']:.1f} s",
              flush=True)

        def onnxruntime(b):
            feed = {k: v[:b].numpy() if k != "truncation" else v.numpy() for k, v in inp.items()}
            return sess.run(["completed"], feed)[0]
        runners["onnxruntime"] = onnxruntime
    save()

    times: Dict[str, Dict[int, List[float]]] = {n: {b: [] for b in batches} for n in runners}
    outputs: Dict[str, Dict[int, np.ndarray]] = {n: {} for n in runners}
    once = {"bf16", "bf16_emulated"} if bf16_slow else set()
    # Round 0 warms every (path, batch) up (its time is kept apart); each later round runs every batch
    # size of every path once, and one fp32 matmul: the peak is the best of all of them, so a load
    # spike during the first measurement does not lower it.
    a_mm, b_mm = torch.randn(args.matmul_n, args.matmul_n), torch.randn(args.matmul_n, args.matmul_n)
    for r in range(args.repeats + 1):
        for b in batches:
            for name, fn in runners.items():
                if name in once and (b != min(batches) or r > 0):
                    continue
                t = time.perf_counter()
                out = fn(b)
                dt = time.perf_counter() - t
                if r == 0:
                    outputs[name][b] = out
                    rec.setdefault("warmup_s", {}).setdefault(name, {})[b] = dt
                if r > 0 or name in once:
                    times[name][b].append(dt)
                print(f"  round {r} batch {b} {name}: {dt:.2f} s", flush=True)
        if r > 0:
            t = time.perf_counter()
            torch.matmul(a_mm, b_mm)
            rec["peak"]["fp32"]["times_s"].append(time.perf_counter() - t)
            rec["peak"]["fp32"]["gflops"] = 2 * args.matmul_n ** 3 / min(rec["peak"]["fp32"]["times_s"]) / 1e9
        rec["times_s"] = times
        save()
    peak = rec["peak"]["fp32"]["gflops"]

    # Fidelity against eager fp32.
    known = inp["mask"].numpy()[..., 0] < 128
    fid: dict = {}
    for name in runners:
        if name == "eager":
            continue
        b = max(bb for bb in outputs[name])
        a, ref = outputs[name][b], outputs["eager"][b]
        kn = known[:b]
        q = lambda v: np.round((np.clip(v, -1, 1) + 1) * 127.5).astype(np.int16)  # noqa: E731
        mse = float(np.mean((a[~kn] - ref[~kn]) ** 2))
        fid[name] = {"batch": b, "max_abs_float": float(np.abs(a - ref).max()),
                     "max_uint8": int(np.abs(q(a) - q(ref)).max()),
                     "known_bit_exact": bool(np.array_equal(a[kn], ref[kn])),
                     "psnr_hole_db": float("inf") if mse == 0 else float(10 * np.log10(4.0 / mse))}
    rec["fidelity_vs_eager_fp32"] = fid

    summary = {}
    for name in runners:
        summary[name] = {}
        for b in batches:
            ts = times[name][b]
            if not ts:
                continue
            med = statistics.median(ts)
            ips = b / med
            summary[name][b] = {"median_s": med, "images_per_s": ips, "gflops": ips * flops / 1e9,
                                "fraction_of_fp32_peak": ips * flops / 1e9 / peak,
                                "x_authors_batch4": ips / AUTHORS_IMAGES_PER_S if b == 4 else None}
    rec["summary"] = summary
    rec["machine"]["load_average_end"] = os.getloadavg()
    save()
    print(f"\n| path | batch | median s | images/s | GFLOP/s | of fp32 peak ({peak:.0f} GFLOP/s) |")
    print("|---|---|---|---|---|---|")
    for name, per in summary.items():
        for b, s in per.items():
            print(f"| {name} | {b} | {s['median_s']:.2f} | {s['images_per_s']:.3f} | {s['gflops']:.1f} | "
                  f"{100 * s['fraction_of_fp32_peak']:.0f} % |")
    print(json.dumps(fid, indent=1))
    print(f"JSON: {args.out}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
