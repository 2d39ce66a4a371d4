"""In-memory evaluation of completed images: the one code path shared by ``test.py`` and the
periodic evaluation inside the training loop, so their numbers are computed by the same code.

Usage::

    ev = Evaluator(inception, lpips_net, metrics=("fid", "ids", "lpips", "psnr", "ssim", "l1"),
                   device=device)
    for batch in tqdm(loader):
        completed = ...                                   # [B,3,H,W] in [-1,1]
        ev.update(completed, real, buckets=ratio_labels)  # optional per-image bucket labels
        pbar.set_postfix(ev.running())
    results = ev.compute()              # {"fid": .., "u_ids": .., "p_ids": .., "lpips": .., ...}
    per_bucket = ev.compute_per_bucket()  # {"0.1-0.2": {...}, ...}

Per batch it keeps only Inception features (2048 floats per image and side) and per-image
scores, never the images, and never writes PNGs. FID compares the completed images with their
own ground truth (or with cached reference statistics given as ``fid_reference``); U-IDS/P-IDS
pair each completion with its ground truth. Per-bucket results use only the images of that
bucket on both sides. ``aggregate_repeats`` turns R repeated evaluations into mean ± std.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from common.errors import UserError
from losses import perceptual

from .fid import fid_against_stats, fid_from_features, file_sha256
from .ids import compute_ids
from .inception import load_inception
from .standins import standin_inception, standin_lpips
from .image_metrics import (SSIM_WIN_PAPER, l1, l1_mean, lpips_distance, psnr, quantize_8bit,
                            ssim, ssim_gauss11, ssim_window)

__all__ = ["Evaluator", "ALL_METRICS", "DEFAULT_METRICS", "EXTRA_METRICS", "aggregate_repeats",
           "format_mean_std", "EvaluatorError", "STD_DDOF", "METRIC_DEFINITIONS",
           "HIGHER_IS_BETTER"]

log = logging.getLogger(__name__)

#: The paper's columns (``ssim`` and ``l1`` as the authors compute them); the default list.
DEFAULT_METRICS = ("fid", "ids", "lpips", "psnr", "ssim", "l1")
#: Other common definitions, on request only (not the paper's numbers).
EXTRA_METRICS = ("ssim_gauss11", "l1_mean")
ALL_METRICS = DEFAULT_METRICS + EXTRA_METRICS
#: Result keys where a larger value is better (for all others, e.g. FID, LPIPS, L1, smaller is).
HIGHER_IS_BETTER = frozenset({"psnr", "psnr_hole", "ssim", "ssim_gauss11", "u_ids", "p_ids"})
_PIXEL_METRICS = {"psnr": psnr, "ssim": ssim, "l1": l1, "ssim_gauss11": ssim_gauss11,
                  "l1_mean": l1_mean}
#: Spread over repeats: population standard deviation (``np.std`` default), as the authors report.
STD_DDOF = 0

#: One line per metric, stored with every result (docs/evaluation.md has the full table).
METRIC_DEFINITIONS = {
    "psnr": "10 log10(1 / MSE) on [0, 1] (= data range 255 on 8-bit values), per image, "
            "averaged over images",
    "ssim": "skimage.metrics.structural_similarity(gt_u8, out_u8, channel_axis=-1, win_size=51, "
            "data_range=255): uniform 51x51 window, sample covariances, K1 0.01, K2 0.03, "
            "mean over the valid region and channels; per image, averaged over images",
    "l1": "sum|gt - out| / sum(gt + out) over all pixels and channels (8-bit values), per "
          "image, averaged over images",
    "ssim_gauss11": "Gaussian window 11x11 sigma 1.5, population covariances, data range 1, "
                    "valid region; per image, averaged",
    "l1_mean": "mean |gt - out| on [0, 1] over all pixels and channels; per image, averaged",
    "lpips": "LPIPS v0.1 VGG on [-1, 1]; per image, averaged",
    "fid": "Frechet distance of 2048-d Inception pool features, covariances with N-1",
    "ids": "U-IDS / P-IDS: linear SVM on the same features (CoModGAN)",
}


class EvaluatorError(UserError, ValueError):
    """An evaluation that cannot run as configured (missing network, bad input images)."""


def _check_images(name: str, x: torch.Tensor):
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise EvaluatorError(f"{name} must be a float tensor [B,3,H,W] in [-1,1], got {shape}")
    if not torch.isfinite(x).all():
        raise EvaluatorError(f"{name} contains NaN or Inf values")
    lo, hi = float(x.min()), float(x.max())
    # Small overshoot (generator outputs) is clamped; anything larger is a wrong convention.
    if lo < -1.5 or hi > 1.5:
        raise EvaluatorError(
            f"{name} has values in [{lo:.3g}, {hi:.3g}]; images must be in [-1, 1] "
            f"(convert 8-bit images with x / 127.5 - 1)")


class Evaluator:
    """Accumulates features and per-image scores batch by batch; ``compute`` gives the metrics.

    Args:
        inception: a loaded ``FIDInceptionV3`` (needed for "fid" and "ids").
        lpips: a loaded ``lpips.LPIPS`` (needed for "lpips"), e.g. from
            ``losses.perceptual.load_lpips``.
        metrics: any of ``ALL_METRICS`` (default: ``DEFAULT_METRICS``, the paper's columns);
            "ids" yields both ``u_ids`` and ``p_ids``.
        device: where the networks run (inputs are moved there).
        fid_reference: optional ``(mu, sigma)`` of a real image set (e.g. from the
            ``ReferenceStatsCache``); FID is then measured against it instead of against the
            ground truth of the evaluated images.
        quantize: round both images to 8-bit levels before every metric, so in-memory numbers
            equal those computed from saved PNG files.
        feature_batch: Inception forward chunk size (memory bound at 299x299).
    """

    def __init__(self, inception: Optional[torch.nn.Module] = None,
                 lpips: Optional[torch.nn.Module] = None,
                 metrics: Iterable[str] = DEFAULT_METRICS, device="cpu", *,
                 fid_reference: Optional[Tuple[np.ndarray, np.ndarray]] = None,
                 quantize: bool = True, feature_batch: int = 32):
        self.metrics = tuple(dict.fromkeys(metrics))
        unknown = [m for m in self.metrics if m not in ALL_METRICS]
        if unknown:
            raise EvaluatorError(f"unknown metric(s) {unknown}; choose from {ALL_METRICS}")
        if ("fid" in self.metrics or "ids" in self.metrics) and inception is None:
            raise EvaluatorError(
                "metrics 'fid'/'ids' need the FID Inception network: pass inception= "
                "(metrics.load_inception) or drop them from the metric list")
        if "lpips" in self.metrics and lpips is None:
            raise EvaluatorError(
                "metric 'lpips' needs an LPIPS network: pass lpips= "
                "(losses.perceptual.load_lpips) or drop it from the metric list")
        self.device = torch.device(device)
        self.inception = inception.to(self.device).eval() if inception is not None else None
        self.lpips = lpips.to(self.device).eval() if lpips is not None else None
        if fid_reference is not None:
            mu, sigma = fid_reference
            fid_reference = (np.asarray(mu, np.float64), np.asarray(sigma, np.float64))
        self.fid_reference = fid_reference
        self.quantize = quantize
        self.feature_batch = int(feature_batch)
        self.ssim_windows = set()  # window sides the paper SSIM used (51 unless images < 51 px)
        self.random_standins: Tuple[str, ...] = ()   # set by from_files
        self.reset()

    # ---------------------------------------------------------------------------------------
    @property
    def _need_fake_features(self) -> bool:
        return "fid" in self.metrics or "ids" in self.metrics

    @property
    def _need_real_features(self) -> bool:
        return "ids" in self.metrics or ("fid" in self.metrics and self.fid_reference is None)

    def reset(self):
        self._fake_feats = []     # list of float32 CPU tensors [b, 2048]
        self._real_feats = []
        self._scores = {m: [] for m in self.metrics if m in _PIXEL_METRICS or m == "lpips"}
        self._buckets = []        # one label (str) or None per image

    @property
    def n(self) -> int:
        return len(self._buckets)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for chunk in images.split(self.feature_batch):
                out.append(self.inception(chunk).to("cpu", torch.float32))
        return torch.cat(out)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().to(self.device, torch.float32).clamp(-1, 1)
        return quantize_8bit(x) if self.quantize else x

    def real_features(self, real: torch.Tensor) -> Optional[torch.Tensor]:
        """Inception features of ground-truth images as :meth:`update` computes them, or None when
        no metric needs them. Pass them back as ``update(..., real_features=)`` to reuse them
        for the same images (another repeat or mask bucket) instead of running Inception again."""
        if not self._need_real_features:
            return None
        _check_images("real", real)
        return self._features(self._prepare(real))

    def update(self, completed: torch.Tensor, real: torch.Tensor,
               buckets: Union[None, str, int, float, Sequence] = None, *,
               real_features: Optional[torch.Tensor] = None) -> None:
        """Add a batch: ``completed`` and ``real`` [B,3,H,W] in [-1,1], paired by index.

        ``buckets``: None, one label for the whole batch, or one label per image (e.g. the
        mask-ratio bucket "0.2-0.3"); labels are stored as strings.
        ``real_features``: :meth:`real_features` of this ``real``, computed earlier (optional).
        """
        _check_images("completed", completed)
        _check_images("real", real)
        if completed.shape != real.shape:
            raise EvaluatorError(f"completed {tuple(completed.shape)} and real "
                                 f"{tuple(real.shape)} must have the same shape")
        b = completed.shape[0]
        if buckets is None or isinstance(buckets, (str, int, float)):
            labels = [None if buckets is None else str(buckets)] * b
        else:
            labels = [None if x is None else str(x) for x in buckets]
            if len(labels) != b:
                raise EvaluatorError(f"got {len(labels)} bucket labels for {b} images")

        fake, gt = self._prepare(completed), self._prepare(real)
        if "ssim" in self._scores:
            win = ssim_window(*fake.shape[-2:])
            if win != SSIM_WIN_PAPER and win not in self.ssim_windows:
                log.warning("SSIM: %dx%d images cannot hold the paper's 51x51 window; using "
                            "%dx%d (not comparable with the paper's SSIM).",
                            fake.shape[-2], fake.shape[-1], win, win)
            self.ssim_windows.add(win)
        with torch.no_grad():
            for name, fn in _PIXEL_METRICS.items():
                if name in self._scores:
                    self._scores[name].append(fn(fake, gt).cpu())
            if "lpips" in self._scores:
                self._scores["lpips"].append(lpips_distance(self.lpips, fake, gt).cpu())
        if self._need_fake_features:
            self._fake_feats.append(self._features(fake))
        if self._need_real_features:
            if real_features is None:
                real_features = self._features(gt)
            elif tuple(real_features.shape[:1]) != (b,):
                raise EvaluatorError(f"real_features has {real_features.shape[0]} rows for {b} images")
            self._real_feats.append(real_features.to("cpu", torch.float32))
        self._buckets.extend(labels)

    # ---------------------------------------------------------------------------------------
    def running(self) -> Dict[str, float]:
        """Running means of the per-image scores (cheap; for a tqdm postfix)."""
        out = {}
        for name, vals in self._scores.items():
            if vals:
                out[name] = float(torch.cat(vals).mean())
        return out

    def per_image(self) -> Dict[str, np.ndarray]:
        """Per-image scores (float64 arrays [N]) and bucket labels, in update order."""
        out = {name: torch.cat(v).numpy() if v else np.zeros(0)
               for name, v in self._scores.items()}
        out["bucket"] = np.array(self._buckets, dtype=object)
        return out

    def _compute(self, index: Optional[np.ndarray]) -> Dict[str, float]:
        n = self.n if index is None else int(index.size)
        res: Dict[str, float] = {"n_images": float(n)}
        for name, vals in self._scores.items():
            v = torch.cat(vals).numpy() if vals else np.zeros(0)
            if index is not None:
                v = v[index]
            res[name] = float(np.mean(v)) if v.size else math.nan
        if not self._need_fake_features:
            return res
        fake = torch.cat(self._fake_feats).numpy() if self._fake_feats else np.zeros((0, 2048))
        real = torch.cat(self._real_feats).numpy() if self._real_feats else None
        if index is not None:
            fake = fake[index]
            real = real[index] if real is not None else None
        if "fid" in self.metrics:
            if n < 2:
                res["fid"] = math.nan   # a covariance needs two images
            else:
                if self.fid_reference is not None:
                    res["fid"] = fid_against_stats(fake, *self.fid_reference)
                else:
                    res["fid"] = fid_from_features(fake, real)
        if "ids" in self.metrics:
            if n < 2:
                res["u_ids"] = res["p_ids"] = math.nan
            else:
                res["u_ids"], res["p_ids"] = compute_ids(real, fake)
        return res

    def compute(self) -> Dict[str, float]:
        """All requested metrics over every image seen (plus ``n_images``), as floats.

        Scores that need two or more images (FID, U-IDS, P-IDS) are NaN with fewer.
        """
        if self.n == 0:
            raise EvaluatorError("Evaluator.compute() called before any update()")
        return self._compute(None)

    def compute_per_bucket(self) -> Dict[str, Dict[str, float]]:
        """``{label: metrics}`` for every bucket label seen (unlabelled images are skipped)."""
        labels = np.array(self._buckets, dtype=object)
        out = {}
        for label in dict.fromkeys(b for b in self._buckets if b is not None):
            out[label] = self._compute(np.flatnonzero(labels == label))
        return out

    # ---------------------------------------------------------------------------------------
    def state(self) -> dict:
        """Plain, picklable accumulated state (e.g. for ``all_gather_object`` across ranks)."""
        return {
            "fake_feats": torch.cat(self._fake_feats) if self._fake_feats else None,
            "real_feats": torch.cat(self._real_feats) if self._real_feats else None,
            "scores": {k: torch.cat(v) if v else None for k, v in self._scores.items()},
            "buckets": list(self._buckets),
        }

    def merge(self, other: Union["Evaluator", dict]) -> "Evaluator":
        """Append another evaluator's images (or its ``state()``) after ours."""
        st = other.state() if isinstance(other, Evaluator) else other
        if set(st["scores"]) != set(self._scores):
            raise EvaluatorError("cannot merge evaluators with different metric lists")
        if st["fake_feats"] is not None:
            self._fake_feats.append(st["fake_feats"])
        if st["real_feats"] is not None:
            self._real_feats.append(st["real_feats"])
        for k, v in st["scores"].items():
            if v is not None:
                self._scores[k].append(v)
        self._buckets.extend(st["buckets"])
        return self

    def protocol(self) -> dict:
        """How the numbers were computed, to store beside them in every result file."""
        inc = self.inception
        return {
            "metrics": list(self.metrics),
            "quantize_8bit": self.quantize,
            "inception_weights": getattr(inc, "weights_path", None),
            "inception_sha256": getattr(inc, "weights_sha256", None),
            "inception_preprocessing": getattr(inc, "preprocessing", None),
            "fid_reference": "given statistics" if self.fid_reference is not None
            else "ground truth of the evaluated images",
            "lpips": "lpips 0.1.4, vgg, v0.1" if self.lpips is not None else None,
            "lpips_vgg_sha256": getattr(self.lpips, "weights_sha256", None),
            "pixel_range": "8-bit values for ssim (0-255) and l1 (scale-free ratio); [0,1] for "
                           "psnr, ssim_gauss11 and l1_mean; [-1,1] for lpips",
            "definitions": {m: METRIC_DEFINITIONS[m] for m in self.metrics},
            "ssim_window": sorted(self.ssim_windows) if "ssim" in self.metrics else None,
        }

    @classmethod
    def from_files(cls, metrics: Iterable[str] = DEFAULT_METRICS, device="cpu", *,
                   inception_path: Optional[str] = None, lpips_vgg_path: Optional[str] = None,
                   allow_random: bool = False, seed: int = 0, resize: str = "pytorch_fid",
                   inception_config_key: str = "pretrained.inception", **kwargs) -> "Evaluator":
        """Load the networks the metric list needs from local files and build an Evaluator.

        ``allow_random`` (demo/tests only) builds the seeded random stand-ins of
        ``metrics/standins.py`` (from ``seed``) when a path is None; the numbers are then
        meaningless, a warning is logged and ``random_standins`` names them.
        """
        metrics = tuple(metrics)
        inception = lp = None
        random_used = []
        if "fid" in metrics or "ids" in metrics:
            if inception_path is None and allow_random:
                log.warning("FID/IDS use a RANDOMLY INITIALISED Inception (allow_random): the "
                            "numbers are meaningless; set %s for real evaluation.",
                            inception_config_key)
                inception = standin_inception(seed, resize)
                random_used.append("FID Inception")
            else:
                inception = load_inception(inception_path, device, resize=resize,
                                           config_key=inception_config_key)
        if "lpips" in metrics:
            if lpips_vgg_path is None and allow_random:
                lp = standin_lpips(seed, device)
                random_used.append("LPIPS VGG16")
            else:
                lp = perceptual.load_lpips(lpips_vgg_path, allow_random_backbone=False, device=device)
                lp.weights_sha256 = file_sha256(lpips_vgg_path)     # for protocol()
        ev = cls(inception, lp, metrics, device, **kwargs)
        ev.random_standins = tuple(random_used)
        return ev


# ------------------------------------------------------------------------------------------------
# Repeats
# ------------------------------------------------------------------------------------------------

def aggregate_repeats(results: Sequence[Mapping]) -> dict:
    """Mean ± std over R repeated evaluations (e.g. different mask / exemplar seeds).

    ``results`` are dicts as returned by ``compute()`` (or nested ones, e.g. per bucket).
    Each numeric key becomes ``{"mean", "std", "n", "values"}`` over the repeats that have it;
    ``std`` is the population standard deviation (``np.std`` with ddof = ``STD_DDOF`` = 0, as the
    authors report it), 0.0 for a single repeat. Nested dicts are aggregated recursively;
    non-numeric values are skipped.
    """
    if not results:
        raise ValueError("aggregate_repeats needs at least one result")
    keys = list(dict.fromkeys(k for r in results for k in r))
    out = {}
    for k in keys:
        vals = [r[k] for r in results if k in r]
        if all(isinstance(v, Mapping) for v in vals):
            out[k] = aggregate_repeats(vals)
        elif all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                 for v in vals):
            arr = np.asarray(vals, dtype=np.float64)
            with np.errstate(invalid="ignore"):
                std = float(np.std(arr, ddof=STD_DDOF))
            out[k] = {"mean": float(np.mean(arr)), "std": std, "n": int(len(arr)),
                      "values": [float(v) for v in arr]}
    return out


def format_mean_std(stat: Mapping, digits: int = 4) -> str:
    """"12.3456 ± 0.1234" for one aggregated entry (the CSV / table form)."""
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
