"""Weight maps for SVGL — EXE-GAN, Lu et al. 2025 (DESIGN.md section 5).

``M_w`` is the *confidence map* of a hole, taken from GMCNN's confidence-driven reconstruction
loss (Wang et al. 2018): confidence is propagated from the known region into the hole by
iterated Gaussian blurring, so pixels near the hole border get a high weight and pixels deep
inside get a low one. SVGL multiplies the LPIPS gradient by ``M_w``; the attribute loss uses the
*reverse* map ``(1 - M_w) * mask`` (min-max normalised), which favours the hole's centre, where
the exemplar's attributes should show.

Kernel (size 65, sigma 1/40): ``interval = (2 sigma + 1) / size``,
``x = linspace(-sigma - interval/2, sigma + interval/2, size + 1)``, ``k1 = diff(Phi(x))``,
``K = sqrt(outer(k1, k1)) / sum``. Because ``k1 >= 0``, ``sqrt(outer(k1, k1)) =
outer(sqrt(k1), sqrt(k1))`` and the normalisation factors too, so ``K = outer(g, g)`` with
``g = sqrt(k1) / sum(sqrt(k1))`` exactly: we convolve with two 1-D kernels (2 x 65 taps per
pixel instead of 65 x 65), which is what makes this cheap on CPU at 256 px and above. The 2-D
path is kept (``separable=False``) and tests check the two agree.
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['gaussian_kernel_1d', 'ConfidenceMap', 'confidence_map', 'reverse_weight_map']


def gaussian_kernel_1d(size=65, sigma=1.0 / 40, dtype=torch.float64):
    """The 1-D factor ``g`` of GMCNN's 2-D kernel ``K = outer(g, g)`` (sums to 1)."""
    interval = (2 * sigma + 1.0) / size
    x = torch.linspace(-sigma - interval / 2, sigma + interval / 2, size + 1, dtype=torch.float64)
    k1 = torch.diff(torch.special.ndtr(x))  # Phi differences: mass of N(0,1) in each bin
    g = k1.sqrt()
    return (g / g.sum()).to(dtype)


def _reflect_pad(x, pad):
    """Reflect-pad the last two dims of ``x`` by ``pad`` on every side.

    DEVIATION: PyTorch's (and the authors') reflect padding needs ``pad < H, W``; with the
    65x65 kernel that means maps larger than 32 px. For smaller maps (tiny test and demo images)
    we reflect in steps of at most ``n - 1`` pixels, i.e. extend by repeated mirroring (the
    symmetric extension of period ``2 (n - 1)``). Where one reflect pad is defined the result is
    identical to it; a dimension of 1 px falls back to replicate padding.
    """
    if min(x.shape[-2:]) > pad:
        return F.pad(x, (pad, pad, pad, pad), mode='reflect')
    for dim in (-2, -1):  # reflect padding is separable over the axes (corners included)
        left = pad
        while left > 0:
            n = x.shape[dim]
            step = left if n == 1 else min(left, n - 1)
            amount = (0, 0, step, step) if dim == -2 else (step, step, 0, 0)
            x = F.pad(x, amount, mode='replicate' if n == 1 else 'reflect')
            left -= step
    return x


