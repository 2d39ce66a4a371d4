"""Confidence map M_w and the reverse map (docs/losses.md, SVGL and the weight maps)."""
import numpy as np
import pytest
import torch
from scipy.signal import fftconvolve
from scipy.stats import norm

from losses.weight_maps import ConfidenceMap, confidence_map, reverse_weight_map


def _gmcnn_kernel(size=65, sigma=1.0 / 40):
    """The 2-D kernel exactly as docs/losses.md writes it (scipy CDF, sqrt of the outer product)."""
    interval = (2 * sigma + 1.0) / size
    x = np.linspace(-sigma - interval / 2, sigma + interval / 2, size + 1)
    k1 = np.diff(norm.cdf(x))
    K = np.sqrt(np.outer(k1, k1))
    return K / K.sum()


def _reference_map(mask, iters=7):
    """Independent float64 reference: numpy reflect pad + a 65x65 2-D (FFT) correlation."""
    K = _gmcnn_kernel()
    m = mask.double().numpy()
    init = 1 - m
    for _ in range(iters):
        padded = np.pad(init, ((0, 0), (0, 0), (32, 32), (32, 32)), mode='reflect')
        blurred = np.stack([fftconvolve(p[0], K[::-1, ::-1], mode='valid')[None] for p in padded])
        conf = blurred * m
        init = conf + (1 - m)
    return torch.from_numpy(conf)


def _rect_mask(B, S, y0, y1, x0, x1, dtype=torch.float32):
    m = torch.zeros(B, 1, S, S, dtype=dtype)
    m[:, :, y0:y1, x0:x1] = 1
    return m


def test_kernel_matches_design_formula_and_is_separable():
    cm = ConfidenceMap()
    K = _gmcnn_kernel()
    assert np.allclose(cm.kernel_2d().numpy(), K, rtol=1e-12, atol=0)
    assert cm.kernel_2d().sum().item() == pytest.approx(1.0, abs=1e-12)


def test_matches_reference_implementation():
    m = _rect_mask(2, 48, 10, 40, 6, 30)
    m[1, :, 30:44, 20:46] = 1  # a second, different, overlapping hole in sample 1
    ours = ConfidenceMap()(m.double())
    assert torch.allclose(ours, _reference_map(m), rtol=0, atol=1e-10)


def test_small_images_use_repeated_reflection():
    # DEVIATION: reflect pad 32 is undefined for 20-px maps; we mirror repeatedly, which is what
    # numpy's reflect mode does for large pads.
    m = _rect_mask(1, 20, 4, 15, 6, 18)
    assert torch.allclose(ConfidenceMap()(m.double()), _reference_map(m), rtol=0, atol=1e-10)


def test_separable_equals_2d_convolution():
    m = _rect_mask(2, 40, 10, 33, 5, 25)
    m[1] = torch.rand(1, 40, 40, generator=torch.Generator().manual_seed(0)).gt(0.6).float()
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        sep = ConfidenceMap(separable=True)(m.to(dtype))
        full = ConfidenceMap(separable=False)(m.to(dtype))
        assert sep.dtype == dtype
        assert torch.allclose(sep, full, rtol=0, atol=tol)


def test_map_properties_at_256():
    S = 256
    m = _rect_mask(1, S, 64, 192, 64, 192)
    M = confidence_map(m)
    hole = m.bool()
    assert torch.all(M[~hole] == 0)                       # 0 outside the hole
    assert M[hole].min() > 0 and M[hole].max() <= 1       # (0, 1] inside
    border = M[0, 0, 64, 128].item()                      # first hole row, middle column
    centre = M[0, 0, 128, 128].item()
    assert border > centre + 0.2
    # Monotone from the border to the centre along the middle column.
    column = M[0, 0, 64:129, 128]
    assert torch.all(column[1:] <= column[:-1] + 1e-7)


def test_float32_and_float64_agree():
    m = _rect_mask(2, 256, 40, 200, 70, 180)
    m[1, :, 100:150, 10:250] = 1
    M32 = ConfidenceMap()(m)
    M64 = ConfidenceMap()(m.double())
    assert M32.dtype == torch.float32 and M64.dtype == torch.float64
    assert torch.allclose(M32.double(), M64, rtol=0, atol=1e-5)


def test_kernel_buffer_follows_module_and_input():
    cm = ConfidenceMap().to(torch.float32)
    assert 'kernel_1d' in dict(cm.named_buffers())
    assert cm.kernel_1d.dtype == torch.float32
    m = _rect_mask(1, 40, 10, 30, 10, 30, dtype=torch.float64)
    assert cm(m).dtype == torch.float64  # cast to the input's dtype per call


def test_rejects_bad_masks():
    with pytest.raises(ValueError, match=r'\[B, 1, H, W\]'):
        ConfidenceMap()(torch.zeros(1, 3, 40, 40))


def test_reverse_map():
    m = _rect_mask(2, 256, 64, 192, 64, 192)
    m[1] = 0
    m[1, :, 20:120, 30:230] = 1
    M = confidence_map(m)
    R = reverse_weight_map(m, M)
    for b in range(2):
        raw = (1 - M[b]) * m[b]
        assert torch.allclose(R[b], raw / raw.max(), atol=1e-6)  # min is 0 (outside the hole)
        assert R[b].max().item() == pytest.approx(1.0) and R[b].min().item() == 0
    assert torch.all(R[~m.bool()] == 0)
    assert R[0, 0, 128, 128] > R[0, 0, 64, 128]  # centre weighs more than the border


def test_reverse_map_degenerate_holes():
    empty = torch.zeros(1, 1, 40, 40)
    full = torch.ones(1, 1, 40, 40)
    for mask, value in ((empty, 0.0), (full, 1.0)):
        R = reverse_weight_map(mask, confidence_map(mask))
        assert torch.isfinite(R).all() and torch.all(R == value)
