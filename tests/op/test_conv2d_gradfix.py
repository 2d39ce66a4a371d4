"""conv2d_gradfix: same values as torch.nn.functional; the regularizers' inner gradients run no
weight-gradient convolution without any context manager."""
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from op import conv2d_gradfix


def test_same_as_functional():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 7, 7, generator=g)
    w = torch.randn(6, 2, 3, 3, generator=g)
    b = torch.randn(6, generator=g)
    torch.testing.assert_close(conv2d_gradfix.conv2d(x, w, b, stride=2, padding=1, groups=2),
                               F.conv2d(x, w, b, stride=2, padding=1, groups=2))
    wt = torch.randn(4, 3, 3, 3, generator=g)
    torch.testing.assert_close(
        conv2d_gradfix.conv_transpose2d(x, wt, None, stride=2, padding=0, output_padding=1),
        F.conv_transpose2d(x, wt, None, stride=2, padding=0, output_padding=1))


class _ConvBackwardMasks(TorchDispatchMode):
    """Records the output mask (grad input, grad weight, grad bias) of every
    convolution_backward that runs."""

    def __init__(self):
        super().__init__()
        self.masks = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution_backward.default:
            self.masks.append(tuple(args[-1]))
        return func(*args, **(kwargs or {}))


def test_regularizer_input_gradients_run_no_weight_gradient_convolution():
    """Why there is no no_weight_gradients() context: R1 through D and the path length through
    G take their inner gradient with autograd.grad(inputs=...), which already runs every
    convolution_backward without its weight gradient; back-propagating the penalty then computes
    the weight gradients (so the recording would see them if they were on)."""
    from losses import PathLengthRegularizer, r1_loss
    from models.discriminator import Discriminator
    from models.generator import Generator
    torch.manual_seed(0)
    D = Discriminator(16, channel_multiplier=0.0625, channel_max=16)
    real = torch.randn(2, 3, 16, 16, requires_grad=True)
    pred = D(real)
    with _ConvBackwardMasks() as inner:
        loss, _ = r1_loss(pred, real)
    assert inner.masks and all(m[1] is False for m in inner.masks)
    with _ConvBackwardMasks() as outer:
        loss.backward()
    assert any(m[1] is True for m in outer.masks)

    # The path length through G, with the modulation applied to the activations ('batched'):
    # no conv weight depends on w there. (With per-sample weights, 'grouped', the weights are on
    # the path to w, and their gradient is the path length's gradient itself.)
    from models import stylegan2
    before = stylegan2.get_modconv_impl()
    stylegan2.set_modconv_impl('batched')
    try:
        G = Generator(16, style_dim=16, n_mlp=2, channel_multiplier=0.0625, channel_max=16)
        fake, w = G(torch.randn(2, 4, 16, 16), torch.randn(2, G.n_exemplar, 16),
                    [torch.randn(2, 16)], return_latents=True)
        with _ConvBackwardMasks() as inner:
            PathLengthRegularizer()(fake, w)
    finally:
        stylegan2.set_modconv_impl(before)
    assert inner.masks and all(m[1] is False for m in inner.masks)
