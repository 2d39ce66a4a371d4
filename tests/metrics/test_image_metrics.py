"""PSNR / SSIM / L1 / LPIPS on hand-made images with known values, and both SSIMs against
scikit-image's reference implementation (the paper's: the authors' exact call)."""
import math

import numpy as np
import pytest
import torch

from metrics.image_metrics import (l1, l1_mean, lpips_distance, psnr, quantize_8bit, ssim,
                                   ssim_gauss11, ssim_window)


def _from_unit(x):
    return x * 2 - 1          # [0,1] -> our [-1,1] convention


def test_identical_images():
    x = torch.rand(3, 3, 24, 24) * 2 - 1
    assert torch.isinf(psnr(x, x)).all() and (psnr(x, x) > 0).all()
    for fn in (ssim, ssim_gauss11):
        assert torch.allclose(fn(x, x), torch.ones(3, dtype=torch.float64))
    for fn in (l1, l1_mean):
        assert torch.equal(fn(x, x), torch.zeros(3, dtype=torch.float64))


def test_known_mse_gives_known_psnr_and_l1_mean():
    gt = torch.zeros(2, 3, 16, 16, dtype=torch.float64)   # [0,1] images
    out = gt.clone()
    out[0] += 0.1                                  # MSE 0.01 -> 20 dB; L1 0.1
    out[1, :, :8] += 0.2                           # half the pixels off by 0.2: MSE 0.02
    p = psnr(_from_unit(out), _from_unit(gt))
    assert p[0].item() == pytest.approx(20.0, abs=1e-9)
    assert p[1].item() == pytest.approx(10 * math.log10(1 / 0.02), abs=1e-9)   # 16.9897 dB
    d = l1_mean(_from_unit(out), _from_unit(gt))
    assert d.tolist() == pytest.approx([0.1, 0.1])
    # Extreme values: black vs white is L1 = 1 and PSNR = 0 dB on the [0,1] range.
    assert l1_mean(-torch.ones(1, 3, 8, 8), torch.ones(1, 3, 8, 8)).item() == pytest.approx(1.0)
    assert psnr(-torch.ones(1, 3, 8, 8), torch.ones(1, 3, 8, 8)).item() == pytest.approx(0.0)


def test_gaussian_ssim_of_constant_images_is_the_luminance_term():
    a, b = 0.2, 0.7                                # flat images: variances are 0
    x = torch.full((1, 3, 16, 16), a, dtype=torch.float64)
    y = torch.full((1, 3, 16, 16), b, dtype=torch.float64)
    c1 = 0.01 ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim_gauss11(_from_unit(x), _from_unit(y)).item() == pytest.approx(expected, rel=1e-10)
    # The paper's SSIM on 0-255 values: the same luminance term with C1 = (0.01 * 255)^2.
    c1 = (0.01 * 255) ** 2
    a8, b8 = 0.2 * 255, 0.7 * 255
    expected = (2 * a8 * b8 + c1) / (a8 * a8 + b8 * b8 + c1)
    assert ssim(_from_unit(x), _from_unit(y)).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 3, 23, 40), (1, 1, 11, 11)])
