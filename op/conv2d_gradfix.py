"""Convolutions for the networks: plain ``torch.nn.functional`` calls, differentiable to any order.

R1 (EXE-GAN's discriminator regularizer) and the path-length regularizer take gradients with
respect to images or latents with ``create_graph=True`` and then backpropagate through them
(paper Sec. 3.4 inherits both from StyleGAN2). The StyleGAN2-ADA code routes its convolutions
through a custom ``conv2d_gradfix`` for two reasons: older cuDNN convolutions lacked double
backward, and a ``no_weight_gradients()`` context skipped the weight gradients of that inner
``autograd.grad`` call.

DEVIATION: neither is needed with current PyTorch, so both functions are plain calls and there
is no such context. Convolutions support double backward on every device, and
``torch.autograd.grad(..., inputs=x)`` already runs each ``convolution_backward`` with the weight
gradient switched off (output mask (input, weight, bias) = (True, False, False)) when no
requested input depends on it: tests/op/test_conv2d_gradfix.py records those masks for R1
through the discriminator and for the path length through the generator. (This project's
context manager only set a flag nothing read; it was removed.)
"""
import torch.nn.functional as F


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Same as ``torch.nn.functional.conv2d`` (differentiable to any order)."""
    return F.conv2d(input, weight, bias, stride, padding, dilation, groups)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Same as ``torch.nn.functional.conv_transpose2d`` (differentiable to any order)."""
    return F.conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups,
                              dilation)
