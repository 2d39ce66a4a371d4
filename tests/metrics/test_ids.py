"""U-IDS / P-IDS on synthetic features whose answer is known. Low-dimensional features (8-d,
hundreds of samples) so the linear SVM cannot separate identical distributions by overfitting."""
import numpy as np
import pytest

from metrics.ids import IDSWarning, compute_ids


@pytest.mark.parametrize("seed", [0, 1])
def test_same_distribution_gives_one_half(seed):
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((600, 8))
    fake = rng.standard_normal((600, 8))
    u, p = compute_ids(real, fake)
    assert u == pytest.approx(0.5, abs=0.06)
    assert p == pytest.approx(0.5, abs=0.06)


def test_well_separated_sets_give_zero():
    rng = np.random.default_rng(2)
    real = rng.standard_normal((300, 8))
    fake = rng.standard_normal((300, 8)) + 6.0
    u, p = compute_ids(real, fake)
    assert u < 0.01
    assert p < 0.01       # every completion looks less real than its own ground truth


def test_partial_shift_lies_between():
    rng = np.random.default_rng(3)
    real = rng.standard_normal((600, 8))
    fake = rng.standard_normal((600, 8)) + 0.5
    u, p = compute_ids(real, fake)
    assert 0.05 < u < 0.45 and 0.05 < p < 0.45


def test_identical_sets():
    """Completion == ground truth: the SVM cannot do better than chance on contradictory
    labels (U-IDS exactly 0.5) and no completion *exceeds* its real image (P-IDS 0)."""
    real = np.random.default_rng(4).standard_normal((200, 8))
    u, p = compute_ids(real, real.copy())
    assert u == 0.5
    assert p == 0.0


def test_p_ids_uses_the_pairing():
    """fake_i = real_i + delta along x0. The decision is linear, so every pair differs by the
    same w0 * delta: P-IDS is 0 once the SVM learns that larger x0 means fake. Shuffling the
    fakes leaves the two sets (hence the SVM and U-IDS) unchanged but breaks the pairs."""
    rng = np.random.default_rng(6)
    real = rng.standard_normal((400, 8))
    fake = real.copy()
    fake[:, 0] += 0.5
    u, p = compute_ids(real, fake)
    assert p == 0.0
    u_perm, p_perm = compute_ids(real, fake[rng.permutation(400)])
    assert u_perm == pytest.approx(u, abs=2 / 800)   # same sets, same SVM
    assert 0.2 < p_perm < 0.5


def test_few_samples_warn_and_bad_shapes_raise():
    rng = np.random.default_rng(5)
    with pytest.warns(IDSWarning):
        compute_ids(rng.standard_normal((10, 32)), rng.standard_normal((10, 32)))
    with pytest.raises(ValueError, match="paired"):
        compute_ids(np.zeros((10, 4)), np.zeros((9, 4)))
