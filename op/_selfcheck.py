"""The tiled upfirdn2d kernel checks itself on the device before it serves a case.

The tiled kernel (``op/csrc/upfirdn2d_tiled.h``) is specialised for three cases: 0 = blur (4x4
kernel), 1 = up 2, 2 = down 2. The first time a process needs a case on a device, in a dtype,
:func:`tile_for` runs that case's tiled kernel against the reference on small seeded inputs on
that device (:func:`check_case`), in float32 and in the dtype in use, and so for the case that
computes its gradient too (blur -> blur, up 2 -> down 2, down 2 -> up 2): a forward that passes
also has a checked backward. Pass: the tiled kernel serves that case for the rest of the
process. Fail (wrong values, or an error): the general kernel serves it, with one warning that
names the case, the error and the device. Verdicts are cached per (device name, case, dtype,
torch version, CUDA version) and logged once (logger ``exegan.train.ops``: the run's log).

Determinism across DDP ranks: every rank reaches its verdict from the same inputs, drawn from a
CPU generator seeded by the case alone (:func:`_inputs`), and the kernels are deterministic (no
atomics), so ranks on the same GPU model reach the same verdict without a collective (a
collective here could deadlock: rank 0 alone runs the evaluation, which may meet a case the
other ranks never do). tests/op/test_selfcheck.py checks this with gloo processes.
"""
import argparse
import json
import logging
import time
import warnings

import torch

from . import _impl

CASE_NAMES = {0: 'blur (4x4 kernel)', 1: 'up 2 (4x4 kernel)', 2: 'down 2 (4x4 kernel)'}
# Parameters (kh, kw, ux, uy, dx, dy) the check runs each case with (the extension's
# upfirdn2d_tiled_plan says which case parameters are; the gradient of a call swaps up and down).
CASE_PARAMS = {0: (4, 4, 1, 1, 1, 1), 1: (4, 4, 2, 2, 1, 1), 2: (4, 4, 1, 1, 2, 2)}
# Input sizes (odd, several 32 x 32 output tiles with partial edge tiles) and pads per case: the
# networks' pads, those the case gets as the gradient of another case, and ones that crop or
# pad past the kernel.
SHAPES = {0: [(37, 45), (7, 5)], 1: [(19, 21), (4, 3)], 2: [(75, 69), (9, 11)]}
PADS = {0: [(2, 1, 2, 1), (1, 2, 1, 2), (-1, 3, 2, -2)],
        1: [(2, 1, 2, 1), (1, 2, 1, 2), (3, 0, -1, 4)],
        2: [(1, 1, 1, 1), (2, 2, 2, 2), (-2, 1, 0, 3)]}
PLANES = 3

log = logging.getLogger('exegan.train.ops')

_choice = {}    # (ext key, device, dtype, kh, kw, ux, uy, dx, dy, mode) -> tile case or -1
_verdicts = {}  # verdict_key(...) -> {device, case, name, dtype, passed, error, seconds}
_warned = set()


