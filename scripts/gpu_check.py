"""One command for a CUDA machine: build the ops, run every CUDA test, benchmark both upfirdn2d
kernels, write one JSON and one markdown table under ``runs/gpu_check/``.

Run it as ``scripts/gpu_check.sh`` (or ``make gpu-check``) on a machine with a CUDA GPU, the
repository and a Python with PyTorch; nothing else needs preparing. Steps, each with its own time
budget inside a total of ``--budget`` seconds (default 300, sized for one H100 / H200):

1. ``env``      — Python, torch, CUDA, GPU, nvcc; which optional packages are missing (lpips,
                  lmdb, pytorch-fid). Wheels in ``.whl/`` are installed first with
                  ``pip install --no-index`` (README, "GPU check").
2. ``build``    — the CUDA ops through ``op._loader`` (the cache key includes the GPU).
2b. ``selfcheck`` — the tiled upfirdn2d kernel's self-check (``op/_selfcheck.py``, what every
                  process runs at a case's first use) for each case in float32, bfloat16 and
                  float16: the verdict per case, with its error and its time.
3. ``tests``    — every test that runs only on CUDA (``CUDA_TESTS``), both upfirdn2d kernels.
4. ``bench_b4`` / ``bench_b16`` — ``scripts/benchmark.py --device cuda --preset paper``: the
                  training phases at batch 4 and 16, fp32 and bf16, and inference
                  (``EXEGAN.inpaint``) at batch 64 and 16, each with the general upfirdn2d
                  kernel and the default (the tiled kernel where its self-check passed),
                  interleaved on one trainer per batch size (paired figures).
5. ``compiled_b16`` / ``compiled_b64`` — inference with ``EXEGAN.compile()``, general kernel,
                  then the default while the budget lasts (each first call compiles).

A step that would not fit in what is left of the budget is skipped and says so. ``--dry-run``
runs the same plan on the CPU with the tiny benchmark settings (what tests/scripts/
test_gpu_check.py checks); ``--skip`` leaves steps out.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from scripts.benchmark_measure import write_report  # noqa: E402  (atomic JSON writer)

# Every test that needs a CUDA GPU (each skips itself without one). The compile test builds
# the extension through the same cache as the build step, so it does not compile again.
CUDA_TESTS = (
    "tests/op/test_cuda_vs_ref.py",
    "tests/op/test_cuda_compile.py",
    "tests/losses/test_losses_cuda.py",
    "tests/training/test_speed_options.py",
    "tests/scripts/test_inpaint_cli.py::test_cuda_device_matches_cpu",
    "tests/training/test_host_reads.py::test_consensus_add_does_not_synchronise_on_cuda",
)
OPTIONAL_PACKAGES = {"lpips": "lpips==0.1.4", "lmdb": "lmdb", "pytorch_fid": "pytorch-fid"}
WHEEL_DIR = ".whl"
# Seconds each step may take at most (the total budget caps them too), and the least a step
# needs to be worth starting.
STEP_BUDGET = {"env": 20, "build": 150, "selfcheck": 30, "tests": 100, "bench_b4": 60, "bench_b16": 70,
               "compiled_b16": 90, "compiled_b64": 90}
STEP_MIN = {"bench_b4": 30, "bench_b16": 40, "compiled_b16": 60, "compiled_b64": 60}
# The general upfirdn2d kernel (the default before the tiled one) against the default: the tiled
# kernel for every case that passed its self-check ('base' runs op's default choice).
KERNEL_VARIANTS = ("general", "base", "bf16+general", "bf16")
PAIRS = (("fp32", ("general", "base")), ("bf16", ("bf16+general", "bf16")))
COMPILED_VARIANTS = ("compile+general", "compile")


def _run(cmd, timeout, env=None, log_path=None):
    """Run ``cmd``; returns (returncode or 'timeout', seconds, output tail)."""
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=max(1, int(timeout)))
        rc, out = res.returncode, res.stdout + res.stderr
    except subprocess.TimeoutExpired as exc:
        rc = "timeout"
        out = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                      for x in (exc.stdout, exc.stderr))
    if log_path:
        with open(log_path, "w", encoding="utf-8") as f:
            f.write(out)
    return rc, time.perf_counter() - t0, out[-3000:]


def missing_packages() -> list:
    return [name for name in OPTIONAL_PACKAGES if importlib.util.find_spec(name) is None]


def install_wheels(site_dir: str) -> str:
    """Install the wheels in .whl/ (if any) into ``site_dir`` without network access."""
    wheels = sorted(glob.glob(os.path.join(ROOT, WHEEL_DIR, "*.whl")))
    if not wheels:
        return "no .whl/ folder: nothing installed"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--no-cache-dir", "--upgrade", "--target", site_dir] + wheels
    rc, _, out = _run(cmd, 120)
    if rc != 0:
        return f"pip install of {len(wheels)} wheels failed: {out.strip()[-500:]}"
    sys.path.insert(0, site_dir)
    importlib.invalidate_caches()
    return f"installed {len(wheels)} wheels from {WHEEL_DIR}/ into {site_dir}"


def env_info(device: str) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "nvcc": shutil.which("nvcc"),
            "cuda_available": torch.cuda.is_available(), "device": device}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["capability"] = "sm_%d%d" % torch.cuda.get_device_capability()
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1)
    return info


def parse_junit(path: str) -> dict:
    """Counts and failing test ids of a pytest --junitxml file."""
    out = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": [], "tiled_run": 0,
           "tiled_failed": 0}
    if not os.path.isfile(path):
        return out
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag for child in case}
        tiled = "tiled" in name
        if "failure" in kinds or "error" in kinds:
            out["failed" if "failure" in kinds else "errors"] += 1
            out["failures"].append(name)
            out["tiled_failed"] += tiled
            out["tiled_run"] += tiled
        elif "skipped" in kinds:
            out["skipped"] += 1
        else:
            out["passed"] += 1
            out["tiled_run"] += tiled
    return out


def plan(opts) -> list:
    """[(step name, command or None, budget)] of the benchmark steps for this run."""
    py = [sys.executable, os.path.join("scripts", "benchmark.py")]
    if opts.dry_run:
        # The cheapest phases: a CPU check of the plumbing, not of speed.
        common = ["--device", "cpu", "--tiny", "--repeats", "1", "--warmup", "0", "--interleave",
                  "--phases", "ema,inference_g"]
        sizes = (("bench_b4", 2, 2), ("bench_b16", 2, 4))
    else:
        common = ["--device", "cuda", "--preset", "paper", "--repeats", "3", "--warmup", "1",
                  "--interleave"]
        sizes = (("bench_b4", 4, 64), ("bench_b16", 16, 16))
    steps = []
    for name, batch, infer in sizes:
        cmd = py + common + ["--batch", str(batch), "--infer-batch", str(infer),
                             "--variants", ",".join(KERNEL_VARIANTS),
                             "--out", os.path.join(opts.out, f"{name}.json")]
        # The dry run checks plumbing on a CPU, where a shared 2-core machine can take 2-3x a
        # quiet run's time: its benchmark steps get three times the GPU budget.
        steps.append((name, cmd, STEP_BUDGET[name] * (3 if opts.dry_run else 1)))
    for name, infer in (("compiled_b16", 16), ("compiled_b64", 64)):
        for variant in COMPILED_VARIANTS:
            cmd = py + ["--device", "cuda", "--preset", "paper", "--repeats", "3", "--warmup", "1",
                        "--batch", "4", "--infer-batch", str(infer), "--phases", "inference",
                        "--variants", variant, "--in-process",
                        "--out", os.path.join(opts.out, f"{name}_{variant.replace('+', '_')}.json")]
            steps.append((f"{name}:{variant}", None if opts.dry_run else cmd, STEP_BUDGET[name]))
    return steps


def _ms(v):
    return "–" if v is None else f"{v * 1000:.0f} ms"


def _ratio(a, b):
    return "–" if a is None or b is None or b == 0 else f"x{a / b:.2f}"


def summarize(report: dict) -> list:
    """Rows (what, general kernel, default kernel, default / general) from the benchmark JSONs."""
    rows = []
    for step in ("bench_b4", "bench_b16"):
        bench = report["benchmarks"].get(step)
        if not bench:
            continue
        v = bench["variants"]
        batch_label = f"batch {bench['settings']['batch']}"

        def ph(name, phase, key="median_s"):
            return v.get(name, {}).get("phases", {}).get(phase, {}).get(key)

        def dv(name, key):
            return v.get(name, {}).get("derived", {}).get(key)

        for amp, (a, b) in PAIRS:
            it_a, it_b = ph(a, "iteration"), ph(b, "iteration")
            rows.append((f"training iteration with R1 + path length, {batch_label}, {amp}",
                         _ms(it_a), _ms(it_b), _ratio(it_b, it_a)))
            am_a, am_b = dv(a, "amortised_iteration_s"), dv(b, "amortised_iteration_s")
            rows.append((f"training iteration amortised (R1 1/16, path length 1/4), {batch_label}, {amp}",
                         _ms(am_a), _ms(am_b), _ratio(am_b, am_a)))
            mem_a, mem_b = dv(a, "cuda_max_allocated_mib"), dv(b, "cuda_max_allocated_mib")
            if mem_a or mem_b:
                rows.append((f"peak CUDA memory, {batch_label}, {amp}",
                             "–" if mem_a is None else f"{mem_a / 1024:.1f} GiB",
                             "–" if mem_b is None else f"{mem_b / 1024:.1f} GiB", _ratio(mem_b, mem_a)))
        nb = v.get("base", {}).get("infer_batch")
        inf_a, inf_b = dv("general", "inference_images_per_s"), dv("base", "inference_images_per_s")
        rows.append((f"inference (EXEGAN.inpaint), batch {nb}, eager, fp32, img/s",
                     "–" if inf_a is None else f"{inf_a:.0f}", "–" if inf_b is None else f"{inf_b:.0f}",
                     _ratio(inf_b, inf_a)))
        g_a, g_b = dv("general", "inference_g_images_per_s"), dv("base", "inference_g_images_per_s")
        rows.append((f"inference, G_ema + composite only (EXEGAN.complete), batch {nb}, img/s",
                     "–" if g_a is None else f"{g_a:.1f}", "–" if g_b is None else f"{g_b:.1f}",
                     _ratio(g_b, g_a)))
    for infer in (16, 64):
        got = {}
        for variant in COMPILED_VARIANTS:
            bench = report["benchmarks"].get(f"compiled_b{infer}:{variant}")
            var = (bench or {}).get("variants", {}).get(variant, {})
            got[variant] = (var.get("derived", {}).get("inference_images_per_s"),
                            var.get("phases", {}).get("inference", {}).get("first_warmup_s"))
        if any(x is not None for pair in got.values() for x in pair):
            (a, fa), (b, fb) = (got[v] for v in COMPILED_VARIANTS)
            rows.append((f"inference (EXEGAN.inpaint), batch {infer}, EXEGAN.compile(), img/s "
                         f"(first call incl. compiling)",
                         "–" if a is None else f"{a:.0f} ({fa or 0:.0f} s)",
                         "–" if b is None else f"{b:.0f} ({fb or 0:.0f} s)", _ratio(b, a)))
    return rows


def verdict(report: dict) -> str:
    t = report["steps"].get("tests", {})
    res = t.get("result")
    if not res:
        return "not decided: the CUDA tests did not run"
    if res["failed"] or res["errors"]:
        bad = "; ".join(res["failures"][:5])
        return (f"no: {res['failed'] + res['errors']} CUDA test(s) failed ({res['tiled_failed']} of "
                f"them with the tiled kernel): {bad}")
    if not res["tiled_run"]:
        return "not decided: no test of the tiled kernel ran"
    return (f"yes: every CUDA test passed ({res['passed']}, {res['tiled_run']} of them on the "
            f"tiled kernel)")


def markdown(report: dict) -> str:
    env = report["env"]
    lines = [f"# GPU check, {report['started']}", "",
             f"{env.get('gpu', 'no GPU')} ({env.get('capability', '-')}), torch {env['torch']}, "
             f"CUDA {env['cuda']}, Python {env['python']}; {report['wall_s']:.0f} s of a "
             f"{report['budget_s']} s budget.", ""]
    if report["missing_packages"]:
        lines += [f"Missing packages: {', '.join(report['missing_packages'])} (README, \"GPU check\", "
                  f"says how to bring them as wheels).", ""]
    lines += ["| step | status | seconds | note |", "|---|---|---|---|"]
    for name, st in report["steps"].items():
        lines.append(f"| {name} | {st['status']} | {st.get('seconds', 0):.0f} | {st.get('note', '')} |")
    lines += ["", f"Tiled upfirdn2d kernel, CUDA tests: {report['verdict']}", ""]
    lines += selfcheck_lines(report.get("selfcheck"))
    rows = report["table"]
    if rows:
        lines += ["| measurement | general kernel | default (self-checked tiled) | default / general |",
                  "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n"


def selfcheck_lines(verdicts) -> list:
    """The self-check's verdict per case and dtype as a markdown table (what the default kernel
    choice, 'auto', does on this GPU)."""
    if not verdicts:
        return ["Self-check of the tiled kernel: not run.", ""]
    lines = ["Self-check of the tiled kernel (op/_selfcheck.py; 'auto', the default, runs the "
             "tiled kernel for a case only where it passed):", "",
             "| case | dtype | device | verdict | seconds | error |", "|---|---|---|---|---|---|"]
    for v in verdicts:
        lines.append(f"| {v['name']} | {v['dtype']} | {v['device']} | "
                     f"{'passed' if v['passed'] else 'FAILED: general kernel'} | "
                     f"{v['seconds']:.3f} | {v['error'] or ''} |")
    return lines + [""]


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join("runs", "gpu_check"), help="output folder")
    p.add_argument("--budget", type=float, default=300, help="total seconds (default 300)")
    p.add_argument("--dry-run", action="store_true",
                   help="the same plan on the CPU with the tiny benchmark settings")
    p.add_argument("--skip", default="", help="comma-separated steps to leave out "
                   "(env is always run): build, selfcheck, tests, bench_b4, bench_b16, compiled_b16, "
                   "compiled_b64")
    return p


def main(argv=None) -> dict:
    opts = build_parser().parse_args(argv)
    t_start = time.perf_counter()
    deadline = t_start + opts.budget
    skip = {s.strip() for s in opts.skip.split(",") if s.strip()}
    os.makedirs(opts.out, exist_ok=True)
    device = "cpu" if opts.dry_run else "cuda"
    report = {"schema": 1, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "dry_run": opts.dry_run,
              "budget_s": opts.budget, "steps": {}, "benchmarks": {}}

    def say(msg):
        print(f"[gpu_check {time.perf_counter() - t_start:5.0f} s] {msg}", flush=True)

    # 1. environment
    missing = missing_packages()
    wheel_note = ""
    if missing:
        site_dir = os.path.join(ROOT, ".gpu_check_site")
        wheel_note = install_wheels(site_dir)
        if site_dir in sys.path:
            os.environ["PYTHONPATH"] = os.pathsep.join(
                [site_dir] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
        missing = missing_packages()
    report["env"] = env_info(device)
    report["missing_packages"] = missing
    note = wheel_note
    if missing:
        wants = " ".join(OPTIONAL_PACKAGES[m] for m in missing)
        note = (f"{wheel_note}; MISSING: {', '.join(missing)}: the training benchmarks and the "
                f"tests that build the training loop need lpips; bring them as wheels ({wants}) "
                f"in {WHEEL_DIR}/, see README 'GPU check'")
        say(note)
    report["steps"]["env"] = {"status": "ok", "seconds": time.perf_counter() - t_start, "note": note}
    if not opts.dry_run and not report["env"]["cuda_available"]:
        report["steps"]["env"]["status"] = "failed"
        report["steps"]["env"]["note"] = "no CUDA GPU visible; use --dry-run on a CPU machine"
        say(report["steps"]["env"]["note"])

    # Benchmarks with the compiled ops or not at all: under 'auto' a failed build would fall back
    # to the reference ops and compare them with themselves.
    bench_env = dict(os.environ, **({} if opts.dry_run else {"EXEGAN_OPS": "cuda"}))

    def step(name, cmd, budget, min_needed=0, log=None, env=None):
        left = deadline - time.perf_counter()
        if name.split(":")[0] in skip:
            report["steps"][name] = {"status": "skipped", "note": "--skip"}
            return None
        if cmd is None:
            report["steps"][name] = {"status": "skipped",
                                     "note": "dry run: compiling on the CPU would take minutes"}
            return None
        if left < max(min_needed, 5):
            report["steps"][name] = {"status": "skipped",
                                     "note": f"budget: {left:.0f} s left, needs about {min_needed} s"}
            say(f"{name}: skipped, {left:.0f} s left")
            return None
        say(f"{name} ...")
        rc, secs, tail = _run(cmd, min(budget, left), env=env, log_path=log)
        status = "ok" if rc == 0 else ("timeout" if rc == "timeout" else f"failed (exit {rc})")
        last = tail.strip().splitlines()
        report["steps"][name] = {"status": status, "seconds": secs,
                                 "note": last[-1][:300] if rc != 0 and last else ""}
        say(f"{name}: {status} in {secs:.0f} s")
        return rc

    gpu_ok = opts.dry_run or report["env"]["cuda_available"]
    # 2. build
    if gpu_ok:
        step("build", [sys.executable, "-c",
                       "from op import _loader; m, d, built = _loader.build(); "
                       "print('built' if built else 'cached', d)"],
             STEP_BUDGET["build"], log=os.path.join(opts.out, "build.log"))
    # 2b. the tiled kernel's self-check, per case and dtype
    if gpu_ok:
        sc_json = os.path.join(opts.out, "selfcheck.json")
        if os.path.exists(sc_json):
            os.remove(sc_json)
        step("selfcheck", [sys.executable, "-m", "op._selfcheck", "--device", device,
                           "--out", sc_json],
             STEP_BUDGET["selfcheck"], log=os.path.join(opts.out, "selfcheck.log"))
        if os.path.isfile(sc_json):
            with open(sc_json, encoding="utf-8") as f:
                report["selfcheck"] = json.load(f)
            failed = [f"{v['name']} {v['dtype']}" for v in report["selfcheck"] if not v["passed"]]
            report["steps"]["selfcheck"]["note"] = (
                f"FAILED (general kernel): {', '.join(failed)}" if failed else
                f"{len(report['selfcheck'])} case/dtype checks passed")
    # 3. CUDA tests
    if gpu_ok:
        junit = os.path.join(opts.out, "tests.xml")
        if os.path.exists(junit):
            os.remove(junit)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
               *CUDA_TESTS]
        if importlib.util.find_spec("xdist") is not None and not opts.dry_run:
            cmd[4:4] = ["-n", "4"]
        step("tests", cmd, STEP_BUDGET["tests"], log=os.path.join(opts.out, "tests.log"))
        if "tests" in report["steps"] and report["steps"]["tests"]["status"] != "skipped":
            report["steps"]["tests"]["result"] = parse_junit(junit)
    # 4./5. benchmarks
    for name, cmd, budget in plan(opts):
        if not gpu_ok:
            report["steps"][name] = {"status": "skipped", "note": "no CUDA GPU"}
            continue
        if "lpips" in missing and cmd is not None:
            report["steps"][name] = {"status": "skipped",
                                     "note": "needs lpips (the training loop's LPIPS loss)"}
            continue
        base = name.split(":")[0]
        rc = step(name, cmd, budget, STEP_MIN.get(base, 0), env=bench_env,
                  log=os.path.join(opts.out, name.replace(":", "_").replace("+", "_") + ".log"))
        out = cmd[cmd.index("--out") + 1] if cmd else None
        if rc == 0 and out and os.path.isfile(out):
            with open(out, encoding="utf-8") as f:
                report["benchmarks"][name] = json.load(f)

    report["wall_s"] = time.perf_counter() - t_start
    report["verdict"] = verdict(report)
    report["table"] = summarize(report)
    path = write_report(report, os.path.join(opts.out, "gpu_check.json"))
    md = markdown(report)
    with open(os.path.join(opts.out, "gpu_check.md"), "w", encoding="utf-8") as f:
        f.write(md)
    print(md)
    say(f"wrote {path} and {os.path.join(opts.out, 'gpu_check.md')}")
    return report


if __name__ == "__main__":
    main()
