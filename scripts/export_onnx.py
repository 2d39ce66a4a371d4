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
import hashlib
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from common.errors import UserError  # noqa: E402

DEFAULT_OPSET = 18
#: Operator domains a graph may use: the standard ONNX operator set only.
STANDARD_DOMAINS = ("", "ai.onnx")
#: What the mask input means; written into the metadata and checked by the tests.
MASK_POLARITY = "255 = hole, 0 = known (a pixel >= 128 is a hole)"
LAYOUT = "NHWC uint8 RGB"


class ExportError(UserError, RuntimeError):
    """An export that cannot be made as asked (one sentence)."""


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def noise_sizes(generator) -> List[int]:
    """Side of each per-layer noise map, in layer order (``Generator.make_noise``'s shapes)."""
    return [2 ** ((i + 5) // 2) for i in range(generator.num_layers)]


def split_noise(noise: torch.Tensor, sizes: Sequence[int]) -> List[torch.Tensor]:
    """Flat noise [B, N] -> the generator's list of maps [B, 1, r, r] (layer order)."""
    out, at = [], 0
    for r in sizes:
        out.append(noise[:, at:at + r * r].reshape(-1, 1, r, r))
        at += r * r
    return out


class InpaintGraph(nn.Module):
    """The exported computation around an :class:`models.EXEGAN` (see the module docstring).

    Equal to ``model.complete(image, mask, model.encode_exemplars(exemplar), z=z, noise=maps,
    truncation=psi)`` followed by ``inference.io.to_uint8``, on 8-bit NHWC inputs.
    """

    def __init__(self, model, *, style_mix: bool = False):
        super().__init__()
        self.model = model
        self.style_mix = style_mix
        g = model.generator
        self.sketch = hasattr(g, "sketch_channels")
        self.sizes = noise_sizes(g)
        self.register_buffer("w_avg", model.mean_latent().detach().clone().float())

    def input_names(self) -> List[str]:
        names = ["image", "mask", "exemplar"]
        if self.style_mix:
            names += ["exemplar_b", "mix"]
        names += ["z", "noise", "truncation"]
        if self.sketch:
            names.append("sketch")
        return names

    def forward(self, image, mask, exemplar, exemplar_b=None, mix=None, z=None, noise=None,
                truncation=None, sketch=None):
        g, enc = self.model.generator, self.model.style_encoder
        x = image.permute(0, 3, 1, 2).float() / 127.5 - 1.0         # pil_to_tensor's formula
        hole = mask.permute(0, 3, 1, 2) >= 128                        # [B, 1, S, S] bool
        m = hole.float()
        codes = enc(exemplar.permute(0, 3, 1, 2).float() / 127.5 - 1.0)
        if self.style_mix:
            codes_b = enc(exemplar_b.permute(0, 3, 1, 2).float() / 127.5 - 1.0)
            codes = torch.where((mix > 0)[None, :, None], codes_b, codes)
        w = g.style(z)
        w = torch.where(truncation < 1, self.w_avg + truncation * (w - self.w_avg), w)
        gin = torch.cat([x * (1 - m), m - 0.5], 1)                    # models.exegan.make_gin
        if self.sketch:
            strokes = (sketch.permute(0, 3, 1, 2) >= 128).float()
            gin = torch.cat([gin, strokes * m], 1)                    # models.sketch.sketch_gin
        pred = g(gin, codes, [w], input_is_latent=True, noise=split_noise(noise, self.sizes))
        pred = pred.clamp(-1, 1)
        completed = torch.where(hole, pred, x).permute(0, 2, 3, 1)   # models.exegan.composite
        q = ((completed + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        out = torch.where(mask >= 128, q, image)                      # known pixels: the input's bytes
        return out, completed


def example_inputs(graph: InpaintGraph, batch: int = 2, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random inputs of the graph's shapes (uint8 images, a box hole, z, noise, psi = 1)."""
    g = graph.model.generator
    s = g.size
    gen = torch.Generator().manual_seed(seed)
    rgb = lambda: torch.randint(0, 256, (batch, s, s, 3), generator=gen, dtype=torch.uint8)  # noqa: E731
    mask = torch.zeros(batch, s, s, 1, dtype=torch.uint8)
    mask[:, s // 4:3 * s // 4, s // 4:3 * s // 4] = 255
    out = {"image": rgb(), "mask": mask, "exemplar": rgb()}
    if graph.style_mix:
        out["exemplar_b"] = rgb()
        out["mix"] = (torch.arange(g.n_exemplar) % 2).to(torch.uint8)
    out["z"] = torch.randn(batch, g.style_dim, generator=gen)
    out["noise"] = torch.randn(batch, sum(r * r for r in graph.sizes), generator=gen)
    out["truncation"] = torch.ones(1)
    if graph.sketch:
        sk = torch.zeros(batch, s, s, 1, dtype=torch.uint8)
        sk[:, s // 2] = 255
        out["sketch"] = sk
    return out


def foreign_ops_fx(program) -> List[str]:
    """Targets of a torch.export program that are not ATen / prims operators (a custom op)."""
    bad = set()
    for node in program.graph_module.graph.nodes:
        target = node.target
        if node.op == "call_function" and isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
            if target.namespace not in ("aten", "prims"):
                bad.add(str(target))
    return sorted(bad)


def foreign_ops_onnx(model) -> List[str]:
    """``domain::op_type`` of every node (functions and subgraphs included) outside the standard
    ONNX operator set: a custom op that leaked into the graph."""
    bad = set()

    def walk(nodes):
        for n in nodes:
            if n.domain not in STANDARD_DOMAINS:
                bad.add(f"{n.domain}::{n.op_type}")
            for a in n.attribute:
                if a.g is not None and len(a.g.node):
                    walk(a.g.node)
                for sub in a.graphs:
                    walk(sub.node)

    walk(model.graph.node)
    for fn in model.functions:
        walk(fn.node)
    return sorted(bad)


def metadata(model, graph: InpaintGraph, ckpt: Optional[str], psp: Optional[str], opset: int) -> Dict[str, str]:
    g = model.generator
    meta = {
        "exegan.graph": "style_mix" if graph.style_mix else "inpaint",
        "exegan.opset": str(opset),
        "exegan.size": str(g.size),
        "exegan.style_dim": str(g.style_dim),
        "exegan.exemplar_start": str(g.exemplar_start),
        "exegan.n_exemplar": str(g.n_exemplar),
        "exegan.noise_sizes": json.dumps(graph.sizes),
        "exegan.n_noise": str(sum(r * r for r in graph.sizes)),
        "exegan.mask_polarity": MASK_POLARITY,
        "exegan.layout": LAYOUT,
        "exegan.inputs": ",".join(graph.input_names()),
        "exegan.outputs": "output,completed",
        "exegan.sketch": "1" if graph.sketch else "0",
        "exegan.ops": "reference (pure PyTorch, standard ONNX operators only)",
        "exegan.modconv": "batched",
        "exegan.torch": torch.__version__,
    }
    for key, path in (("ckpt", ckpt), ("psp", psp)):
        if path:
            meta[f"exegan.{key}"] = os.path.basename(path)
            meta[f"exegan.{key}_sha256"] = file_sha256(path)
    return meta


def export_graph(model, path: str, *, style_mix: bool = False, opset: int = DEFAULT_OPSET,
                 ckpt: Optional[str] = None, psp: Optional[str] = None) -> Dict[str, str]:
    """Export ``model`` (an EXEGAN / SketchEXEGAN on the CPU) to ``path``; returns the metadata.

    Raises :class:`ExportError` when a non-standard operator reaches the traced program or the
    ONNX graph (nothing is left at ``path`` then).
    """
    import onnx

    import op
    from models.stylegan2 import get_modconv_impl, set_modconv_impl

    model = model.cpu().eval()
    graph = InpaintGraph(model, style_mix=style_mix).eval()
    inputs = example_inputs(graph)
    batch = torch.export.Dim("batch", min=1, max=4096)
    dyn = {k: ({0: batch} if k not in ("mix", "truncation") else None) for k in inputs}
    from op import _impl
    previous_impl, previous_modconv = _impl._override, get_modconv_impl()
    op.set_impl("ref")
    set_modconv_impl("batched")  # one shared weight: the graph does not depend on the batch size
    try:
        with torch.no_grad():
            program = torch.export.export(graph, (), kwargs=inputs, dynamic_shapes=dyn, strict=False)
        leaked = foreign_ops_fx(program)
        if leaked:
            raise ExportError(f"the traced model calls custom operators {', '.join(leaked)}, which an ONNX "
                              f"graph cannot hold; export with the reference ops (unset {op.ENV_VAR}, "
                              f"no --ops cuda).")
        onnx_program = torch.onnx.export(program, (), kwargs=inputs, input_names=graph.input_names(),
                                         output_names=["output", "completed"], opset_version=opset,
                                         dynamo=True, optimize=True, verbose=False)
    finally:
        _impl._override = previous_impl
        set_modconv_impl(previous_modconv)
    proto = onnx_program.model_proto
    leaked = foreign_ops_onnx(proto)
    if leaked:
        raise ExportError(f"the ONNX graph holds non-standard operators {', '.join(leaked)}; only the "
                          f"reference ops can be exported (unset {op.ENV_VAR}, no --ops cuda).")
    for v in list(proto.graph.input) + list(proto.graph.output):  # name the dynamic dimension
        dims = v.type.tensor_type.shape.dim
        if len(dims) and dims[0].dim_param:
            dims[0].dim_param = "batch"
    meta = metadata(model, graph, ckpt, psp, opset)
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = (f"EXE-GAN exemplar-guided inpainting, {LAYOUT}, mask: {MASK_POLARITY}; "
                        f"inputs {meta['exegan.inputs']}; outputs output (uint8), completed (float).")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".part"
    big = proto.ByteSize() > 1_900_000_000
    try:
        if big:  # over protobuf's 2 GiB: the weights go to <file>.data beside it
            onnx.save_model(proto, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=os.path.basename(path) + ".data")
        else:
            onnx.save_model(proto, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return meta


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
    from models.checkpoint import safe_load
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
    if _is_sketch_checkpoint(args.ckpt, args.which):
        from models.sketch import SketchEXEGAN as cls
    else:
        from models.exegan import EXEGAN as cls
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
    from scripts._cli_common import run
    sys.exit(run(main))
