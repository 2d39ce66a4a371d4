"""The built-in demo (`make demo`): train a tiny EXE-GAN on the procedural demo faces, then
evaluate it with test.py, and print where everything is.

    python scripts/demo.py [--set KEY=VALUE ...]

Both steps run the real entry points (`train.py --config configs/demo.yaml`, then `test.py` on the
run's `checkpoints/export.pt`) in subprocesses, exactly as a user would type them. The pretrained
networks are random stand-ins (nothing can be downloaded), so the attribute / identity / LPIPS
terms carry no pretrained knowledge; what the demo shows is the whole pipeline and the generator
learning to fill holes (L1 / PSNR in the hole at the first and the last evaluation).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join("configs", "demo.yaml")


def _run(cmd: list[str]) -> None:
    print("\n$ " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc != 0:
        sys.exit(f"demo: `{' '.join(cmd)}` failed with exit status {rc}; see its output above.")


def _newest_run(outdir: str, before: set[str]) -> str:
    """The run directory that train.py just created (the one that was not there before)."""
    new = sorted(d for d in os.listdir(outdir) if d.endswith("-demo") and d not in before)
    if not new:
        sys.exit(f"demo: train.py finished but created no '*-demo' run directory in {outdir}.")
    return os.path.join(outdir, new[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override passed to train.py (repeatable)")
    p.add_argument("--outdir", default="runs", help="parent of the run directories")
    args = p.parse_args(argv)

    outdir = os.path.join(ROOT, args.outdir)
    os.makedirs(outdir, exist_ok=True)
    before = set(os.listdir(outdir))

    train = [sys.executable, "train.py", "--config", CONFIG, "--outdir", args.outdir]
    for o in args.overrides:
        train += ["--set", o]
    _run(train)
    run_dir = _newest_run(outdir, before)
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)

    export = os.path.join(run_dir, "checkpoints", "export.pt")
    results = os.path.join(run_dir, "test")
    _run([sys.executable, "test.py", "--config", CONFIG, "--ckpt", export, "--out", results,
          "--metrics", "lpips", "psnr", "ssim", "l1", "--save-images"])

    first, last = summary.get("first_eval") or {}, summary.get("last_eval") or {}

    def fmt(e: dict, key: str) -> str:
        v = e.get(key)
        return "n/a" if v is None else f"{v:.4f}"

    rel = os.path.relpath
    print("\n=== EXE-GAN demo finished ===")
    print(f"run directory : {rel(run_dir)}")
    print(f"sample grids  : {rel(os.path.join(run_dir, 'samples'))}/ "
          "(columns: input with hole | mask | exemplar | output | ground truth)")
    if summary.get("final_samples"):
        print(f"final grid    : {rel(os.path.join(ROOT, summary['final_samples']))}")
    print(f"test.py       : {rel(os.path.join(results, 'results.json'))}, results.csv, images/")
    print(f"TensorBoard   : {sys.executable} -m tensorboard.main --logdir {rel(run_dir)}")
    print(f"hole L1       : {fmt(first, 'l1_hole')} at the first evaluation -> {fmt(last, 'l1_hole')} at the last")
    print(f"hole PSNR (dB): {fmt(first, 'psnr_hole')} at the first evaluation -> {fmt(last, 'psnr_hole')} at the last")
    return 0


if __name__ == "__main__":
    sys.exit(main())
