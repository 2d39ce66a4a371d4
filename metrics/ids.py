"""U-IDS and P-IDS (Unpaired / Paired Inception Discriminative Score), as CoModGAN defines them.

Zhao et al. (CoModGAN, ICLR 2021) fit a linear SVM that tells real Inception features from
those of completed images; the EXE-GAN paper reports both scores with the same recipe (and
MAT uses it too):

* a ``sklearn.svm.LinearSVC(dual=False)`` (default C = 1, squared hinge, L2 penalty) trained
  on real features (label 1) and completed features (label 0);
* **U-IDS** = the SVM's error rate on its own training set (real + completed), i.e.
  ``1 - accuracy``. 0.5 means the completions are indistinguishable from real images;
* **P-IDS** = the fraction of pairs (real_i, completed_i) — completion i is made from real
  image i — where the completed image's decision value exceeds its real one's. 0.5 is the
  ideal; 0 means every completion looks less real than its own ground truth.

Sample-size caveat: the SVM is linear in D = 2048 dimensions, so with N ≲ D images per side it
can separate *any* two sets perfectly, giving U-IDS = 0 and P-IDS ~ 0 whatever the quality.
The scores mean something only with N well above D (the papers use the full test sets:
thousands of images); numbers from different N are not comparable. ``compute_ids`` warns when
N < 2 * D.
"""
from __future__ import annotations

import warnings
from typing import Tuple

import numpy as np
import torch

__all__ = ["compute_ids", "IDSWarning"]


class IDSWarning(UserWarning):
    """U-IDS / P-IDS computed from too few samples to mean much."""


def _as_array(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def compute_ids(real_features, fake_features, *, C: float = 1.0,
                max_iter: int = 1000) -> Tuple[float, float]:
    """(U-IDS, P-IDS) from paired feature sets [N, D]; row i of each comes from image i."""
    # scikit-learn takes ~2 s to import and only U-IDS / P-IDS need it (both lines)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC  # (see above: heavy, U-IDS / P-IDS only)

    real, fake = _as_array(real_features), _as_array(fake_features)
    if real.ndim != 2 or real.shape != fake.shape:
        raise ValueError(
            f"U-IDS/P-IDS need paired features of equal shape [N, D]; got {real.shape} and "
            f"{fake.shape}")
    n, d = real.shape
    if n < 2:
        raise ValueError(f"U-IDS/P-IDS need at least 2 pairs, got {n}")
    if n < 2 * d:
        warnings.warn(
            f"U-IDS/P-IDS from {n} pairs of {d}-d features: a linear SVM separates so few "
            "samples trivially (U-IDS -> 0); use thousands of images for reportable numbers",
            IDSWarning, stacklevel=2)

    inputs = np.concatenate([real, fake])
    targets = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    svm = LinearSVC(dual=False, C=C, max_iter=max_iter)
    with warnings.catch_warnings():
        # liblinear's primal solver may stop at max_iter on separable data; the scores are
        # still those the reference recipe reports.
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm.fit(inputs, targets)
    u_ids = 1.0 - float(svm.score(inputs, targets))
    real_out = svm.decision_function(real)
    fake_out = svm.decision_function(fake)
    p_ids = float(np.mean(fake_out > real_out))
    return u_ids, p_ids
