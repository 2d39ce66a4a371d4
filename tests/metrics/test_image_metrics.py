"""PSNR / SSIM / L1 / LPIPS on hand-made images with known values, and SSIM against
scikit-image's reference implementation."""
import math

import numpy as np
import pytest
import torch

from metrics.image_metrics import l1, lpips_distance, psnr, quantize_8bit, ssim


def _from_unit(x):
    return x * 2 - 1          # [0,1] -> our [-1,1] convention


def test_identical_images():
    x = torch.rand(3, 3, 24, 24) * 2 - 1
    assert torch.isinf(psnr(x, x)).all() and (psnr(x, x) > 0).all()
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))
    assert torch.equal(l1(x, x), torch.zeros(3, dtype=torch.float64))


def test_known_mse_gives_known_psnr_and_l1():
    gt = torch.zeros(2, 3, 16, 16, dtype=torch.float64)   # [0,1] images
    out = gt.clone()
    out[0] += 0.1                                  # MSE 0.01 -> 20 dB; L1 0.1
    out[1, :, :8] += 0.2                           # half the pixels off by 0.2: MSE 0.02
    p = psnr(_from_unit(out), _from_unit(gt))
    assert p[0].item() == pytest.approx(20.0, abs=1e-9)
    assert p[1].item() == pytest.approx(10 * math.log10(1 / 0.02), abs=1e-9)   # 16.9897 dB
    d = l1(_from_unit(out), _from_unit(gt))
    assert d.tolist() == pytest.approx([0.1, 0.1])
    # Extreme values: black vs white is L1 = 1 and PSNR = 0 dB on the [0,1] range.
    assert l1(-torch.ones(1, 3, 8, 8), torch.ones(1, 3, 8, 8)).item() == pytest.approx(1.0)
    assert psnr(-torch.ones(1, 3, 8, 8), torch.ones(1, 3, 8, 8)).item() == pytest.approx(0.0)


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 0.2, 0.7                                # flat images: variances are 0
    x = torch.full((1, 3, 16, 16), a, dtype=torch.float64)
    y = torch.full((1, 3, 16, 16), b, dtype=torch.float64)
    c1 = 0.01 ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(_from_unit(x), _from_unit(y)).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 3, 23, 40), (1, 1, 11, 11)])
def test_ssim_matches_skimage(shape):
    from skimage.metrics import structural_similarity
    g = torch.Generator().manual_seed(sum(shape))
    gt = torch.rand(shape, generator=g, dtype=torch.float64)
    out = (gt + 0.2 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours = ssim(_from_unit(out), _from_unit(gt))
    for i in range(shape[0]):
        ref = structural_similarity(
            out[i].permute(1, 2, 0).numpy(), gt[i].permute(1, 2, 0).numpy(),
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
            channel_axis=2)
        assert ours[i].item() == pytest.approx(ref, abs=1e-7)
    assert (ours < 0.99).all()


def test_ssim_rejects_tiny_images_and_mismatched_shapes():
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
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
