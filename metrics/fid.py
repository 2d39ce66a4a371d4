"""Fréchet Inception Distance: feature statistics, the distance, and a reference-stats cache.

FID (Heusel et al. 2017), as reported in the paper's tables, is the
Fréchet distance between two Gaussians fitted to Inception pool features:

    FID = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2))

Statistics are accumulated in float64, batch by batch (Chan et al.'s pairwise update, so no
large raw second moments are subtracted), with the unbiased covariance (divide by n - 1),
as numpy's ``np.cov`` and every common FID implementation do.

Reference statistics of a real image set are expensive (one Inception pass over thousands of
images), so they can be cached in an ``.npz`` whose key covers everything that changes them:
the dataset (path or name), the weights file's SHA-256, the number of images, the
preprocessing (resize mode, quantisation) and the image resolution.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from typing import Callable, Optional, Tuple

import numpy as np
import scipy.linalg
import torch

__all__ = [
    "FeatureStats",
    "FrechetDistanceError",
    "feature_stats",
    "frechet_distance",
    "fid_from_features",
    "fid_against_stats",
    "file_sha256",
    "reference_stats_key",
    "ReferenceStatsCache",
]


class FrechetDistanceError(ValueError):
    """The Fréchet distance cannot be computed reliably from the given statistics."""


def _as_float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


class FeatureStats:
    """Running mean and covariance of feature vectors, in float64.

    ``update(features [B, D])`` any number of times, then ``mu`` [D] and ``sigma`` [D, D].
    Two accumulators over disjoint sets combine exactly with ``merge`` (e.g. across ranks).
    """

    def __init__(self, dim: Optional[int] = None):
        self.dim = dim
        self.n = 0
        self._mean = None   # [D]
        self._m2 = None     # [D, D] sum of outer products of deviations from the mean

    def update(self, features) -> "FeatureStats":
        x = _as_float64(features)
        if x.ndim != 2:
            raise ValueError(f"features must be [B, D], got shape {x.shape}")
        if self.dim is None:
            self.dim = x.shape[1]
        if x.shape[1] != self.dim:
            raise ValueError(f"feature dimension {x.shape[1]} != {self.dim}")
        if x.shape[0] == 0:
            return self
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN or Inf")
        n_b = x.shape[0]
        mean_b = x.mean(axis=0)
        dev = x - mean_b
        m2_b = dev.T @ dev
        self._combine(n_b, mean_b, m2_b)
        return self

    def _combine(self, n_b, mean_b, m2_b):
        if self.n == 0:
            self.n, self._mean, self._m2 = n_b, mean_b.copy(), m2_b.copy()
            return
        n = self.n + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (self.n * n_b / n)
        self.n = n

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        if other.n:
            if self.dim is not None and other.dim != self.dim:
                raise ValueError(f"feature dimension {other.dim} != {self.dim}")
            self.dim = other.dim
            self._combine(other.n, other._mean, other._m2)
        return self

    @property
    def mu(self) -> np.ndarray:
        if self.n < 1:
            raise ValueError("no features accumulated")
        return self._mean.copy()

    @property
    def sigma(self) -> np.ndarray:
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.n}")
        return self._m2 / (self.n - 1)


def feature_stats(features) -> Tuple[np.ndarray, np.ndarray]:
    """(mu [D], sigma [D, D]) of a [N, D] feature matrix, float64."""
    s = FeatureStats().update(features)
    return s.mu, s.sigma


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6,
                     imag_tol: float = 1e-3) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``sqrtm(sigma1 @ sigma2)`` is computed with scipy. When it is not finite (singular
    product, e.g. fewer samples than dimensions), both covariances get ``eps * I`` added and it
    is recomputed. Round-off gives the square root a small imaginary part; it is dropped when
    the largest imaginary component on the diagonal is below ``imag_tol`` (relative to the
    diagonal's size, floor 1) and is an error otherwise (the statistics are then not
    trustworthy).
    """
    mu1, mu2 = np.atleast_1d(_as_float64(mu1)), np.atleast_1d(_as_float64(mu2))
    sigma1, sigma2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    if mu1.shape != mu2.shape:
        raise FrechetDistanceError(f"mean vectors differ in shape: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise FrechetDistanceError(
            f"covariances {sigma1.shape}, {sigma2.shape} do not match the means {mu1.shape}")
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise FrechetDistanceError(f"{name} contains NaN or Inf")

    diff = mu1 - mu2
    with warnings.catch_warnings():
        # scipy warns about singular products; we detect and repair them below.
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
        if not np.isfinite(covmean).all():
            raise FrechetDistanceError(
                "sqrtm(sigma1 @ sigma2) is not finite even after adding eps * I; the "
                "statistics are degenerate (too few images?)")
    if np.iscomplexobj(covmean):
        # DEVIATION: pytorch-fid's tolerance is absolute (1e-3); ours is relative to the size
        # of the diagonal (floor 1), so that features on a larger scale (other networks,
        # random test weights) are judged alike. For Inception pool features (order 1) the
        # two agree.
        max_imag = float(np.max(np.abs(np.diagonal(covmean).imag)))
        scale = max(1.0, float(np.max(np.abs(np.diagonal(covmean).real))))
        if max_imag > imag_tol * scale:
            raise FrechetDistanceError(
                f"sqrtm(sigma1 @ sigma2) has an imaginary component {max_imag:.3g} > "
                f"{imag_tol} x {scale:.3g}; the covariances are not valid (too few images or "
                "corrupted statistics)")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _centred_factor(features) -> Tuple[np.ndarray, np.ndarray]:
    """(mu [D], A [N, D]) with A^T A = the unbiased covariance of ``features``."""
    x = _as_float64(features)
    if x.ndim != 2 or x.shape[0] < 2:
        raise FrechetDistanceError(f"need a [N >= 2, D] feature matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise FrechetDistanceError("features contain NaN or Inf")
    mu = x.mean(axis=0)
    return mu, (x - mu) / np.sqrt(x.shape[0] - 1)


def _resolve_method(method: str, n: int, d: int) -> str:
    if method not in ("auto", "sqrtm", "lowrank"):
        raise ValueError(f"method must be 'auto', 'sqrtm' or 'lowrank', got {method!r}")
    if method == "auto":
        return "lowrank" if n < d else "sqrtm"
    return method


def fid_from_features(features1, features2, method: str = "auto", **kwargs) -> float:
    """FID between two [N, D] feature sets.

    ``method="sqrtm"`` fits (mu, sigma) to both and calls ``frechet_distance`` (the standard
    route). ``method="lowrank"`` uses the exact identity, with A^T A = S_1 and B^T B = S_2
    built from the centred features,

        tr((S_1 S_2)^(1/2)) = sum of singular values of A B^T      (an N_1 x N_2 matrix),

    which needs no square root of a non-symmetric (and, for N < D, singular) D x D matrix.
    DEVIATION: ``"auto"`` (default) takes the low-rank route when a set has fewer images than
    feature dimensions. That is where ``sqrtm`` is slowest (minutes for D = 2048 on a laptop)
    and least accurate (singular product, the ``eps`` offset); both routes give the same value
    up to round-off (tested), and full-size evaluations (N >= 2048) use ``sqrtm`` as
    pytorch-fid does.
    """
    x1, x2 = _as_float64(features1), _as_float64(features2)
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
        raise FrechetDistanceError(f"feature sets must be [N, D] with equal D, got {x1.shape} "
                                   f"and {x2.shape}")
    if _resolve_method(method, min(x1.shape[0], x2.shape[0]), x1.shape[1]) == "sqrtm":
        mu1, s1 = feature_stats(x1)
        mu2, s2 = feature_stats(x2)
        return frechet_distance(mu1, s1, mu2, s2, **kwargs)
    mu1, a = _centred_factor(x1)
    mu2, b = _centred_factor(x2)
    diff = mu1 - mu2
    nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    return float(diff.dot(diff) + (a * a).sum() + (b * b).sum() - 2.0 * nuclear)


def fid_against_stats(features, mu, sigma, method: str = "auto", **kwargs) -> float:
    """FID between [N, D] features and given reference statistics (mu [D], sigma [D, D]).

    The low-rank route (``"auto"`` when N < D; see ``fid_from_features``) uses
    tr((A^T A S)^(1/2)) = sum sqrt(eig(A S A^T)), an N x N symmetric PSD matrix.
    """
    x = _as_float64(features)
    mu, sigma = _as_float64(mu), _as_float64(sigma)
    if x.ndim != 2 or mu.shape != (x.shape[1],) or sigma.shape != (x.shape[1],) * 2:
        raise FrechetDistanceError(f"features {x.shape} do not match reference statistics "
                                   f"{mu.shape}, {sigma.shape}")
    if _resolve_method(method, x.shape[0], x.shape[1]) == "sqrtm":
        mu1, s1 = feature_stats(x)
        return frechet_distance(mu1, s1, mu, sigma, **kwargs)
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise FrechetDistanceError("reference statistics contain NaN or Inf")
    mu1, a = _centred_factor(x)
    m = a @ sigma @ a.T
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    scale = max(1.0, float(np.abs(eig).max()))
    if eig.min() < -1e-6 * scale:
        raise FrechetDistanceError(
            "the reference covariance is not positive semi-definite (corrupted statistics?)")
    diff = mu1 - mu
    return float(diff.dot(diff) + (a * a).sum() + np.trace(sigma)
                 - 2.0 * np.sqrt(np.clip(eig, 0.0, None)).sum())


# --------------------------------------------------------------------------------------------
# Reference-statistics cache
# --------------------------------------------------------------------------------------------

def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (weights hashes for cache keys and protocol records)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _dataset_id(dataset: str) -> str:
    # A path is identified by its absolute, normalised form; anything else is a name.
    return os.path.abspath(dataset) if os.path.exists(dataset) else str(dataset)


def reference_stats_key(dataset: str, weights_sha256: str, n_images: int,
                        preprocessing: str, resolution: int) -> dict:
    """Every field that changes reference statistics, as a plain (JSON-safe) dict."""
    return {
        "dataset": _dataset_id(dataset),
        "weights_sha256": str(weights_sha256),
        "n_images": int(n_images),
        "preprocessing": str(preprocessing),
        "resolution": int(resolution),
    }


class ReferenceStatsCache:
    """Reference (mu, sigma) [+ optional features] of real image sets, one ``.npz`` per key.

    The file name is readable (dataset name, resolution, count) plus a digest of the full key;
    the key itself is stored inside and checked on load, so a stale or foreign file is never
    used silently. Files are written atomically (temp file + rename).
    """

    def __init__(self, cache_dir: str):
        self.cache_dir = cache_dir

    def path_for(self, key: dict) -> str:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(key["dataset"].rstrip("/\\"))
                      or "dataset")
        return os.path.join(
            self.cache_dir, f"{name}_{key['resolution']}px_{key['n_images']}img_{digest}.npz")

    def load(self, key: dict) -> Optional[dict]:
        """{'mu', 'sigma', 'n', ['features']} for ``key``, or None when not cached."""
        path = self.path_for(key)
        if not os.path.isfile(path):
            return None
        with np.load(path, allow_pickle=False) as data:
            stored = json.loads(str(data["key"]))
            if stored != key:
                return None
            out = {"mu": data["mu"], "sigma": data["sigma"], "n": int(data["n"])}
            if "features" in data.files:
                out["features"] = data["features"]
        return out

    def save(self, key: dict, mu, sigma, n: int, features=None) -> str:
        os.makedirs(self.cache_dir, exist_ok=True)
        path = self.path_for(key)
        arrays = {"mu": _as_float64(mu), "sigma": _as_float64(sigma), "n": np.int64(n),
                  "key": np.array(json.dumps(key, sort_keys=True))}
        if features is not None:
            arrays["features"] = np.asarray(_as_float64(features), dtype=np.float32)
        fd, tmp = tempfile.mkstemp(suffix=".npz", dir=self.cache_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        return path

    def get_or_compute(self, key: dict, compute: Callable[[], np.ndarray],
                       keep_features: bool = False) -> dict:
        """Cached stats for ``key``; on a miss ``compute()`` returns the [N, D] features."""
        hit = self.load(key)
        if hit is not None and (not keep_features or "features" in hit):
            return hit
        features = _as_float64(compute())
        if features.shape[0] != key["n_images"]:
            raise ValueError(
                f"computed {features.shape[0]} feature vectors, the cache key says "
                f"{key['n_images']} images")
        mu, sigma = feature_stats(features)
        self.save(key, mu, sigma, features.shape[0], features if keep_features else None)
        return self.load(key)
