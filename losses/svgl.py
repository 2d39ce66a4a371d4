"""Spatially variant gradient layer (SVGL) — EXE-GAN, Lu et al. 2025, Sec. "spatially variant
gradient backpropagation".

SVGL is the identity in the forward pass and multiplies the incoming gradient by a weight map
``M_w`` in the backward pass. Put in front of a loss network (LPIPS, style encoder), it leaves the
loss value untouched but lets each pixel of the completed image receive a gradient scaled by how
much that loss should drive it (``M_w`` for LPIPS, the reverse map for the attribute loss; see
``losses/weight_maps.py``).

Double backward: the backward pass is written with differentiable ops, so SVGL behaves as a
linear map with Jacobian ``diag(M_w)`` at every order: the gradient of the backward output with
respect to the upstream gradient is ``M_w`` again, and no gradient ever flows into ``M_w`` (it
is treated as a constant, as in the paper).
"""
import torch

__all__ = ['SVGLFunction', 'svgl']


class SVGLFunction(torch.autograd.Function):
    """``forward(x, M_w) = x``; ``backward(g) = (g * M_w, None)``."""

    @staticmethod
    def forward(ctx, x, weight_map):
        ctx.save_for_backward(weight_map)
        # A view shares x's storage, so the output is bit-identical to the input; autograd still
        # records this node (returning ``x`` itself would make the output alias the leaf).
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        (weight_map,) = ctx.saved_tensors
        return grad_output * weight_map, None


def svgl(x, weight_map):
    """Apply SVGL: returns ``x`` unchanged; its gradient is multiplied by ``weight_map``.

    Args:
        x: [B, C, H, W] tensor (usually the completed image).
        weight_map: tensor broadcastable to ``x`` — normally [B, 1, H, W], shared by all channels.
            It is detached: no gradient flows into the map.
    """
    if not torch.is_tensor(weight_map):
        raise TypeError(f'svgl: weight_map must be a tensor, got {type(weight_map).__name__}.')
    try:
        shape = torch.broadcast_shapes(weight_map.shape, x.shape)
    except RuntimeError:
        shape = None
    if shape != x.shape:
        raise ValueError(f'svgl: weight map of shape {tuple(weight_map.shape)} does not broadcast '
                         f'to the input shape {tuple(x.shape)}; pass a [B, 1, H, W] map.')
    return SVGLFunction.apply(x, weight_map.detach().to(dtype=x.dtype, device=x.device))
