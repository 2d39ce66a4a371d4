"""Fréchet distance and feature statistics against direct numpy/scipy computations, and the
reference-statistics cache."""
import numpy as np
import pytest

from metrics.fid import (FeatureStats, FrechetDistanceError, ReferenceStatsCache,
                         feature_stats, fid_against_stats, fid_from_features, frechet_distance,
                         reference_stats_key)


def _sqrt_psd(a):
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _direct_fid(x, y):
    """Independent route: tr((S1 S2)^1/2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)) (symmetric PSD)."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    r1 = _sqrt_psd(s1)
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def test_frechet_matches_direct_computation():
    rng = np.random.default_rng(0)
    d = 24
    a = rng.standard_normal((d, d))
    x = rng.standard_normal((400, d))
    y = rng.standard_normal((300, d)) @ (a / np.sqrt(d)) + 0.5
    ours = fid_from_features(x, y)
    assert ours == pytest.approx(_direct_fid(x, y), rel=1e-9)
    assert ours > 1.0


def test_frechet_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()   # = 5 + 6
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected)
    assert expected == pytest.approx(11.0)


def test_fid_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 64)) * 3 + 1
    assert abs(fid_from_features(x, x)) < 1e-8
    # Fewer samples than dimensions: singular covariance, still ~0 relative to its scale on
    # the standard sqrtm route, and exactly 0 (to round-off) on the low-rank route.
    x = np.abs(rng.standard_normal((10, 256)))
    _, s = feature_stats(x)
    assert abs(fid_from_features(x, x, method="sqrtm")) < 1e-4 * np.trace(s)
    assert abs(fid_from_features(x, x, method="lowrank")) < 1e-9 * np.trace(s)


@pytest.mark.parametrize("n1,n2,d", [(300, 200, 16), (12, 9, 40)])
def test_lowrank_route_equals_sqrtm_route(n1, n2, d):
    rng = np.random.default_rng(n1)
    x = rng.standard_normal((n1, d)) @ rng.standard_normal((d, d)) * 0.3 + 0.2
    y = np.abs(rng.standard_normal((n2, d))) * 2
    ref = fid_from_features(x, y, method="sqrtm")
    assert fid_from_features(x, y, method="lowrank") == pytest.approx(ref, rel=1e-5)
    assert fid_from_features(x, y) == pytest.approx(ref, rel=1e-5)        # auto
    mu, sigma = feature_stats(y)
    assert fid_against_stats(x, mu, sigma, method="lowrank") == pytest.approx(ref, rel=1e-5)
    assert fid_against_stats(x, mu, sigma, method="sqrtm") == pytest.approx(ref, rel=1e-5)
    if n1 > d:                                                            # full rank
        assert ref == pytest.approx(_direct_fid(x, y), rel=1e-9)


def test_non_finite_sqrtm_retries_with_eps_offset(monkeypatch):
    """When sqrtm(S1 S2) comes back non-finite (large singular products do, numerically),
    the distance is recomputed from (S1 + eps I)(S2 + eps I)."""
    import scipy.linalg
    real_sqrtm = scipy.linalg.sqrtm
    seen = []

    def flaky_sqrtm(a):
        seen.append(a.copy())
        return np.full_like(a, np.inf) if len(seen) == 1 else real_sqrtm(a)

    monkeypatch.setattr(scipy.linalg, "sqrtm", flaky_sqrtm)
    s1, s2 = np.diag([1.0, 0.0]), np.diag([4.0, 1.0])
    eps = 1e-3
    fid = frechet_distance(np.zeros(2), s1, np.zeros(2), s2, eps=eps)
    assert len(seen) == 2
    np.testing.assert_allclose(seen[1], (s1 + eps * np.eye(2)) @ (s2 + eps * np.eye(2)))
    expected = 5.0 + 1.0 - 2 * (np.sqrt((1 + eps) * (4 + eps)) + np.sqrt(eps * (1 + eps)))
    assert fid == pytest.approx(expected, rel=1e-9)


def test_invalid_covariance_is_an_error():
    # A covariance with a negative eigenvalue gives a large imaginary square root.
    with pytest.raises(FrechetDistanceError, match="imaginary"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(FrechetDistanceError):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_feature_stats_batched_equal_numpy_even_with_large_offset():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((257, 16)) + 1e4      # large mean: naive sum-of-squares loses it
    stats = FeatureStats()
    for chunk in np.array_split(x, 7):
        stats.update(chunk.astype(np.float64))
    np.testing.assert_allclose(stats.mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(x, rowvar=False), rtol=1e-7, atol=1e-9)
    # Merging two halves gives the same statistics as one pass.
    a, b = FeatureStats().update(x[:100]), FeatureStats().update(x[100:])
    a.merge(b)
    np.testing.assert_allclose(a.sigma, stats.sigma, rtol=1e-9, atol=1e-12)
    assert a.n == 257


def test_cache_key_and_round_trip(tmp_path):
    cache = ReferenceStatsCache(str(tmp_path / "cache"))
    base = dict(dataset="celebahq_test", weights_sha256="ab" * 32, n_images=20,
                preprocessing="pytorch_fid+uint8@299", resolution=256)
    key = reference_stats_key(**base)
    paths = {cache.path_for(key)}
    for field, value in [("dataset", "ffhq_test"), ("weights_sha256", "cd" * 32),
                         ("n_images", 21), ("preprocessing", "tf1+uint8@299"),
                         ("resolution", 512)]:
        paths.add(cache.path_for(reference_stats_key(**{**base, field: value})))
    assert len(paths) == 6                          # every field changes the file

    rng = np.random.default_rng(3)
    feats = rng.standard_normal((20, 8))
    calls = []

    def compute():
        calls.append(1)
        return feats

    first = cache.get_or_compute(key, compute, keep_features=True)
    second = cache.get_or_compute(key, compute, keep_features=True)
    assert len(calls) == 1                          # second call served from the file
    np.testing.assert_allclose(second["mu"], feats.mean(0))
    np.testing.assert_allclose(second["sigma"], np.cov(feats, rowvar=False))
    np.testing.assert_allclose(second["features"], feats, rtol=1e-6)
    assert first["n"] == second["n"] == 20
    # A file whose stored key differs (stale / foreign) is not used.
    other = reference_stats_key(**{**base, "n_images": 99})
    import shutil
    shutil.copy(cache.path_for(key), cache.path_for(other))
    assert cache.load(other) is None
    with pytest.raises(ValueError, match="99 images"):
        cache.get_or_compute(other, compute)


def test_dataset_path_is_normalised(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    k1 = reference_stats_key(str(d), "x", 1, "p", 64)
    k2 = reference_stats_key(str(d) + "/./", "x", 1, "p", 64)
    assert k1 == k2 and k1["dataset"] == str(d)
