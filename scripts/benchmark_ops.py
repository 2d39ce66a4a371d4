"""Benchmark the custom ops: reference (depthwise conv) upfirdn2d vs the naive formulation on CPU,
fused_bias_act, and the CUDA kernels vs the reference when a GPU is present.

The shapes are the ones EXE-GAN's StyleGAN2 networks use (docs/models.md) at batch 4: the
[1,3,3,1] 4x4 blur (pad (2, 1)) and the blur-then-subsample (down 2, pad (1, 1)) on feature
maps of 64..512 channels, and the ToRGB skip upsampler (kernel x4, up 2, pad (2, 1)) on 3-channel
images reaching 64/128/256 px. Each entry is timed forward only and forward + backward (the
gradient of a random projection of the output with respect to the input).

    python scripts/benchmark_ops.py                       # writes runs/bench/ops_cpu.json
    python scripts/benchmark_ops.py --quick --out /tmp/b.json

Timings are medians over --repeats runs after one warm-up run.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import op  # noqa: E402
from op.fused_act import fused_bias_act_ref  # noqa: E402
from op.upfirdn2d import upfirdn2d_naive, upfirdn2d_ref  # noqa: E402

BATCH = 4
FEATURE_SHAPES = [(512, 32), (512, 64), (256, 128), (128, 256), (64, 256)]  # (C, H = W)
TORGB_SIZES = [64, 128, 256]  # output size of the ToRGB skip upsampler
QUICK_FEATURE_SHAPES = [(512, 32), (128, 64)]
QUICK_TORGB_SIZES = [64]


def blur_kernel():
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = k[:, None] * k[None, :]
    return k / k.sum()


def upfirdn_cases(quick):
    k = blur_kernel()
    shapes = QUICK_FEATURE_SHAPES if quick else FEATURE_SHAPES
    sizes = QUICK_TORGB_SIZES if quick else TORGB_SIZES
    cases = []
    for c, s in shapes:
        cases.append(('blur', (BATCH, c, s, s), k, dict(pad=(2, 1))))
    for c, s in shapes:
        cases.append(('down2', (BATCH, c, s, s), k, dict(down=2, pad=(1, 1))))
    for s in sizes:
        cases.append(('up2_torgb', (BATCH, 3, s // 2, s // 2), k * 4, dict(up=2, pad=(2, 1))))
    return cases


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timeit(fn, device, repeats):
    """Median and min wall time in ms over `repeats` runs after one warm-up run."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def forward_fn(impl_fn, x, *args, **kwargs):
    def run():
        with torch.no_grad():
            impl_fn(x, *args, **kwargs)
    return run


def fwd_bwd_fn(impl_fn, x, *args, **kwargs):
    x = x.detach().requires_grad_()
    with torch.no_grad():
        gy = torch.randn_like(impl_fn(x, *args, **kwargs))

    def run():
        y = impl_fn(x, *args, **kwargs)
        torch.autograd.grad(y, x, gy)
    return run


def bench_upfirdn_cpu(quick, repeats):
    rows = []
    device = torch.device('cpu')
    for name, shape, k, kwargs in upfirdn_cases(quick):
        x = torch.randn(shape)
        max_diff = (upfirdn2d_ref(x, k, **kwargs) - upfirdn2d_naive(x, k, **kwargs)).abs().max()
        for mode, make in (('fwd', forward_fn), ('fwd+bwd', fwd_bwd_fn)):
            row = dict(op='upfirdn2d', case=name, shape=list(shape), kwargs=_jsonable(kwargs),
                       mode=mode, device='cpu', max_abs_diff=float(max_diff))
            for impl, fn in (('naive', upfirdn2d_naive), ('ref', upfirdn2d_ref)):
                med, best = timeit(make(fn, x, k, **kwargs), device, repeats)
                row[f'{impl}_ms'], row[f'{impl}_min_ms'] = round(med, 3), round(best, 3)
            row['speedup'] = round(row['naive_ms'] / row['ref_ms'], 2)
            rows.append(row)
            print(_fmt(row, 'naive', 'ref'), flush=True)
    return rows


def fused_cases(quick):
    shapes = [(BATCH, 512, 32, 32), (BATCH, 256, 128, 128), (BATCH, 512)]
    return shapes[:1] + shapes[2:] if quick else shapes


