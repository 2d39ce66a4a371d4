"""Fixtures for the op tests: CPU stand-ins for the compiled kernels, and impl reset.

The stand-ins follow the kernels' documented contracts (op/csrc/*.cpp) in plain torch, so the
autograd wiring that the CUDA path uses (op/upfirdn2d.py, op/fused_act.py) can be checked on a
machine without a GPU: same Functions, same backward formulas, only the innermost call differs.
"""
import types

import pytest
import torch

import op
from op.upfirdn2d import upfirdn2d_ref


def _emulated_upfirdn2d(x, kernel, ux, uy, dx, dy, px0, px1, py0, py1, tile=-1):
    assert x.ndim == 3 and kernel.ndim == 2 and x.is_contiguous()
    assert tile == -1  # the stand-in has no upfirdn2d_tiled_plan, so no case is tiled
    return upfirdn2d_ref(x[:, None], kernel, (ux, uy), (dx, dy), (px0, px1, py0, py1))[:, 0]


def _emulated_fused_bias_act(x, b, ref, act, grad, alpha, gain):
    """Mirror of the kernel: grad 0 = act(x + b) * gain, grad 1 = x * slope(ref) * gain."""
    if grad == 0:
        v = x + b.view([1, -1] + [1] * (x.ndim - 2)) if b.numel() else x.clone()
        if act == 1:
            v = torch.where(v > 0, v, v * alpha)
        return v * gain
    slope = torch.ones_like(x)
    if act == 1:
        positive = ref > 0 if gain >= 0 else ref < 0
        slope = torch.where(positive, slope, slope * alpha)
    return x * slope * gain


@pytest.fixture
def emulated_ext():
    """An object with the compiled extensions' function signatures, computed on CPU."""
    return types.SimpleNamespace(upfirdn2d=_emulated_upfirdn2d,
                                 fused_bias_act=_emulated_fused_bias_act)


@pytest.fixture(autouse=True)
def _reset_impl():
    """Tests that call op.set_impl / op.set_upfirdn2d_kernel must not leak the choice into other
    tests, nor the self-check's cached choices (keyed by extension objects that tests create)."""
    from op import _selfcheck
    _selfcheck.reset()
    yield
    op.set_impl(None)
    op.set_upfirdn2d_kernel(None)
    _selfcheck.reset()
