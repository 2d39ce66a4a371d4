"""How the ``torch.library`` custom ops (``exegan::upfirdn2d`` in op/upfirdn2d.py,
``exegan::fused_bias_act`` in op/fused_act.py) find the extension they call.

A custom op's arguments are tensors and numbers, not Python objects, so the extension module
(or the tests' CPU stand-in for it) is passed as an integer key into this registry. The custom
ops are what ``torch.compile`` traces: a pybind call would end the TorchDynamo graph at every
op, and a network traced as dozens of graph pieces is slower than eager. Eager calls skip them
and call the extension directly: through the custom-op dispatcher one call cost about 10x a
direct ``autograd.Function`` call (measured on CPU, 2026-12), and the networks make hundreds per
training step.
"""
import torch

_exts = {}  # key -> extension object (kept alive, so keys are never reused)


@torch.compiler.assume_constant_result
def key_of(ext):
    """``ext``'s key. Run for real also while torch.compile traces (a traced dict write would
    only be replayed after the graph, which already needs the entry)."""
    key = id(ext)
    if _exts.get(key) is not ext:
        _exts[key] = ext
    return key


def ext_of(key):
    """The extension registered under ``key``."""
    return _exts[key]


def tracing():
    """True while torch.compile traces (then the ops go through their custom ops)."""
    return torch.compiler.is_compiling()
