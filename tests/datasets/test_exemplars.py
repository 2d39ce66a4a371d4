"""Exemplar pairing: training self-probability, reversed batches, evaluation modes."""
import numpy as np
import pytest
import torch
from PIL import Image

from datasets.errors import DatasetError
from datasets.exemplars import (EvalPairing, TrainingPairing, make_training_pairing,
                                pairs_for_eval)


def batch(b=4, size=8):
    # Image k is constant k / 10, so an exemplar's source index can be read off its pixels.
    return torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, size, size) / 10


def source_index(exemplars):
    return (exemplars[:, 0, 0, 0] * 10).round().long()


def test_self_probability_measured_over_many_draws():
    pairing = TrainingPairing(p_self=0.2)
    rng = np.random.default_rng(0)
    images = batch(4)
    n, n_self = 5000, 0
    for _ in range(n):
        ex, is_self = pairing(images, rng)
        src = source_index(ex)
        if is_self.all():
            n_self += 1
            assert torch.equal(src, torch.arange(4))
        else:  # otherwise the batch reversed: every image gets another face
            assert torch.equal(src, torch.tensor([3, 2, 1, 0]))
            assert not is_self.any()
    # Binomial(5000, 0.2): std 0.0057; allow 4 std.
    assert abs(n_self / n - 0.2) < 0.023


def test_per_sample_mode_and_extremes():
    rng = np.random.default_rng(1)
    images = batch(4)
    per = TrainingPairing(p_self=0.5, per_sample=True)
    flags = torch.stack([per(images, rng)[1] for _ in range(2000)]).float()
    assert (flags.mean(0) - 0.5).abs().max() < 0.05  # each image decides on its own
    assert 0 < flags.sum(1).float().std()  # mixed batches occur
    never = TrainingPairing(0.0)
    assert not any(never(images, rng)[1].any() for _ in range(50))
    always = TrainingPairing(1.0)
    assert all(always(images, rng)[1].all() for _ in range(50))


def test_odd_reversed_batch_flags_no_self_per_batch_but_the_middle_image_per_sample():
    # The authors add LPIPS only on self-exemplar batches: a reversed batch gets none, even for
    # the middle image of an odd batch, which is its own exemplar.
    ex, is_self = TrainingPairing(0.0)(batch(5), np.random.default_rng(0))
    assert is_self.tolist() == [False] * 5
    assert torch.equal(source_index(ex), torch.tensor([4, 3, 2, 1, 0]))
    ex, is_self = TrainingPairing(0.0, per_sample=True)(batch(5), np.random.default_rng(0))
    assert is_self.tolist() == [False, False, True, False, False]
    assert torch.equal(source_index(ex), torch.tensor([4, 3, 2, 1, 0]))


def test_training_pairing_is_seeded():
    pairing = make_training_pairing({"self_prob": 0.3})
    assert pairing.p_self == 0.3

    def draws(seed):
        rng = np.random.default_rng(seed)
        return [pairing.indices(6, rng).tolist() for _ in range(40)]

    assert draws(9) == draws(9)
    assert draws(9) != draws(10)


def test_eval_reverse_and_self():
    images = batch(4)
    assert torch.equal(source_index(EvalPairing("reverse")(images)), torch.tensor([3, 2, 1, 0]))
    assert torch.equal(EvalPairing("reversed")(images), images.flip(0))
    assert EvalPairing("self")(images) is images
    names = ["a", "b", "c", "d", "e"]
    assert pairs_for_eval(names, "reverse", 2) == ["b", "a", "d", "c", "e"]
    with pytest.raises(ValueError, match="exemplar mode"):
        EvalPairing("random")


def test_eval_folder_pairs_by_file_stem(tmp_path):
    root = tmp_path / "exemplars"
    (root / "x").mkdir(parents=True)
    colours = {"x/001": 10, "x/002": 200, "003": 90}
    for stem, v in colours.items():
        Image.fromarray(np.full((12, 12, 3), v, np.uint8)).save(root / f"{stem}.png")
    pairing = EvalPairing("folder", folder=str(root))
    images = batch(3, size=12)
    ex = pairing(images, names=["x/002.jpg", "x/001.png", "y/003.png"])
    assert ex.shape == images.shape
    got = ((ex[:, 0, 0, 0] + 1) * 127.5).round().tolist()
    assert got == [200, 10, 90]
    with pytest.raises(DatasetError, match=r"no exemplar for 1 of 1 image\(s\) \('x/004'\): "
                                           r"looked for 'x/004\.\*'"):
        pairing(batch(1, size=12), names=["x/004.png"])
    pairing.folder_for(12).check(["x/001.png", "003.png"])
    with pytest.raises(DatasetError, match=r"no exemplar for 1 of 2 image\(s\) \('nope'\)"):
        pairing.folder_for(12).check(["x/001.png", "nope.png"])
    with pytest.raises(ValueError, match="folder"):
        EvalPairing("folder")
