"""Weight maps for SVGL — EXE-GAN, Lu et al. 2025.

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
``g = sqrt(k1) / sum(sqrt(k1))`` exactly. We therefore blur separably (as two [n, n] matrix
products that also fold in the padding, see ``ConfidenceMap``), which is what makes this cheap
on CPU at 256 px and above. The literal 2-D path is kept (``separable=False``) and tests check
that the two agree.
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


def _reflect_pad(x, pad_h, pad_w):
    """Reflect-pad ``x`` [..., H, W] by ``pad_h`` rows and ``pad_w`` columns on each side.

    DEVIATION: PyTorch's (and the authors') reflect padding needs ``pad < H, W``; with the
    65x65 kernel that means maps larger than 32 px. For smaller maps (tiny test and demo images)
    we reflect in steps of at most ``n - 1`` pixels, i.e. extend by repeated mirroring (the
    symmetric extension of period ``2 (n - 1)``, numpy's ``reflect`` mode). Where one reflect
    pad is defined the result is identical to it; a dimension of 1 px is replicated instead.
    """
    for dim, pad in ((-2, pad_h), (-1, pad_w)):  # reflect padding is separable over the axes
        while pad > 0:
            n = x.shape[dim]
            step = pad if n == 1 else min(pad, n - 1)
            amount = (0, 0, step, step) if dim == -2 else (step, step, 0, 0)
            x = F.pad(x, amount, mode='replicate' if n == 1 else 'reflect')
            pad -= step
    return x


class ConfidenceMap(nn.Module):
    """``M_w`` of a hole mask: 0 outside the hole, in (0, 1] inside, largest near its border.

    ``forward(mask)``: mask float [B, 1, H, W], 1 = hole, 0 = known -> ``M_w`` [B, 1, H, W] in
    the mask's dtype and device. Computed without gradient (the map is a constant weight).

    The 1-D kernel is built once in float64 and kept as a (non-persistent) buffer, so
    ``module.to(device)`` moves it. Implementation (``separable=True``): one blur is linear in
    the map and separable, ``blur(x) = A_H @ x @ A_W^T`` where ``A_n`` [n, n] folds the reflect
    padding and the 65-tap 1-D kernel together. The ``A_n`` are built from the kernel buffer
    once per (size, dtype, device) and cached; the per-iteration work is then two small matrix
    products, which is far faster on CPU than a 65x65 (or two 65-tap) convolutions.
    ``separable=False`` runs the literal reflect-pad + 65x65 2-D convolution (tests compare them).

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
        self._blur_matrices = {}

    def _apply(self, fn, *args, **kwargs):
        self._blur_matrices = {}  # the kernel buffer may have moved: rebuild on demand
        return super()._apply(fn, *args, **kwargs)

    def kernel_2d(self, dtype=None, device=None):
        """The 2-D kernel ``K = outer(g, g)`` (equal to GMCNN's sqrt-outer form)."""
        g = self.kernel_1d
        return torch.outer(g, g).to(dtype=dtype or g.dtype, device=device or g.device)

    def blur_matrix(self, n, dtype, device):
        """``A_n`` [n, n]: output i of a reflect-padded 1-D blur is ``sum_j A_n[i, j] x_j``."""
        key = (n, dtype, str(device))
        A = self._blur_matrices.get(key)
        if A is None:
            g = self.kernel_1d.to(device=device, dtype=torch.float64)
            # Source index of every padded position, then out[i] = sum_k g[k] * x[src[i + k]]
            # (a correlation, like conv2d), accumulated into A[i, src[i + k]].
            src = _reflect_pad(torch.arange(n, dtype=torch.float64, device=device).view(1, 1, 1, n),
                               0, self.size // 2).view(-1).long()
            i = torch.arange(n, device=device)[:, None].expand(n, self.size)
            j = src[i + torch.arange(self.size, device=device)[None, :]]
            A = torch.zeros(n, n, dtype=torch.float64, device=device)
            A.index_put_((i, j), g[None, :].expand(n, self.size), accumulate=True)
            A = A.to(dtype)
            if len(self._blur_matrices) >= 8:  # a handful of resolutions at most
                self._blur_matrices.clear()
            self._blur_matrices[key] = A
        return A

    def _blur(self, x):
        if self.separable:
            A_h = self.blur_matrix(x.shape[-2], x.dtype, x.device)
            A_w = self.blur_matrix(x.shape[-1], x.dtype, x.device)
            return A_h @ x @ A_w.t()
        pad = self.size // 2
        return F.conv2d(_reflect_pad(x, pad, pad), self.kernel_2d(x.dtype, x.device)[None, None])

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