def device_name(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return device.type


def verdict_key(device, case, dtype):
    return (device_name(device), case, str(dtype), torch.__version__, torch.version.cuda)


def verdicts():
    """Every verdict reached in this process (for scripts/gpu_check.py), oldest first."""
    return [dict(v) for v in _verdicts.values()]


def reset():
    """Forget every choice and verdict (tests)."""
    _choice.clear()
    _verdicts.clear()
    _warned.clear()


@torch.compiler.assume_constant_result
def tile_for(ext, device, dtype, kh, kw, ux, uy, dx, dy):
    """The tiled case to run for these parameters, or -1 for the general kernel.

    Called on every compiled upfirdn2d call (one dict lookup after the first); runs for real
    also while torch.compile traces, so a check never becomes part of a graph.
    """
    mode = _impl.get_upfirdn2d_kernel()
    key = (id(ext), device, dtype, kh, kw, ux, uy, dx, dy, mode)
    tile = _choice.get(key)
    if tile is None:
        tile = _choice[key] = _decide(ext, device, dtype, (kh, kw, ux, uy, dx, dy), mode)
    return tile


def _case_of(ext, kh, kw, ux, uy, dx, dy):
    """The extension's own classification (upfirdn2d_tiled_case in C++); -1 if it has none."""
    plan = getattr(ext, 'upfirdn2d_tiled_plan', None)
    if plan is None:
        return -1
    return int(plan(1, 8, 8, kh, kw, ux, uy, dx, dy, kw, kw, kh, kh)[0])


def _decide(ext, device, dtype, params, mode):
    if mode == 'general':
        return -1
    case = _case_of(ext, *params)
    if case < 0 or mode == 'tiled':
        return case
    kh, kw, ux, uy, dx, dy = params
    needed = sorted({case, _case_of(ext, kh, kw, dx, dy, ux, uy)})  # and its gradient's case
    if min(needed) < 0 or any(c not in CASE_PARAMS for c in needed):
        return -1  # a case this check has no inputs for: never run it unchecked
    dtypes = [torch.float32] if dtype == torch.float32 else [torch.float32, dtype]
    ok = True  # every check runs (no short cut), so each verdict is reached and logged
    for c in needed:
        for dt in dtypes:
            ok &= _verdict(ext, device, c, dt)['passed']
    return case if ok else -1


def _verdict(ext, device, case, dtype):
    key = verdict_key(device, case, dtype)
    v = _verdicts.get(key)
    if v is None:
        t0 = time.perf_counter()
        try:
            # Called from inside forwards and backwards (maybe under autocast): none of that here.
            with torch.no_grad(), torch.autocast(device.type, enabled=False):
                error = check_case(ext, device, case, dtype)
        except Exception as exc:  # a launch failure, a kernel that refuses: the general one
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        v = _verdicts[key] = dict(device=key[0], case=case, name=CASE_NAMES[case],
                                     dtype=str(dtype).replace('torch.', ''),
                                     passed=error is None, error=error,
                                     seconds=time.perf_counter() - t0)
        _report(v)
    return v


def _report(v):
    if v['passed']:
        log.info("upfirdn2d self-check: tiled kernel, case %s, %s on %s: passed (%.3f s)",
                 v['name'], v['dtype'], v['device'], v['seconds'])
        return
    message = (f"upfirdn2d: the tiled kernel failed its self-check for case {v['name']}, "
               f"{v['dtype']}, on {v['device']} ({v['error']}); the general kernel serves "
               f"that case in this process.")
    log.warning("%s", message)
    wkey = (v['device'], v['case'], v['dtype'])
    if wkey not in _warned:
        _warned.add(wkey)
        warnings.warn(message, RuntimeWarning, stacklevel=2)


def _inputs(case, shape, dtype):
    """Seeded by the case and shape only: the same values on every rank and every run."""
    g = torch.Generator().manual_seed(1000 * case + 10 * shape[0] + shape[1])
    x = torch.randn(PLANES, *shape, generator=g, dtype=torch.float64)
    k = torch.randn(4, 4, generator=g, dtype=torch.float64)
    # Round to the dtype in use first, so that the float64 reference sees the same values.
    return x.to(dtype), k.to(dtype)


def tolerance(dtype, taps, scale):
    """The float32 rule of tests/op/test_cuda_vs_ref.py: a sum of ``taps`` products carries a
    rounding error of up to about taps * eps * max|value| (twice that, for slack), plus the
    rounding of the output to ``dtype``. A wrong tap is off by the size of a whole term."""
    eps32 = torch.finfo(torch.float32).eps
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else eps32
    if dtype == torch.float64:
        eps32 = eps
    return (2 * taps * eps32 + 2 * eps) * max(scale, 1.0)


def check_case(ext, device, case, dtype):
    """Run tiled case ``case`` against the float64 reference on ``device``; None if it passes,
    else a one-line description of the first error."""
    # cycle: op/upfirdn2d.py imports this module at its top (choose() asks tile_for), so the
    # reference is looked up when a case is checked, after both modules exist.
    from .upfirdn2d import upfirdn2d_ref
    kh, kw, ux, uy, dx, dy = CASE_PARAMS[case]
    taps = -(-kh // uy) * -(-kw // ux)
    for shape in SHAPES[case]:
        x, k = _inputs(case, shape, dtype)
        for pad in PADS[case]:
            params = (ux, uy, dx, dy, *pad)
            got = ext.upfirdn2d(x.to(device), k.to(device), *params, case)
            want = upfirdn2d_ref(x.double()[:, None], k.double(), (ux, uy), (dx, dy), pad)[:, 0]
            got = got.detach().to('cpu', torch.float64)
            if got.shape != want.shape:
                return f"shape {tuple(got.shape)} instead of {tuple(want.shape)}"
            err = (got - want).abs().max().item() if got.numel() else 0.0
            tol = tolerance(dtype, taps, want.abs().max().item())
            if not err <= tol:  # also NaN
                return (f"max error {err:.3g} > tolerance {tol:.3g} on a {PLANES}x{shape[0]}x"
                        f"{shape[1]} input with pads {pad}")
    return None


def run_all(device, dtypes=(torch.float32, torch.bfloat16, torch.float16)):
    """Check every case in every dtype on ``device`` with the compiled extension (building it if
    needed); returns the verdicts. For scripts/gpu_check.py; a CPU device checks the emulation."""
    from . import _loader  # lazy, as in _impl.cuda_extension: `import op` never loads the builder
    ext = _loader.load_extension()
    device = torch.device(device)
    if device.type == 'cpu':  # the host emulation runs float and double only
        dtypes = [d for d in dtypes if d in (torch.float32, torch.float64)]
    for case in CASE_PARAMS:
        for dtype in dtypes:
            _verdict(ext, device, case, dtype)
    return verdicts()


def main(argv=None):
    p = argparse.ArgumentParser(description="Run the tiled upfirdn2d kernel's self-check for "
                                            "every case and dtype; print (or write) the verdicts.")
    p.add_argument('--device', default='cuda')
    p.add_argument('--out', help='JSON file for the verdicts')
    opts = p.parse_args(argv)
    result = run_all(opts.device)
    text = json.dumps(result, indent=1)
    if opts.out:
        with open(opts.out, 'w', encoding='utf-8') as f:
            f.write(text)
    print(text)
    return result


if __name__ == '__main__':
    main()
