"""Per-image reconstruction metrics between completed and ground-truth images: PSNR, SSIM, L1,
LPIPS (the paper's Table 1-3 columns besides FID and U-IDS/P-IDS).

Inputs are our images: float [B, 3, H, W] in [-1, 1]. Every function returns one value per
image, a float64 tensor [B], so callers can average, group by mask bucket, or repeat.

The paper's columns (``ssim``, ``l1``) follow the authors' evaluation code exactly:

* ``ssim``: scikit-image's ``structural_similarity(gt_u8, out_u8, channel_axis=-1,
  win_size=51, data_range=255)`` with its other defaults — a 51x51 **uniform** window,
  K1 = 0.01, K2 = 0.03, sample (N-1) local (co)variances, mean of the SSIM map over the region
  the window fits in (a 25-pixel border is left out), per channel, averaged over channels.
  Computed here with separable box filters on 0-255 values (equal to the scikit-image call to
  ~1e-12, tested), so it also runs on the GPU. DEVIATION: images smaller than 51 px (the demo's
  32 px) cannot hold the window, where scikit-image raises; the window shrinks to the largest
  odd size that fits (:func:`ssim_window`), which callers record and warn about.
* ``l1``: the authors' "mae", per image ``sum|gt - out| / sum(gt + out)`` over all pixels and
  channels. The ratio does not depend on the scale (0-255 or 0-1 give the same number) but on
  the origin (black = 0): it is computed on [0, 1], never on [-1, 1]. Two all-black images
  (0 / 0) give 0 (DEVIATION: numpy gives NaN there).

Kept for comparison with other papers, under their own names:

* ``ssim_gauss11``: the Wang et al. 2004 Gaussian-window SSIM most libraries report: 11x11
  window, sigma = 1.5, population local variances, data range 1 on [0, 1]; equals scikit-image's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=1, channel_axis=...)``. Images must be at least 11x11.
* ``l1_mean``: mean absolute difference on [0, 1] (on [-1, 1] it would be twice as large).

Further definitions:

* PSNR = 10 log10(1 / MSE) on [0, 1], MSE over all pixels and channels of one image; identical
  images give +inf. On 8-bit images this equals PSNR with data range 255.
* LPIPS (VGG, v0.1) takes the [-1, 1] images directly, as the lpips package expects.

The Evaluator rounds both images to 8-bit levels first (``quantize_8bit``), so every score
equals the one computed from the PNG files (the authors read uint8 PNGs).

All are whole-image metrics, as in the inpainting literature: the known pixels are identical
by construction, so the scores also depend on the hole ratio (compare like with like).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from common.errors import UserError


class ImageTooSmallError(UserError, ValueError):
    """Images too small for a metric's window (one sentence: the size and what to do)."""

__all__ = ["ImageTooSmallError", "to_unit", "quantize_8bit", "psnr", "ssim", "ssim_gauss11", "ssim_window", "l1",
           "l1_mean", "l1_ratio", "lpips_distance", "gaussian_window", "SSIM_WIN_PAPER"]

#: The authors' SSIM window (uniform, win_size=51 of skimage.metrics.structural_similarity).
SSIM_WIN_PAPER = 51
SSIM_WIN = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(a: torch.Tensor, b: torch.Tensor):
    if a.dim() != 4 or a.shape != b.shape:
        raise ValueError(
            f"expected two image batches [B,C,H,W] of equal shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}")


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] in float64, clamped (generator outputs may overshoot slightly)."""
    return ((x.to(torch.float64) + 1.0) / 2.0).clamp(0.0, 1.0)


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Round [-1, 1] images to the 256 levels a PNG would store (values stay in [-1, 1])."""
    return ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round() / 127.5 - 1.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image [B] on the [0, 1] range; +inf where the images are identical."""
    _check_pair(a, b)
    mse = (to_unit(a) - to_unit(b)).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse)    # 1 / 0 -> inf -> +inf dB


def gaussian_window(size: int = SSIM_WIN, sigma: float = SSIM_SIGMA,
                    dtype=torch.float64, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian [size] (the separable SSIM window)."""
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    return g / g.sum()


def _box_filter(w: int):
    """Mean over every w x w window of [B,C,H,W] ('valid' region), by cumulative sums: a few
    operations per pixel whatever w (a separable 51-tap depthwise convolution is ~50x slower
    on a CPU); equal to it to ~1e-15 in float64."""
    def filt(t):
        for dim in (-2, -1):
            cs = F.pad(t.cumsum(dim), (0, 0, 1, 0) if dim == -2 else (1, 0))
            n = cs.shape[dim]
            t = cs.narrow(dim, w, n - w) - cs.narrow(dim, 0, n - w)
        return t / (w * w)
    return filt


