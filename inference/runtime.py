"""Which runtime runs the networks of the command lines and the editor: onnxruntime on the CPU for
runs long enough to gain from it, PyTorch otherwise (and always on a GPU).

On the CPU onnxruntime runs the generator 1.5-1.7x faster than eager PyTorch (docs/benchmarks.md,
"CPU inference") with the same results up to float rounding (within 1e-4 before quantisation, at
most one 8-bit level after; known pixels stay the input's bit for bit). Everything around the
networks stays as it is: the readers, the round trip, the seeds (z and the noise maps are drawn by
PyTorch from the same seed either way), style mixing of the codes.

Its graphs are exported once per checkpoint (:mod:`inference.onnx_export`: ``codes.onnx`` =
``EXEGAN.encode_exemplars`` and ``complete.onnx`` = ``EXEGAN.complete``) into a cache folder, keyed
by the sha256 of both weight files, the generator entry, the model kind and the PyTorch version;
later runs load the cached graphs without loading the checkpoint into PyTorch. The export takes
about 40-70 s and 950 MiB of disk for the released 256-px model. The cache folder is
``--onnx-cache``, else ``$EXEGAN_CACHE/onnx``, else ``$XDG_CACHE_HOME/exegan/onnx``
(``~/.cache/exegan/onnx``).

``--runtime`` (or ``$EXEGAN_RUNTIME``): ``auto`` (default), ``onnx`` (onnxruntime or an error),
``torch`` (eager PyTorch, no export). ``auto`` is onnxruntime on the CPU when it is installed and
the run is long enough: the editor (a long-lived process), or a run of at least
:data:`AUTO_CACHED` generator passes whose graphs are cached, or of :data:`AUTO_EXPORT` passes
when they must be exported first. A shorter run is faster in PyTorch end to end (measured: one
image, 4 samples, 13.6 s in PyTorch against 16.0 s from cached graphs, whose sessions take about
3 s to start). A cache that cannot be written (full disk, read-only folder) or a damaged cached
file never costs the run: the first falls back to PyTorch with a warning, the second is exported
again.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch

from models.exegan import EXEGAN
from models.sketch import SketchEXEGAN

from .errors import InferenceInputError
from .onnx_export import CodesGraph, CompleteGraph, export_module, file_sha256, float_inputs, noise_sizes

RUNTIMES = ("auto", "onnx", "torch")
ENV_VAR = "EXEGAN_RUNTIME"
CACHE_ENV_VAR = "EXEGAN_CACHE"
#: Bumped whenever the cached graphs change meaning; part of every cache key.
CACHE_FORMAT = "exegan-runtime-1"
INSTALL = "pip install -r requirements.txt (onnx and onnxruntime)"
#: ``auto`` runs onnxruntime for a run of at least this many generator passes (images x samples,
#: or style-mixing cells) when the graphs of its weights are cached, and from ``AUTO_EXPORT``
#: on when they must be exported first; fewer run faster in PyTorch end to end (the sessions'
#: start-up and the export cost more than onnxruntime saves; docs/benchmarks.md).
AUTO_CACHED = 8
AUTO_EXPORT = 64


def add_runtime_args(p) -> None:
    """``--runtime`` and ``--onnx-cache`` of the command lines and the editor."""
    p.add_argument("--runtime", choices=RUNTIMES, default=None,
                   help=f"what runs the networks: auto (default, or ${ENV_VAR}): onnxruntime on the CPU "
                        f"for the editor and runs of >= {AUTO_CACHED} generator passes (>= {AUTO_EXPORT} "
                        f"before the one-off export into the cache), else PyTorch; onnx; torch")
    p.add_argument("--onnx-cache", metavar="DIR", default=None,
                   help=f"folder of the exported graphs (default ${CACHE_ENV_VAR}/onnx, else "
                        f"~/.cache/exegan/onnx)")


def cache_root(explicit: Optional[str] = None) -> str:
    """The folder holding one sub-folder of graphs per cache key."""
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    if os.environ.get(CACHE_ENV_VAR):
        return os.path.join(os.path.abspath(os.path.expanduser(os.environ[CACHE_ENV_VAR])), "onnx")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "exegan", "onnx")


def onnxruntime_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def _requested(requested: Optional[str]) -> str:
    return requested if requested is not None else (os.environ.get(ENV_VAR, "").strip().lower() or "auto")


def resolve(requested: Optional[str], device: torch.device, work: Optional[int] = None) -> str:
    """``"onnx"`` or ``"torch"``: the runtime that ``requested`` (``--runtime``; None reads
    ``$EXEGAN_RUNTIME``, then ``auto``) means on ``device`` for a run of ``work`` generator passes
    (None: a long-lived process). ``auto`` keeps a run of fewer than :data:`AUTO_CACHED` passes in
    PyTorch; :func:`load_model` also keeps one under :data:`AUTO_EXPORT` there if its graphs are not
    cached yet."""
    source = "--runtime" if requested is not None else f"${ENV_VAR}"
    requested = _requested(requested)
    if requested not in RUNTIMES:
        raise InferenceInputError(f"{source} {requested!r} is not a runtime; use one of {', '.join(RUNTIMES)}.")
    if requested == "torch" or (requested == "auto" and work is not None and work < AUTO_CACHED):
        return "torch"
    if torch.device(device).type != "cpu":
        if requested == "onnx":
            raise InferenceInputError(f"{source} onnx runs on the CPU only, not on --device {device}; use "
                                      f"--device cpu or --runtime torch.")
        return "torch"
    if not onnxruntime_available():
        if requested == "onnx":
            raise InferenceInputError(f"{source} onnx needs the onnx and onnxruntime packages, which are not "
                                      f"installed; run {INSTALL}, or use --runtime torch.")
        print(f"note: onnxruntime is not installed, so PyTorch runs the networks (slower on the CPU; "
              f"{INSTALL})", file=sys.stderr)
        return "torch"
    return "onnx"


def cache_key(ckpt: str, psp: str, *, which: str, sketch: bool) -> str:
    """Hex key of the graphs exported from these files and settings."""
    record = {"format": CACHE_FORMAT, "ckpt": file_sha256(ckpt), "psp": file_sha256(psp), "which": which,
              "sketch": bool(sketch), "torch": torch.__version__}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]


class CacheDamaged(Exception):
    """A cached graph that onnxruntime cannot load (truncated, not ONNX, another format)."""


@dataclass(frozen=True)
class ModelShape:
    """What the command lines read from ``model.generator`` (sizes and exemplar slots)."""
    size: int
    style_dim: int
    exemplar_start: int
    n_exemplar: int
    num_layers: int


class OnnxEXEGAN:
    """The part of :class:`models.EXEGAN`'s interface that the command lines and the editor use
    (``size``, ``device``, ``generator``'s sizes and slots, ``encode_exemplars``, ``complete``),
    run by onnxruntime from the two cached graphs. Inputs and outputs are CPU tensors, as with the
    PyTorch model; ``complete`` draws z and the noise maps from ``seed`` exactly as
    ``EXEGAN.complete`` does, so a seed gives the same result in both runtimes up to float rounding.
    """

    runtime = "onnxruntime"

    def __init__(self, folder: str):
        import onnxruntime as ort  # optional: only the onnx runtime needs it
        from onnxruntime.capi import onnxruntime_pybind11_state as state  # optional as above: its error types

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3
        # No memory arena: the same speed, and the full-size generator's session peaks 0.8 GiB
        # lower (measured 1.6 against 2.4 GiB; docs/benchmarks.md).
        options.enable_cpu_mem_arena = False
        providers = ["CPUExecutionProvider"]

        self.folder = folder
        try:
            self._codes = ort.InferenceSession(os.path.join(folder, "codes.onnx"), options, providers=providers)
            self._complete = ort.InferenceSession(os.path.join(folder, "complete.onnx"), options,
                                                  providers=providers)
            meta = self._complete.get_modelmeta().custom_metadata_map
            self.generator = ModelShape(*(int(meta[f"exegan.{k}"]) for k in
                                          ("size", "style_dim", "exemplar_start", "n_exemplar", "num_layers")))
        except (state.Fail, state.InvalidProtobuf, state.NoSuchFile, state.InvalidGraph, KeyError,
                ValueError) as e:
            raise CacheDamaged(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
        self.sketch = any(i.name == "sketch" for i in self._complete.get_inputs())
        self.device = torch.device("cpu")

    @property
    def size(self) -> int:
        return self.generator.size

    def encode_exemplars(self, exemplars: torch.Tensor) -> torch.Tensor:
        """Codes [B, n_exemplar, style_dim] of exemplars [B, 3, S, S] in [-1, 1]."""
        (codes,) = self._codes.run(None, {"exemplar": _array(exemplars)})
        return torch.from_numpy(codes)

    def draw(self, batch: int, seed: Optional[int]) -> tuple:
        """z [B, style_dim] and the flat noise [B, N] that ``EXEGAN.complete`` draws from ``seed``
        (z first, then the maps in layer order, one generator; the maps are shared by the batch)."""
        g = self.generator
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        z = torch.randn(batch, g.style_dim, generator=gen)
        maps = [torch.randn(1, 1, r, r, generator=gen).reshape(1, -1) for r in noise_sizes(g)]
        return z, torch.cat(maps, 1).expand(batch, -1)

    def complete(self, images: torch.Tensor, masks: torch.Tensor, codes: torch.Tensor, *,
                 truncation: float = 1.0, seed: Optional[int] = None, z: Optional[torch.Tensor] = None,
                 sketch: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``EXEGAN.complete`` (and ``SketchEXEGAN.complete``): completed images [B, 3, S, S]."""
        b = images.shape[0]
        drawn_z, noise = self.draw(b, seed)
        z = drawn_z if z is None else (z.unsqueeze(0).expand(b, -1) if z.ndim == 1 else z)
        return self._run(images, masks, codes, z, noise, truncation, sketch)

    def complete_many(self, images, masks, codes, *, seeds: Sequence[int], truncation: float = 1.0,
                      sketch=None) -> List[torch.Tensor]:
        """One ``complete`` per seed of one image ([1, ...] inputs) in a single batched run: result
        k equals ``complete(..., seed=seeds[k])`` (the graph does not depend on the batch size)."""
        draws = [self.draw(1, s) for s in seeds]
        rep = lambda t: None if t is None else t.expand(len(seeds), *t.shape[1:])  # noqa: E731
        out = self._run(rep(images), rep(masks), rep(codes), torch.cat([d[0] for d in draws]),
                        torch.cat([d[1] for d in draws]), truncation, rep(sketch))
        return list(out.split(1))

    def _run(self, images, masks, codes, z, noise, truncation: float, sketch) -> torch.Tensor:
        feed = {"image": _array(images), "mask": _array(masks), "codes": _array(codes), "z": _array(z),
                "noise": _array(noise), "truncation": np.array([truncation], np.float32)}
        if self.sketch:  # no strokes: an all-zero sketch, as SketchEXEGAN.complete without one
            feed["sketch"] = _array(sketch if sketch is not None else torch.zeros_like(masks))
        (out,) = self._complete.run(None, feed)
        return torch.from_numpy(out)


def _array(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().float().numpy())


def export(model, folder: str) -> None:
    """Write ``codes.onnx`` and ``complete.onnx`` of ``model`` (an EXEGAN / SketchEXEGAN) into
    ``folder`` (created; a partly written folder is removed on any error)."""
    model = model.cpu().eval()
    g = model.generator
    inputs = float_inputs(model)
    complete = CompleteGraph(model).eval()
    meta = {"exegan.graph": "runtime", "exegan.size": str(g.size), "exegan.style_dim": str(g.style_dim),
            "exegan.exemplar_start": str(g.exemplar_start), "exegan.n_exemplar": str(g.n_exemplar),
            "exegan.num_layers": str(g.num_layers), "exegan.sketch": "1" if complete.sketch else "0",
            "exegan.cache_format": CACHE_FORMAT, "exegan.torch": torch.__version__}
    part = f"{folder}.{os.getpid()}.part"
    shutil.rmtree(part, ignore_errors=True)
    os.makedirs(part)
    try:
        export_module(CodesGraph(model).eval(), inputs["codes"], ["exemplar"], ["codes"],
                      os.path.join(part, "codes.onnx"), meta, "EXE-GAN style encoder: exemplar -> codes")
        export_module(complete, inputs["complete"], complete.input_names(), ["completed"],
                      os.path.join(part, "complete.onnx"), meta, "EXE-GAN generator and composite",
                      static=("truncation",))
        try:
            os.replace(part, folder)
        except OSError:  # another process exported the same key first: keep theirs
            if not os.path.isdir(folder):
                raise
    finally:
        shutil.rmtree(part, ignore_errors=True)


def load_model(ckpt: str, psp: str, device: torch.device, *, sketch: bool = False, which: str = "g_ema",
               runtime: Optional[str] = None, cache: Optional[str] = None, work: Optional[int] = None):
    """The model of the command lines: an :class:`OnnxEXEGAN` when ``runtime`` resolves to onnx
    (exported into the cache on the first use of these files), else the PyTorch EXEGAN (or
    SketchEXEGAN) with the generator from entry ``which`` of a training checkpoint. Errors are one
    sentence.

    ``work``: the generator passes the run will make; with ``auto`` a short run stays in PyTorch
    (:data:`AUTO_CACHED`, :data:`AUTO_EXPORT`). None is a long-lived process (the editor), which
    always gains from onnxruntime."""
    for option, path in (("--ckpt", ckpt), ("--psp", psp)):
        if not os.path.isfile(path):
            what = "EXE-GAN checkpoint" if option == "--ckpt" else "pSp encoder file (psp_ffhq_encode.pt)"
            raise InferenceInputError(f"{option} {path} does not exist; give the path of the {what}.")
    if resolve(runtime, device, work) == "torch":
        return _torch_model(ckpt, psp, device, sketch, which)
    folder = os.path.join(cache_root(cache), cache_key(ckpt, psp, which=which, sketch=sketch))
    if _requested(runtime) == "auto" and work is not None and work < AUTO_EXPORT and not os.path.isdir(folder):
        return _torch_model(ckpt, psp, device, sketch, which)
    if os.path.isdir(folder):
        try:
            return OnnxEXEGAN(folder)
        except CacheDamaged as e:  # our own cache, damaged: export it again
            print(f"warning: the cached ONNX graphs in {folder} cannot be loaded ({e}); "
                  f"exporting them again", file=sys.stderr)
            shutil.rmtree(folder, ignore_errors=True)
    model = _torch_model(ckpt, psp, torch.device("cpu"), sketch, which)
    start = time.perf_counter()
    print(f"exporting {os.path.basename(ckpt)} for onnxruntime, once (about a minute for a 256-px model; "
          f"later runs reuse {folder}; --runtime torch skips this)", file=sys.stderr)
    try:
        export(model, folder)
        print(f"exported in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        return OnnxEXEGAN(folder)
    except OSError as e:
        print(f"warning: the ONNX cache {folder} cannot be written ({e.strerror or e}); running with "
              f"PyTorch instead (--onnx-cache DIR chooses another folder)", file=sys.stderr)
        return model


def _torch_model(ckpt: str, psp: str, device, sketch: bool, which: str):
    cls = SketchEXEGAN if sketch else EXEGAN
    model = cls.from_checkpoints(ckpt, psp, device, which=which)
    model.runtime = "PyTorch"
    return model
