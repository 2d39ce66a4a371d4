"""Per-image reconstruction metrics between completed and ground-truth images: PSNR, SSIM, L1,
LPIPS (the paper's Table 1-3 columns besides FID and U-IDS/P-IDS, DESIGN section 6).

Inputs are our images: float [B, 3, H, W] in [-1, 1]. Every function returns one value per
image, a float64 tensor [B], so callers can average, group by mask bucket, or repeat.

Data ranges (stated once, used everywhere):

* PSNR, SSIM and L1 are computed on images mapped to [0, 1] (``(x + 1) / 2``, clamped), i.e.
  data range 1. On 8-bit images this is the same PSNR/SSIM as with data range 255.
* PSNR = 10 log10(1 / MSE), MSE over all pixels and channels of one image; identical images
  give +inf.
* SSIM is the standard Gaussian-window definition (Wang et al. 2004): 11x11 window,
  sigma = 1.5, K1 = 0.01, K2 = 0.03, population (biased) local variances, mean of the SSIM
  map over the valid region (no padding: the 5-pixel border is left out), computed per
  channel and averaged over channels. This equals scikit-image's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=1, channel_axis=...)``. Images must be at least 11x11.
* L1 = mean absolute difference on [0, 1] (whole image, all channels). On [-1, 1] it would
  be exactly twice as large.
* LPIPS (VGG, v0.1) takes the [-1, 1] images directly, as the lpips package expects.

All are whole-image metrics, as in the inpainting literature: the known pixels are identical
by construction, so the scores also depend on the hole ratio (compare like with like).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["to_unit", "quantize_8bit", "psnr", "ssim", "l1", "lpips_distance",
           "gaussian_window"]

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


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image [B] on the [0, 1] range (see the module docstring)."""
    _check_pair(a, b)
    if min(a.shape[-2:]) < SSIM_WIN:
        raise ValueError(f"SSIM needs images of at least {SSIM_WIN}x{SSIM_WIN}, got "
                         f"{tuple(a.shape[-2:])}")
    x, y = to_unit(a), to_unit(b)
    c = x.shape[1]
    g = gaussian_window(device=x.device)
    # Separable Gaussian filter, one depthwise pass per axis, 'valid' region only.
    kh = g.view(1, 1, SSIM_WIN, 1).repeat(c, 1, 1, 1)
    kw = g.view(1, 1, 1, SSIM_WIN).repeat(c, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, kh, groups=c), kw, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2     # data range 1
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    # Per-channel means over equal-sized maps, then the channel average = one flat mean.
    return s.flatten(1).mean(1)


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image [B] on the [0, 1] range."""
    _check_pair(a, b)
    return (to_unit(a) - to_unit(b)).abs().flatten(1).mean(1)


def lpips_distance(net: torch.nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS per image [B] (float64) with a loaded ``lpips.LPIPS``; images in [-1, 1]."""
    _check_pair(a, b)
    dev = next(net.parameters()).device
    with torch.no_grad():
        d = net(a.to(dev, torch.float32).clamp(-1, 1), b.to(dev, torch.float32).clamp(-1, 1))
    return d.reshape(d.shape[0], -1).mean(1).to(torch.float64)