class ConfidenceMap(nn.Module):
    """``M_w`` of a hole mask: 0 outside the hole, in (0, 1] inside, largest near its border.

    ``forward(mask)``: mask float [B, 1, H, W], 1 = hole, 0 = known -> ``M_w`` [B, 1, H, W] in
    the mask's dtype and device. Computed without gradient (the map is a constant weight).

    The 1-D kernel is built once in float64 and kept as a (non-persistent) buffer, so
    ``module.to(device)`` moves it; per call it is cast to the mask's dtype/device (65 numbers).

    Propagation reach: each of the ``iters`` blurs moves confidence ``size // 2`` px into the
    hole, so pixels farther than ``iters * (size // 2)`` = 224 px from every known pixel get 0.
    The map lives on an absolute pixel scale: on images not much larger than the 65-px kernel
    (the 64-px demo) it is nearly flat, and the border > centre profile appears from ~128 px on.
    """

    def __init__(self, size=65, sigma=1.0 / 40, iters=7, separable=True):
        super().__init__()
        if size % 2 != 1:
            raise ValueError(f'ConfidenceMap: kernel size must be odd, got {size}.')
        self.size, self.sigma, self.iters, self.separable = size, sigma, iters, separable
        self.register_buffer('kernel_1d', gaussian_kernel_1d(size, sigma), persistent=False)

    def kernel_2d(self, dtype=None, device=None):
        """The 2-D kernel ``K = outer(g, g)`` (equal to GMCNN's sqrt-outer form)."""
        g = self.kernel_1d
        return torch.outer(g, g).to(dtype=dtype or g.dtype, device=device or g.device)

    def _blur(self, x):
        pad = self.size // 2
        x = _reflect_pad(x, pad)
        if self.separable:
            g = self.kernel_1d.to(dtype=x.dtype, device=x.device)
            x = F.conv2d(x, g.view(1, 1, 1, -1))  # along W
            return F.conv2d(x, g.view(1, 1, -1, 1))  # along H
        return F.conv2d(x, self.kernel_2d(x.dtype, x.device)[None, None])

    @torch.no_grad()
    def forward(self, mask):
        _check_mask(mask, 'ConfidenceMap')
        mask = mask.detach()
        init = 1 - mask
        conf = torch.zeros_like(mask)
        for _ in range(self.iters):
            conf = self._blur(init) * mask
            init = conf + (1 - mask)
        # Mathematically conf <= 1 (a normalised blur of values <= 1); clamp float rounding.
        return conf.clamp_(max=1.0)  # [B, 1, H, W]


def _check_mask(mask, who):
    if not torch.is_tensor(mask) or mask.dim() != 4 or mask.shape[1] != 1:
        shape = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
        raise ValueError(f'{who}: expected a mask of shape [B, 1, H, W], got {shape}.')
    if not mask.is_floating_point():
        raise ValueError(f'{who}: expected a float mask (1 = hole, 0 = known), got {mask.dtype}.')


_DEFAULT_MAPS = {}


def confidence_map(mask):
    """``M_w`` with the paper's settings (65, 1/40, 7 iterations); one cached module per process."""
    module = _DEFAULT_MAPS.get('default')
    if module is None:
        module = _DEFAULT_MAPS['default'] = ConfidenceMap()
    return module(mask)


def reverse_weight_map(mask, M_w, eps=1e-12):
    """The attribute loss's SVGL map: ``(1 - M_w) * mask``, min-max normalised per sample.

    Args:
        mask: [B, 1, H, W], 1 = hole.
        M_w: [B, 1, H, W] confidence map of ``mask``.
    Returns:
        [B, 1, H, W] in [0, 1]: 0 outside the hole, growing towards the hole's centre.

    Degenerate samples (max == min, i.e. the un-normalised map is constant): the map is returned
    clamped to [0, 1] instead of divided by zero. An empty hole therefore gives all zeros (no
    attribute gradient for that sample); a hole covering the whole image (``M_w`` = 0) gives all
    ones. Per-sample normalisation equals the authors' batch-wide one when the batch shares a
    single mask, which is how they train.
    """
    _check_mask(mask, 'reverse_weight_map')
    if M_w.shape != mask.shape:
        raise ValueError(f'reverse_weight_map: M_w shape {tuple(M_w.shape)} differs from the mask '
                         f'shape {tuple(mask.shape)}.')
    r = (1 - M_w) * mask
    flat = r.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1, 1)
    hi = flat.max(1).values.view(-1, 1, 1, 1)
    span = hi - lo
    degenerate = span <= eps
    normalised = (r - lo) / torch.where(degenerate, torch.ones_like(span), span)
    return torch.where(degenerate, r.clamp(0, 1), normalised)