def test_gaussian_ssim_matches_skimage(shape):
    from skimage.metrics import structural_similarity
    g = torch.Generator().manual_seed(sum(shape))
    gt = torch.rand(shape, generator=g, dtype=torch.float64)
    out = (gt + 0.2 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours = ssim_gauss11(_from_unit(out), _from_unit(gt))
    for i in range(shape[0]):
        ref = structural_similarity(
            out[i].permute(1, 2, 0).numpy(), gt[i].permute(1, 2, 0).numpy(),
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
            channel_axis=2)
        assert ours[i].item() == pytest.approx(ref, abs=1e-7)
    assert (ours < 0.99).all()


def _u8_pairs(n, h, w, seed):
    """n (gt, out) uint8 [H, W, 3] pairs: smooth gradients + noise, out = gt with a noisy,
    shifted "hole" (so SSIM is far from 0 and 1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    pairs = []
    for _ in range(n):
        base = np.stack([(xx * rng.uniform(0.5, 2) + yy * rng.uniform(0.5, 2)) % 256,
                         128 + 100 * np.sin(xx / rng.uniform(5, 20)),
                         rng.uniform(0, 255, (h, w))], -1)
        gt = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).round().astype(np.uint8)
        out = gt.astype(np.float64)
        hole = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
        out[hole] = 0.5 * out[hole] + rng.uniform(0, 128, out[hole].shape)
        pairs.append((gt, np.clip(out, 0, 255).round().astype(np.uint8)))
    return pairs


def _tensor(u8):
    return torch.from_numpy(u8).permute(2, 0, 1).double()[None] / 127.5 - 1


@pytest.mark.parametrize("h,w", [(256, 256), (64, 96), (51, 51)])
def test_paper_ssim_equals_the_authors_skimage_call(h, w):
    """The authors' SSIM: structural_similarity(gt_u8, out_u8, channel_axis=-1, win_size=51,
    data_range=255) per image, averaged over images — to 1e-6 (in fact ~1e-9)."""
    from skimage.metrics import structural_similarity
    pairs = _u8_pairs(3, h, w, seed=h + w)
    ref = [structural_similarity(gt, out, channel_axis=-1, win_size=51, data_range=255)
           for gt, out in pairs]
    gt_t = torch.cat([_tensor(g) for g, _ in pairs])
    out_t = torch.cat([_tensor(o) for _, o in pairs])
    ours = ssim(out_t, gt_t)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-6)
    assert float(ours.mean()) == pytest.approx(float(np.mean(ref)), abs=1e-6)
    # Not the Gaussian-window SSIM: the two definitions differ on the same images.
    assert abs(float(ssim_gauss11(out_t, gt_t).mean()) - float(np.mean(ref))) > 1e-3
    assert ssim(gt_t, out_t).numpy() == pytest.approx(ours.numpy(), abs=1e-12)   # symmetric


def test_paper_ssim_on_images_under_51_px_uses_the_largest_window_that_fits():
    from skimage.metrics import structural_similarity
    assert [ssim_window(s, s) for s in (300, 51, 50, 32, 16, 3)] == [51, 51, 49, 31, 15, 3]
    assert ssim_window(40, 64) == 39
    (gt, out), = _u8_pairs(1, 32, 32, seed=5)
    ref = structural_similarity(gt, out, channel_axis=-1, win_size=31, data_range=255)
    assert ssim(_tensor(out), _tensor(gt)).item() == pytest.approx(ref, abs=1e-6)
    with pytest.raises(ValueError, match="3x3"):
        ssim(torch.zeros(1, 3, 2, 8), torch.zeros(1, 3, 2, 8))


def test_paper_l1_known_values():
    """L1 = sum|gt - out| / sum(gt + out) per image over all pixels and channels (8-bit)."""
    gt = np.full((2, 8, 8, 3), 100, np.uint8)
    out = gt.copy()
    out[0] = 150                                  # 50 / 250 = 0.2 everywhere
    out[1, :4] = 0                                # half the pixels: 100 off (sum 100 -> 100)
    # image 1: sum|d| = 32*3*100, sum(gt+out) = 64*3*100 + 32*3*100 -> 9600 / 28800 = 1/3
    t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).double() / 127.5 - 1   # noqa: E731
    ours = l1(t(out), t(gt))
    assert ours.tolist() == pytest.approx([0.2, 1 / 3], abs=1e-7)
    # The same formula by hand on the 0-255 integers, on random images.
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 16, 20, 3)).astype(np.uint8)
    b = rng.integers(0, 256, (3, 16, 20, 3)).astype(np.uint8)
    ref = [np.abs(a[i].astype(np.float64) - b[i]).sum() / (a[i].astype(np.float64) + b[i]).sum()
           for i in range(3)]
    np.testing.assert_allclose(l1(t(b), t(a)).numpy(), ref, rtol=0, atol=1e-7)
    # Symmetric; scale-free (the ratio is the same on 0-1 and 0-255); not the mean |d|.
    assert torch.allclose(l1(t(a), t(b)), l1(t(b), t(a)), atol=1e-15)
    assert not torch.allclose(l1(t(a), t(b)), l1_mean(t(a), t(b)), atol=1e-3)
    # Two all-black images: 0 / 0 -> 0 (identical images), never NaN.
    black = -torch.ones(1, 3, 4, 4)
    assert l1(black, black).item() == 0.0
    assert l1(black, torch.ones(1, 3, 4, 4)).item() == 1.0         # black vs white: 255 / 255


def test_ssim_rejects_tiny_images_and_mismatched_shapes():
    with pytest.raises(ValueError, match="11x11"):
        ssim_gauss11(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))


def test_quantize_8bit_matches_a_png_round_trip(tmp_path):
    from PIL import Image
    x = torch.rand(1, 3, 12, 12) * 2 - 1
    arr = ((x[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    Image.fromarray(arr).save(tmp_path / "a.png")
    back = torch.from_numpy(np.array(Image.open(tmp_path / "a.png"))).permute(2, 0, 1)
    back = back.float()[None] / 127.5 - 1
    assert torch.allclose(quantize_8bit(x), back, atol=1e-6)


def test_lpips_distance_per_image(random_lpips):
    net = random_lpips
    a = torch.rand(3, 3, 32, 32) * 2 - 1
    b = torch.rand(3, 3, 32, 32) * 2 - 1
    d = lpips_distance(net, a, b)
    assert d.shape == (3,) and d.dtype == torch.float64
    assert torch.equal(lpips_distance(net, a, a), torch.zeros(3, dtype=torch.float64))
    # Each entry is that image's own distance (no mixing across the batch).
    single = torch.cat([lpips_distance(net, a[i:i + 1], b[i:i + 1]) for i in range(3)])
    assert torch.allclose(d, single, rtol=1e-5)
    assert (d > 0).all()
