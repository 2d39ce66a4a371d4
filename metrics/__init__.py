"""Evaluation metrics of EXE-GAN (paper section 4): FID, U-IDS/P-IDS, LPIPS, PSNR, SSIM and L1
(SSIM and L1 as the authors' evaluation code defines them), computed in memory by one
``Evaluator`` shared by test.py and the training loop. See docs/evaluation.md for definitions,
data ranges and the weight files.
"""
from .evaluator import (ALL_METRICS, DEFAULT_METRICS, EXTRA_METRICS, STD_DDOF, Evaluator,
                        EvaluatorError, aggregate_repeats, format_mean_std)
from .fid import (FeatureStats, FrechetDistanceError, ReferenceStatsCache, feature_stats,
                  fid_against_stats, fid_from_features, file_sha256, frechet_distance,
                  reference_stats_key)
from .ids import IDSWarning, compute_ids
from .image_metrics import (l1, l1_mean, lpips_distance, psnr, quantize_8bit, ssim, ssim_gauss11,
                            to_unit)
from .inception import (STANDARD_WEIGHTS_NAME, FIDInceptionV3, InceptionWeightsError,
                        load_inception)

__all__ = [
    "Evaluator", "EvaluatorError", "ALL_METRICS", "DEFAULT_METRICS", "EXTRA_METRICS", "STD_DDOF",
    "aggregate_repeats", "format_mean_std",
    "FeatureStats", "feature_stats", "frechet_distance", "fid_from_features",
    "fid_against_stats",
    "FrechetDistanceError", "ReferenceStatsCache", "reference_stats_key", "file_sha256",
    "compute_ids", "IDSWarning",
    "psnr", "ssim", "l1", "ssim_gauss11", "l1_mean", "lpips_distance", "to_unit", "quantize_8bit",
    "FIDInceptionV3", "load_inception", "InceptionWeightsError", "STANDARD_WEIGHTS_NAME",
]