def bench_fused_cpu(quick, repeats):
    """The reference is the only CPU implementation; 'unfused' is the textbook three-op
    sequence it must not be slower than."""
    rows = []
    device = torch.device('cpu')

    def unfused(x, b):
        return torch.nn.functional.leaky_relu(x + b.view(1, -1, *([1] * (x.ndim - 2))), 0.2) \
            * (2 ** 0.5)

    for shape in fused_cases(quick):
        x, b = torch.randn(shape), torch.randn(shape[1])
        for mode, make in (('fwd', forward_fn), ('fwd+bwd', fwd_bwd_fn)):
            row = dict(op='fused_bias_act', case='lrelu', shape=list(shape), mode=mode,
                       device='cpu')
            for impl, fn in (('unfused', unfused), ('ref', fused_bias_act_ref)):
                med, best = timeit(make(fn, x, b), device, repeats)
                row[f'{impl}_ms'], row[f'{impl}_min_ms'] = round(med, 3), round(best, 3)
            row['speedup'] = round(row['unfused_ms'] / row['ref_ms'], 2)
            rows.append(row)
            print(_fmt(row, 'unfused', 'ref'), flush=True)
    return rows


def bench_cuda(quick, repeats):
    """CUDA kernels (impl='cuda') vs the reference on the same GPU (impl='ref')."""
    rows = []
    device = torch.device('cuda')

    def with_impl(impl, fn):
        def run(*args, **kwargs):
            op.set_impl(impl)
            try:
                return fn(*args, **kwargs)
            finally:
                op.set_impl(None)
        return run

    cases = [(n, s, k.to(device), kw) for n, s, k, kw in upfirdn_cases(quick)]
    for name, shape, k, kwargs in cases:
        x = torch.randn(shape, device=device)
        for mode, make in (('fwd', forward_fn), ('fwd+bwd', fwd_bwd_fn)):
            row = dict(op='upfirdn2d', case=name, shape=list(shape), kwargs=_jsonable(kwargs),
                       mode=mode, device=torch.cuda.get_device_name())
            for impl in ('ref', 'cuda'):
                med, best = timeit(make(with_impl(impl, op.upfirdn2d), x, k, **kwargs), device,
                                   repeats)
                row[f'{impl}_ms'], row[f'{impl}_min_ms'] = round(med, 3), round(best, 3)
            row['speedup'] = round(row['ref_ms'] / row['cuda_ms'], 2)
            rows.append(row)
            print(_fmt(row, 'ref', 'cuda'), flush=True)
    for shape in fused_cases(quick):
        x, b = torch.randn(shape, device=device), torch.randn(shape[1], device=device)
        for mode, make in (('fwd', forward_fn), ('fwd+bwd', fwd_bwd_fn)):
            row = dict(op='fused_bias_act', case='lrelu', shape=list(shape), mode=mode,
                       device=torch.cuda.get_device_name())
            for impl in ('ref', 'cuda'):
                med, best = timeit(make(with_impl(impl, op.fused_leaky_relu), x, b), device,
                                   repeats)
                row[f'{impl}_ms'], row[f'{impl}_min_ms'] = round(med, 3), round(best, 3)
            row['speedup'] = round(row['ref_ms'] / row['cuda_ms'], 2)
            rows.append(row)
            print(_fmt(row, 'ref', 'cuda'), flush=True)
    return rows


def _jsonable(kwargs):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


def _fmt(row, base, new):
    shape = 'x'.join(str(s) for s in row['shape'])
    return (f"{row['op']:<15} {row['case']:<10} {shape:<16} {row['mode']:<8} "
            f"{base} {row[f'{base}_ms']:>10.2f} ms   {new} {row[f'{new}_ms']:>9.2f} ms   "
            f"x{row['speedup']:.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='runs/bench/ops_cpu.json', help='JSON file to write')
    parser.add_argument('--repeats', type=int, default=3, help='timed runs per entry')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch default)')
    parser.add_argument('--quick', action='store_true', help='a few small shapes only')
    parser.add_argument('--no-cuda', action='store_true', help='skip the GPU part')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    meta = dict(date=datetime.datetime.now().isoformat(timespec='seconds'),
                torch=torch.__version__, cuda=torch.version.cuda, python=platform.python_version(),
                cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                threads=torch.get_num_threads(), repeats=args.repeats, quick=args.quick,
                batch=BATCH, gpu=torch.cuda.get_device_name() if torch.cuda.is_available()
                else None)
    print(f"torch {meta['torch']}, {meta['threads']} CPU threads, {args.repeats} repeats "
          f"(median ms)")
    results = bench_upfirdn_cpu(args.quick, args.repeats)
    results += bench_fused_cpu(args.quick, args.repeats)
    if torch.cuda.is_available() and not args.no_cuda:
        results += bench_cuda(args.quick, args.repeats)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(dict(meta=meta, results=results), f, indent=1)
    print(f"wrote {args.out}")


if __name__ == '__main__':
    main()
