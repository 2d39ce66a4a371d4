"""The compiled extension's functions as ``torch.library`` custom ops, for ``torch.compile``.

A call of a pybind function is opaque to TorchDynamo: every upfirdn2d / fused_bias_act call of
the networks would end the graph there, and a generator traced as dozens of graph pieces (whose
Python glue then gets compiled frame by frame) is slower than eager. Registered as custom ops
with a shape function, the kernels are one graph node each, and a network compiles into one
graph.

:func:`ops` wraps an extension module (or any object with the same functions, e.g. the tests'
CPU stand-in) into an object with the same methods that calls the custom ops; the autograd
wiring (op/upfirdn2d.py, op/fused_act.py) takes it in place of the module. Eager results are
the same calls of the same kernels (outside a trace the views call the extension directly).
"""
from typing import List

import torch

_exts = {}    # key -> extension object (kept alive, so keys are never reused)
_views = {}   # (key, tiled, traced) -> view


@torch.library.custom_op('exegan::upfirdn2d', mutates_args=())
def _upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, params: List[int], tiled: bool,
               key: int) -> torch.Tensor:
    ext = _exts[key]
    fn = ext.upfirdn2d_tiled if tiled else ext.upfirdn2d
    return fn(x, kernel, *params)


@_upfirdn2d.register_fake
def _(x, kernel, params, tiled, key):
    ux, uy, dx, dy, px0, px1, py0, py1 = params
    out_h = (x.shape[1] * uy + py0 + py1 - kernel.shape[0]) // dy + 1
    out_w = (x.shape[2] * ux + px0 + px1 - kernel.shape[1]) // dx + 1
    return x.new_empty(x.shape[0], out_h, out_w)


@torch.library.custom_op('exegan::fused_bias_act', mutates_args=())
def _fused_bias_act(x: torch.Tensor, b: torch.Tensor, ref: torch.Tensor, act: int, grad: int,
                    alpha: float, gain: float, key: int) -> torch.Tensor:
    return _exts[key].fused_bias_act(x, b, ref, act, grad, alpha, gain)


@_fused_bias_act.register_fake
def _(x, b, ref, act, grad, alpha, gain, key):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.compiler.assume_constant_result
def _register(ext):
    """``ext``'s key. Run for real also while torch.compile traces (a traced dict write would
    only be replayed after the graph, which already needs the entry)."""
    key = id(ext)
    if _exts.get(key) is not ext:
        _exts[key] = ext
    return key


class _Ops:
    """``ext``'s functions, called directly or (``traced``) through the custom ops;
    ``upfirdn2d`` is the tiled kernel's entry (``ext.upfirdn2d_tiled``, same arguments) when
    ``tiled``."""

    def __init__(self, key, tiled, traced):
        self.key, self.tiled, self.traced = key, tiled, traced

    def upfirdn2d(self, x, kernel, *params):
        if self.traced:
            return torch.ops.exegan.upfirdn2d(x, kernel, list(params), self.tiled, self.key)
        ext = _exts[self.key]
        return (ext.upfirdn2d_tiled if self.tiled else ext.upfirdn2d)(x, kernel, *params)

    def fused_bias_act(self, x, b, ref, act, grad, alpha, gain):
        if self.traced:
            return torch.ops.exegan.fused_bias_act(x, b, ref, act, grad, alpha, gain, self.key)
        return _exts[self.key].fused_bias_act(x, b, ref, act, grad, alpha, gain)


def ops(ext, tiled=False, traced=None):
    """The view of extension ``ext`` that the autograd wiring calls (cached per extension).

    ``traced`` (default: while torch.compile traces) routes the calls through the custom ops;
    eager calls go straight to the extension, without the custom ops' dispatch overhead.
    """
    if traced is None:
        traced = torch.compiler.is_compiling()
    key = ext.key if isinstance(ext, _Ops) else _register(ext)
    view = _views.get((key, tiled, traced))
    if view is None:
        view = _views[(key, tiled, traced)] = _Ops(key, tiled, bool(traced))
    return view
