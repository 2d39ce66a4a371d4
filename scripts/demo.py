"""The built-in demo (`make demo`): train a tiny EXE-GAN on the procedural demo faces, then
evaluate it with test.py, and print where everything is.

    python scripts/demo.py [--set KEY=VALUE ...]

Both steps run the real entry points (`train.py --config configs/demo.yaml`, then `test.py` on the
run's `checkpoints/export.pt`) in subprocesses, exactly as a user would type them. Nothing is
downloaded: the identity network and the LPIPS trunk are random stand-ins (their terms carry no
pretrained knowledge), and the style encoder is a tiny stand-in trained for a few seconds to
recognise the demo faces' recorded attributes (``pretrained.standin_encoder_steps``,
training/demo_encoder.py), so that the exemplar codes describe hair colour, eye colour, glasses.

Then the demo measures the exemplar effect of the trained model (metrics/exemplar_effect.py): how
much the hole changes when the exemplar is swapped, and how often the filled hole shows the
exemplar's hair colour / eye colour / glasses rather than the original face's. It writes
``<run>/exemplar_grid.png`` (each row one test face completed with the exemplars of the top row)
and prints the figures next to the PSNR ones, and the exact scripts/inpaint.py and
scripts/style_mix.py commands that run the demo model on a demo face.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import torch
import yaml
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join("configs", "demo.yaml")
sys.path.insert(0, ROOT)  # run as `python scripts/demo.py`: the repository's packages

from metrics.exemplar_effect import attribute_hole, measure  # noqa: E402
from models.exegan import EXEGAN  # noqa: E402
from training.demo_encoder import load_labelled_faces  # noqa: E402


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


def _to_pil(t):
    """[3, H, W] in [-1, 1] -> Pillow image."""
    a = ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(a))


def example_inputs(run_dir: str, demo_root: str, size: int) -> dict:
    """Files for the printed inpaint.py / style_mix.py commands: a test face, two other test faces
    as exemplars, and the attribute hole (white = hole) as ``<run>/demo_inputs/hole.png``."""
    test = os.path.join(demo_root, "test")
    names = sorted(f for f in os.listdir(test) if f.endswith(".png"))
    if len(names) < 3:
        sys.exit(f"demo: {test} holds {len(names)} test faces; the demo needs at least 3.")
    inputs = os.path.join(run_dir, "demo_inputs")
    os.makedirs(inputs, exist_ok=True)
    hole = os.path.join(inputs, "hole.png")
    _to_pil(attribute_hole(size).expand(3, -1, -1) * 2 - 1).convert("L").save(hole)
    # With the default demo faces (seed 0): a grey-haired face with glasses, a red-haired exemplar and
    # a platinum-haired exemplar B (columns 2 and 3 of the exemplar grid).
    return {"image": os.path.join(test, names[0]), "exemplar": os.path.join(test, names[-2]),
            "exemplar_b": os.path.join(test, names[-3]), "mask": hole}


def usage_commands(export: str, psp: str, inputs: dict, run_dir: str) -> list:
    """[(what, argv)] of the inpaint.py and style_mix.py commands for the demo model, with paths
    relative to the repository root (where the commands are run)."""
    rel = lambda p: os.path.relpath(p, ROOT)  # noqa: E731
    # The interpreter make demo used (.venv/bin/python), or plain "python" outside the repository.
    py = rel(sys.executable) if os.path.abspath(sys.executable).startswith(ROOT + os.sep) else "python"
    model = ["--ckpt", rel(export), "--psp", rel(psp)]
    inpaint = [py, "scripts/inpaint.py", *model, "--image", rel(inputs["image"]),
               "--mask", rel(inputs["mask"]), "--exemplar", rel(inputs["exemplar"]),
               "--samples", "4", "--out", rel(os.path.join(run_dir, "inpaint"))]
    mix = [py, "scripts/style_mix.py", *model, "--image", rel(inputs["image"]),
           "--mask", rel(inputs["mask"]), "--exemplar-a", rel(inputs["exemplar"]),
           "--exemplar-b", rel(inputs["exemplar_b"]), "--out", rel(os.path.join(run_dir, "style_mix"))]
    return [("inpaint one face with an exemplar, 4 samples", inpaint),
            ("exemplar style mixing (slots i..j from exemplar B)", mix)]


def exemplar_effect(export: str, psp: str, demo_root: str, out_dir: str, *, n_grid: int = 6,
                    n_exemplars: int = 5):
    """Measure the exemplar effect of the demo model on the demo test faces and write
    ``exemplar_effect.json`` and ``exemplar_grid.png`` into ``out_dir``. Returns
    (ExemplarEffect, grid path)."""
    model = EXEGAN.from_checkpoints(export, psp)
    with open(os.path.join(demo_root, "demo_faces.json"), encoding="utf-8") as f:
        records = [e for e in json.load(f)["files"] if e.get("split") == "test"]
    images, _ = load_labelled_faces(demo_root, "test", model.size)

    def complete(x, m, e, seed):
        return model.inpaint(x, m, e, seed=seed)

    effect = measure(complete, records, images, model.size)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "exemplar_effect.json"), "w", encoding="utf-8") as f:
        json.dump(effect.to_dict(), f, indent=2)

    # Grid: top row the exemplars, then per test face: input with the hole | its completions.
    n_grid = min(n_grid, images.shape[0] // 2)
    faces = images[:n_grid]
    exemplars = images[images.shape[0] - n_exemplars:].flip(0)
    hole = attribute_hole(model.size).expand(n_grid, 1, -1, -1)
    rows = [[torch.ones(3, model.size, model.size)] + list(exemplars)]
    for k in range(n_grid):
        x = faces[k:k + 1].expand(n_exemplars, -1, -1, -1)
        out = complete(x, hole[:1].expand(n_exemplars, -1, -1, -1), exemplars, 0)
        shown = torch.where(hole[k].bool(), torch.ones_like(faces[k]), faces[k])
        rows.append([shown] + list(out))
    grid = torch.cat([torch.cat(r, dim=2) for r in rows], dim=1)
    zoom = max(1, 128 // model.size)
    img = _to_pil(grid)
    img = img.resize((img.width * zoom, img.height * zoom), resample=0)
    path = os.path.join(out_dir, "exemplar_grid.png")
    img.save(path)
    return effect, path


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
    test = [sys.executable, "test.py", "--config", CONFIG, "--ckpt", export, "--out", results,
            "--metrics", "lpips", "psnr", "ssim", "l1", "--save-images"]
    if summary.get("standin_psp"):  # the style encoder this run was trained with
        test += ["--psp", summary["standin_psp"]]
    _run(test)

    first, last = summary.get("first_eval") or {}, summary.get("last_eval") or {}
    psp = summary.get("standin_psp")
    with open(os.path.join(run_dir, "config.yaml"), encoding="utf-8") as f:
        run_cfg = yaml.safe_load(f)
    demo_root = os.path.join(ROOT, run_cfg["data"]["demo_root"])
    size = int(run_cfg["model"]["size"])
    print("\n$ measuring the exemplar effect on the demo test faces", flush=True)
    effect, grid = exemplar_effect(export, psp, demo_root, results)
    inputs = example_inputs(run_dir, demo_root, size)

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
    print(f"exemplar grid : {rel(grid)} (top row: exemplars; each row: a test face with the "
          "hole in white | its completion with each exemplar)")
    print(f"exemplar effect ({rel(os.path.join(results, 'exemplar_effect.json'))}, "
          "hole over hair, brows and eyes):")
    for line in effect.lines():
        print("  " + line)
    print("  (stand-ins, nothing downloaded: the style encoder was trained for seconds on the demo "
          "faces' recorded attributes, the LPIPS term is a pixel L1, identity is off; the holes "
          "fill with soft blobs that take the exemplar's colours - see docs/training.md, The demo)")
    print("Try the demo model yourself (from the repository root):")
    for what, cmd in usage_commands(export, psp, inputs, run_dir):
        print(f"  # {what}\n  {' '.join(cmd)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
