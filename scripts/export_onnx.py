#!/usr/bin/env python
"""Export a trained EXE-GAN (generator + pSp style encoder) as ONE ONNX graph that inpaints:

    python scripts/export_onnx.py --ckpt EXE_GAN_model_256.pt --psp psp_ffhq_encode.pt --out exegan_256.onnx

The graph runs exemplar -> pSp codes -> generator -> composite, the pre- and post-processing and
the mask polarity included, so a runtime needs nothing but the file (scripts/inpaint_onnx.py runs
it with numpy, Pillow and onnxruntime only). Layout: NHWC, 8-bit RGB, batch dimension dynamic.

inputs
  image      uint8 [B, S, S, 3]   RGB at the model size S
  mask       uint8 [B, S, S, 1]   255 = hole, 0 = known (a pixel >= 128 is a hole)
  exemplar   uint8 [B, S, S, 3]   RGB face at the model size (one per image: repeat it for a batch)
  z          float32 [B, D]       the random style (D = style_dim, 512 for the released model)
  noise      float32 [B, N]       the generator's noise maps, flattened and concatenated in layer
                                  order: layer i is a 2^r x 2^r map, r = (i + 5) // 2 (metadata
                                  ``exegan.noise_sizes``; N = sum of their squares)
  truncation float32 [1]          psi; 1 = no truncation (< 1 pulls w towards the average w)
  sketch     uint8 [B, S, S, 1]   (sketch fine-tuned generators only) 255 = stroke
outputs
  output     uint8 [B, S, S, 3]   the completed image; every known pixel (mask < 128) is the
                                  input's, bit for bit
  completed  float32 [B, S, S, 3] the same before quantisation, in [-1, 1]

``output = round((completed + 1) * 127.5)`` on hole pixels (round half to even), as
``inference.io.to_uint8``. ``--style-mix`` also writes ``<out stem>_style_mix.onnx``: the same
graph with a second exemplar ``exemplar_b`` and ``mix`` uint8 [n_exemplar] (mix[k] = 1: w slot
exemplar_start + k takes exemplar_b's code, as ``EXEGAN.style_mix``).

The graph holds only standard ONNX operators: the export runs the pure-PyTorch reference ops on
the CPU (the compiled CUDA ops cannot go into a graph; ``--ops cuda`` is refused) and checks both
the traced program and the written graph for any custom operator. The modulated convolutions are
exported in their "batched" form (one shared weight: a batch-size independent graph), equal to the
default grouped form up to float rounding. Metadata (``onnx.load(path).metadata_props``): opset,
model size, style_dim, exemplar slots, noise sizes, mask polarity, layout, the sha256 of both
input files. docs/applications.md ("Deployment (ONNX)") has the commands and an onnxruntime example.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from inference.onnx_export import DEFAULT_OPSET, ExportError, export_graph  # noqa: E402
from models.checkpoint import safe_load  # noqa: E402
from models.exegan import EXEGAN  # noqa: E402
from models.sketch import SketchEXEGAN  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--ckpt", required=True, help="EXE-GAN checkpoint (ours: ckpt-*.pt / export.pt, the "
                                                 "released EXE_GAN_model_256.pt, or a sketch fine-tune)")
    p.add_argument("--psp", required=True, help="pSp style encoder file (psp_ffhq_encode.pt)")
    p.add_argument("--which", default="g_ema", metavar="ENTRY",
                   help="generator entry of --ckpt: g_ema (default) or g")
    p.add_argument("--out", required=True, help="the .onnx file to write (refused if it exists)")
    p.add_argument("--style-mix", action="store_true",
                   help="also write <out stem>_style_mix.onnx (two exemplars and a per-slot mix input)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--ops", choices=("ref", "cuda"), default="ref",
                   help="op implementation: ref (default; the only one an ONNX graph can hold)")
    return p


def _is_sketch_checkpoint(path: str, which: str) -> bool:
    ckpt = safe_load(path)
    sd = ckpt.get(which) if isinstance(ckpt, dict) and isinstance(ckpt.get(which), dict) else ckpt
    w = sd.get("down_from_big.0.weight") if isinstance(sd, dict) else None
    return torch.is_tensor(w) and w.ndim == 4 and w.shape[1] > 4


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.ops == "cuda":
        raise ExportError("--ops cuda cannot be exported: the compiled CUDA ops are not ONNX operators, so the "
                          "graph is always built from the pure-PyTorch reference ops; drop --ops cuda.")
    if not 14 <= args.opset <= 23:
        raise ExportError(f"--opset {args.opset} is outside the supported range 14..23; use {DEFAULT_OPSET}.")
    outs = [args.out]
    if args.style_mix:
        stem, ext = os.path.splitext(args.out)
        outs.append(f"{stem}_style_mix{ext or '.onnx'}")
    for path in outs:
        if os.path.exists(path):
            raise ExportError(f"--out {path} exists; remove it or choose another name (files are never overwritten).")
    for option, path in (("--ckpt", args.ckpt), ("--psp", args.psp)):
        if not os.path.isfile(path):
            raise ExportError(f"{option} {path} does not exist; give the path of the "
                              f"{'EXE-GAN checkpoint' if option == '--ckpt' else 'pSp encoder file'}.")
    if os.environ.get("EXEGAN_OPS", "").strip().lower() == "cuda":
        print("note: EXEGAN_OPS=cuda is ignored: the export always traces the reference ops", file=sys.stderr)
    cls = SketchEXEGAN if _is_sketch_checkpoint(args.ckpt, args.which) else EXEGAN
    with torch.no_grad():
        model = cls.from_checkpoints(args.ckpt, args.psp, "cpu", which=args.which)
    for k, path in enumerate(outs):
        meta = export_graph(model, path, style_mix=k == 1, opset=args.opset, ckpt=args.ckpt, psp=args.psp)
        mb = os.path.getsize(path) / 2 ** 20
        print(f"{path}: {meta['exegan.graph']} graph, {meta['exegan.size']}x{meta['exegan.size']}, opset "
              f"{args.opset}, exemplar slots [{meta['exegan.exemplar_start']}, "
              f"{int(meta['exegan.exemplar_start']) + int(meta['exegan.n_exemplar'])}), {mb:.1f} MiB; "
              f"inputs {meta['exegan.inputs']}")
    return 0


if __name__ == "__main__":
    from scripts.cli_common import run  # run as a script only
    sys.exit(run(main))
