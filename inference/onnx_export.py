"""The ONNX export of a trained EXE-GAN (generator + pSp style encoder): the graphs, the check
that only standard ONNX operators reach them, their metadata, and the atomic write.

Two kinds of graph are built here:

- :class:`InpaintGraph`, the deployment graph of ``scripts/export_onnx.py``: uint8 NHWC image,
  mask (255 = hole) and exemplar in, the completed uint8 image out (exemplar -> pSp codes ->
  generator -> composite, pre- and post-processing included), so that a runtime without PyTorch
  needs nothing but the file. Its inputs and outputs are listed in that script's docstring.
- :class:`CodesGraph` and :class:`CompleteGraph`, the float graphs behind the CPU default runtime
  (inference/runtime.py): ``EXEGAN.encode_exemplars`` and ``EXEGAN.complete`` as two graphs, so
  that the command lines keep their tensors, seeds and round trip and only the networks run in
  onnxruntime.

Every graph is traced with the pure-PyTorch reference ops (the compiled CUDA ops are not ONNX
operators) and the modulated convolutions in their "batched" form (one shared weight, so a graph
does not depend on the batch size), equal to the default grouped form up to float rounding
(within 1e-4, tested).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

import op
from common.errors import UserError
from models.stylegan2 import get_modconv_impl, set_modconv_impl

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
    truncation=psi)`` followed by ``inference.io.to_uint8``, on 8-bit NHWC inputs: the 8-bit
    conversions around :class:`CompleteGraph`.
    """

    def __init__(self, model, *, style_mix: bool = False):
        super().__init__()
        self.complete = CompleteGraph(model)
        self.encoder = model.style_encoder
        self.style_mix = style_mix
        self.sketch, self.sizes = self.complete.sketch, self.complete.sizes

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
        nchw = lambda a: a.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # noqa: E731 - pil_to_tensor's formula
        x = nchw(image)
        hole = (mask.permute(0, 3, 1, 2) >= 128).float()              # [B, 1, S, S], 1 = hole
        codes = self.encoder(nchw(exemplar))
        if self.style_mix:
            codes = torch.where((mix > 0)[None, :, None], self.encoder(nchw(exemplar_b)), codes)
        strokes = (sketch.permute(0, 3, 1, 2) >= 128).float() if self.sketch else None
        completed = self.complete(x, hole, codes, z, noise, truncation, strokes).permute(0, 2, 3, 1)
        q = ((completed + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        out = torch.where(mask >= 128, q, image)                      # known pixels: the input's bytes
        return out, completed


def example_inputs(graph: InpaintGraph, batch: int = 2, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random inputs of the graph's shapes (uint8 images, a box hole, z, noise, psi = 1)."""
    g = graph.complete.model.generator
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


class CodesGraph(nn.Module):
    """``EXEGAN.encode_exemplars`` as a graph: exemplars [B, 3, S, S] float in [-1, 1] -> codes
    [B, n_exemplar, style_dim]."""

    def __init__(self, model):
        super().__init__()
        self.encoder = model.style_encoder

    def forward(self, exemplar):
        return self.encoder(exemplar)


class CompleteGraph(nn.Module):
    """``EXEGAN.complete`` as a graph on float tensors: image [B, 3, S, S] in [-1, 1], mask
    [B, 1, S, S] (1 = hole), codes [B, n_exemplar, style_dim], z [B, style_dim], noise [B, N] (the
    maps flattened in layer order, :func:`split_noise`), truncation [1] (psi) and, for a sketch
    generator, sketch [B, 1, S, S] -> the completed image [B, 3, S, S] (known pixels the input's)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        g = model.generator
        self.sketch = hasattr(g, "sketch_channels")
        self.sizes = noise_sizes(g)
        self.register_buffer("w_avg", model.mean_latent().detach().clone().float())

    def input_names(self) -> List[str]:
        return ["image", "mask", "codes", "z", "noise", "truncation"] + (["sketch"] if self.sketch else [])

    def forward(self, image, mask, codes, z, noise, truncation, sketch=None):
        g = self.model.generator
        w = g.style(z)
        w = torch.where(truncation < 1, self.w_avg + truncation * (w - self.w_avg), w)
        gin = torch.cat([image * (1 - mask), mask - 0.5], 1)         # models.exegan.make_gin
        if self.sketch:
            gin = torch.cat([gin, sketch * mask], 1)                   # models.sketch.sketch_gin
        pred = g(gin, codes, [w], input_is_latent=True, noise=split_noise(noise, self.sizes))
        pred = pred.clamp(-1, 1)
        return torch.where(mask > 0.5, pred, image)                    # models.exegan.composite


def float_inputs(model, batch: int = 2, seed: int = 0) -> Dict[str, Dict[str, torch.Tensor]]:
    """Random example inputs of :class:`CodesGraph` ("codes") and :class:`CompleteGraph` ("complete")."""
    g = model.generator
    s = g.size
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, s, s, generator=gen) * 2 - 1
    mask = torch.zeros(batch, 1, s, s)
    mask[:, :, s // 4:3 * s // 4, s // 4:3 * s // 4] = 1
    complete = {"image": image, "mask": mask,
                "codes": torch.randn(batch, g.n_exemplar, g.style_dim, generator=gen),
                "z": torch.randn(batch, g.style_dim, generator=gen),
                "noise": torch.randn(batch, sum(r * r for r in noise_sizes(g)), generator=gen),
                "truncation": torch.ones(1)}
    if hasattr(g, "sketch_channels"):
        complete["sketch"] = (torch.rand(batch, 1, s, s, generator=gen) > 0.9).float()
    return {"codes": {"exemplar": torch.rand(batch, 3, s, s, generator=gen) * 2 - 1}, "complete": complete}


def export_graph(model, path: str, *, style_mix: bool = False, opset: int = DEFAULT_OPSET,
                 ckpt: Optional[str] = None, psp: Optional[str] = None) -> Dict[str, str]:
    """Export ``model`` (an EXEGAN / SketchEXEGAN on the CPU) to ``path`` as the uint8 graph of
    the module docstring; returns the metadata.

    Raises :class:`ExportError` when a non-standard operator reaches the traced program or the
    ONNX graph (nothing is left at ``path`` then).
    """
    model = model.cpu().eval()
    graph = InpaintGraph(model, style_mix=style_mix).eval()
    meta = metadata(model, graph, ckpt, psp, opset)
    doc = (f"EXE-GAN exemplar-guided inpainting, {LAYOUT}, mask: {MASK_POLARITY}; "
           f"inputs {meta['exegan.inputs']}; outputs output (uint8), completed (float).")
    export_module(graph, example_inputs(graph), graph.input_names(), ["output", "completed"], path,
                  meta, doc, opset=opset, static=("mix", "truncation"))
    return meta


@contextlib.contextmanager
def reference_ops():
    """The pure-PyTorch reference ops and the batched modulated convolution while tracing (one
    shared weight, so the graph does not depend on the batch size); both settings restored after."""
    previous_modconv = get_modconv_impl()
    set_modconv_impl("batched")
    try:
        with op.using_impl("ref"):
            yield
    finally:
        set_modconv_impl(previous_modconv)


def export_module(module: nn.Module, inputs: Dict[str, torch.Tensor], input_names: List[str],
                  output_names: List[str], path: str, meta: Dict[str, str], doc: str, *,
                  opset: int = DEFAULT_OPSET, static: Sequence[str] = ()) -> None:
    """Trace ``module(**inputs)`` with the reference ops, check that only standard operators are
    left, and write the ONNX file ``path`` atomically (a ``.part`` file renamed; nothing is left
    at ``path`` on an error). Dimension 0 of every input not in ``static`` is the dynamic batch."""
    import onnx  # optional: only an export needs the onnx package

    batch = torch.export.Dim("batch", min=1, max=4096)
    dyn = {k: (None if k in static else {0: batch}) for k in inputs}
    with reference_ops(), torch.no_grad():
        program = torch.export.export(module, (), kwargs=inputs, dynamic_shapes=dyn, strict=False)
        leaked = foreign_ops_fx(program)
        if leaked:
            raise ExportError(f"the traced model calls custom operators {', '.join(leaked)}, which an ONNX "
                              f"graph cannot hold; export with the reference ops (unset {op.ENV_VAR}, "
                              f"no --ops cuda).")
        onnx_program = torch.onnx.export(program, (), kwargs=inputs, input_names=input_names,
                                         output_names=output_names, opset_version=opset,
                                         dynamo=True, optimize=True, verbose=False)
    proto = onnx_program.model_proto
    leaked = foreign_ops_onnx(proto)
    if leaked:
        raise ExportError(f"the ONNX graph holds non-standard operators {', '.join(leaked)}; only the "
                          f"reference ops can be exported (unset {op.ENV_VAR}, no --ops cuda).")
    for v in list(proto.graph.input) + list(proto.graph.output):  # name the dynamic dimension
        dims = v.type.tensor_type.shape.dim
        if len(dims) and dims[0].dim_param:
            dims[0].dim_param = "batch"
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = doc
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.part"
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
