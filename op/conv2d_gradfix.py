"""Convolutions for the networks, with a switch to skip weight gradients during regularization.

R1 (EXE-GAN's discriminator regularizer) and the path-length regularizer take gradients with
respect to images or latents with ``create_graph=True`` and then backpropagate through them
(paper Sec. 3.4 inherits both from StyleGAN2). The StyleGAN2-ADA code routes its convolutions
through ``conv2d_gradfix`` for two reasons: older cuDNN convolutions lacked double backward, and
the weight gradient of that inner ``autograd.grad`` call is wasted work.

DEVIATION: here both functions are plain ``torch.nn.functional`` calls. Current PyTorch
convolutions support double backward on every device, and ``torch.autograd.grad(..., inputs=x)``
already skips the weight-gradient kernel of every convolution whose weight does not lead to an
input that was asked for, which is exactly what ``no_weight_gradients`` exists to do. The context
manager is kept (with its flag queryable via :func:`weight_gradients_disabled`) so that loop code
reads like the StyleGAN2 releases and could switch to a custom kernel without changes.
"""
import contextlib

import torch.nn.functional as F

_weight_gradients_disabled = False


@contextlib.contextmanager
def no_weight_gradients(disable=True):
    """Mark a region (typically the ``autograd.grad`` of R1 / path length) as not needing
    weight gradients. Nestable; restores the previous state on exit."""
    global _weight_gradients_disabled
    previous = _weight_gradients_disabled
    _weight_gradients_disabled = previous or bool(disable)
    try:
        yield
    finally:
        _weight_gradients_disabled = previous


def weight_gradients_disabled():
    """True inside :func:`no_weight_gradients`."""
    return _weight_gradients_disabled


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Same as ``torch.nn.functional.conv2d`` (differentiable to any order)."""
    return F.conv2d(input, weight, bias, stride, padding, dilation, groups)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Same as ``torch.nn.functional.conv_transpose2d`` (differentiable to any order)."""
    return F.conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups,
                              dilation)