def _ssim_per_image(x: torch.Tensor, y: torch.Tensor, window, data_range: float,
                    cov_norm: float, box: int = 0) -> torch.Tensor:
    """Mean SSIM map per image [B] for float64 images ``x``, ``y`` [B,C,H,W] and a separable
    1-D ``window`` [w] (or ``window=None`` and a uniform ``box`` x ``box`` window): local
    statistics on the 'valid' region only (no padding), the scheme of scikit-image's
    structural_similarity, whose mean is over the same cropped region."""
    c = x.shape[1]
    if window is None:
        filt = _box_filter(box)
    else:
        kh = window.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
        kw = window.view(1, 1, 1, -1).repeat(c, 1, 1, 1)

        def filt(t):
            return F.conv2d(F.conv2d(t, kh, groups=c), kw, groups=c)

    mu_x, mu_y = filt(x), filt(y)
    var_x = cov_norm * (filt(x * x) - mu_x ** 2)
    var_y = cov_norm * (filt(y * y) - mu_y ** 2)
    cov = cov_norm * (filt(x * y) - mu_x * mu_y)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    # Per-channel means over equal-sized maps, then the channel average = one flat mean.
    return s.flatten(1).mean(1)


def ssim_window(height: int, width: int) -> int:
    """Side of the paper SSIM's uniform window for an image: 51, or for images smaller than
    that the largest odd size that fits (see the module docstring); at least 3."""
    side = min(int(height), int(width), SSIM_WIN_PAPER)
    win = side if side % 2 else side - 1
    if win < 3:
        raise ImageTooSmallError(f"SSIM needs images of at least 3x3 pixels, got {height}x{width}; score "
                                 f"larger images, or leave ssim out of --metrics.")
    return win


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The paper's SSIM per image [B]: skimage ``structural_similarity(gt_u8, out_u8,
    channel_axis=-1, win_size=51, data_range=255)`` (uniform 51x51 window, sample covariances)
    on the 0-255 values of the images (see the module docstring for images under 51 px)."""
    _check_pair(a, b)
    win = ssim_window(*a.shape[-2:])
    x, y = to_unit(a) * 255.0, to_unit(b) * 255.0
    n = win * win
    return _ssim_per_image(x, y, None, 255.0, n / (n - 1.0), box=win)


def ssim_gauss11(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Gaussian-window SSIM per image [B] on the [0, 1] range (11x11, sigma 1.5, population
    variances; not the paper's column, see the module docstring)."""
    _check_pair(a, b)
    if min(a.shape[-2:]) < SSIM_WIN:
        raise ValueError(f"SSIM needs images of at least {SSIM_WIN}x{SSIM_WIN}, got "
                         f"{tuple(a.shape[-2:])}")
    x, y = to_unit(a), to_unit(b)
    return _ssim_per_image(x, y, gaussian_window(device=x.device), 1.0, 1.0)


def l1_ratio(x: torch.Tensor, y: torch.Tensor, weight=None) -> torch.Tensor:
    """``sum w|x - y| / sum w(x + y)`` per image [B] for non-negative float images (the authors'
    L1); ``weight`` (broadcastable, e.g. a hole mask [B,1,H,W]) restricts the sums. 0 where
    both sums are 0."""
    num, den = (x - y).abs(), x + y
    if weight is not None:
        num, den = num * weight, den * weight
    num, den = num.flatten(1).sum(1), den.flatten(1).sum(1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The paper's L1 per image [B]: ``sum|gt - out| / sum(gt + out)`` over all pixels and
    channels, on [0, 1] (equal on 0-255; see the module docstring)."""
    _check_pair(a, b)
    return l1_ratio(to_unit(a), to_unit(b))


def l1_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image [B] on the [0, 1] range (not the paper's column)."""
    _check_pair(a, b)
    return (to_unit(a) - to_unit(b)).abs().flatten(1).mean(1)


def lpips_distance(net: torch.nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS per image [B] (float64) with a loaded ``lpips.LPIPS``; images in [-1, 1]."""
    _check_pair(a, b)
    dev = next(net.parameters()).device
    with torch.no_grad():
        d = net(a.to(dev, torch.float32).clamp(-1, 1), b.to(dev, torch.float32).clamp(-1, 1))
    return d.reshape(d.shape[0], -1).mean(1).to(torch.float64)

