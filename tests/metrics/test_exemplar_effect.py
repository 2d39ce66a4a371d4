"""metrics.exemplar_effect: attribute agreement on hand-made images and on demo faces."""
import copy

import numpy as np
import pytest
import torch

from datasets.demo import face
from datasets.face_drawing import draw_face
from metrics.exemplar_effect import attribute_hole, follows_exemplar, measure

SIZE = 32


def _pair():
    """original: grey; counterfactual: the same with a red 4x4 patch inside an 8x8 hole."""
    original = np.full((16, 16, 3), 0.5)
    cf = original.copy()
    cf[4:8, 4:8] = (0.9, 0.1, 0.1)
    hole = np.zeros((16, 16))
    hole[2:10, 2:10] = 1
    return original, cf, hole


def test_follows_exemplar_known_values():
    original, cf, hole = _pair()
    assert follows_exemplar(cf, original, cf, hole) is True
    assert follows_exemplar(original, original, cf, hole) is False
    # Part of the way: closer to whichever end it is nearer, on the differing pixels only.
    assert follows_exemplar(original + 0.6 * (cf - original), original, cf, hole) is True
    assert follows_exemplar(original + 0.4 * (cf - original), original, cf, hole) is False
    # Pixels where the two drawings agree do not vote, however wrong the completion is there.
    noisy = cf.copy()
    noisy[8:10, 2:10] = 0.0
    assert follows_exemplar(noisy, original, cf, hole) is True
    # Channel-first images give the same verdicts.
    chw = lambda a: np.moveaxis(a, -1, 0)  # noqa: E731
    assert follows_exemplar(chw(cf), chw(original), chw(cf), hole[None]) is True
    assert follows_exemplar(chw(original), chw(original), chw(cf), hole[None]) is False


def test_follows_exemplar_needs_the_attribute_inside_the_hole():
    original, cf, hole = _pair()
    outside = np.zeros_like(hole)
    outside[12:16, 12:16] = 1          # the patch is not in this hole
    assert follows_exemplar(cf, original, cf, outside) is None
    faint = original + 0.05 * (cf - original) / np.abs(cf - original).max()  # below MIN_DIFF
    assert follows_exemplar(faint, original, faint, hole) is None
    with pytest.raises(ValueError, match="alike"):
        follows_exemplar(cf[:8], original, cf, hole)


def test_attribute_hole_geometry():
    m = attribute_hole(SIZE)
    assert m.shape == (1, SIZE, SIZE)
    rows = torch.nonzero(m[0].any(1)).flatten()
    cols = torch.nonzero(m[0].any(0)).flatten()
    assert (rows.min().item(), rows.max().item()) == (3, 17)
    assert (cols.min().item(), cols.max().item()) == (6, 25)
    assert set(m.unique().tolist()) == {0.0, 1.0}


def _test_faces(n):
    faces = [face(i, SIZE, seed=0, split="test") for i in range(n)]
    images = torch.stack([torch.from_numpy(np.asarray(im, np.float32)).permute(2, 0, 1) / 127.5 - 1
                          for im, _ in faces])
    return images, [a for _, a in faces]


def _draw(a, size):
    return np.asarray(draw_face(a, size, np.random.default_rng(0), noise=0.0), np.float64) / 255.0


def test_measure_oracle_and_blind_models():
    images, attrs = _test_faces(12)
    index = {float(images[i].sum()): i for i in range(len(images))}

    def oracle(x, m, e, seed):
        """Draws each face with the exemplar's hair colour (and nothing else changed)."""
        out = []
        for xi, ei in zip(x, e):
            a = copy.deepcopy(attrs[index[float(xi.sum())]])
            a["hair_color"] = attrs[index[float(ei.sum())]]["hair_color"]
            out.append(torch.from_numpy(_draw(a, SIZE)).float().permute(2, 0, 1) * 2 - 1)
        return torch.where(m.bool(), torch.stack(out), x)

    def blind(x, m, e, seed):
        return x.clone()  # perfect reconstruction of the original, whatever the exemplar

    pairs_differ = sum(attrs[i]["hair_color"] != attrs[11 - i]["hair_color"] for i in range(12))
    assert pairs_differ >= 6

    eff = measure(oracle, attrs, images, SIZE, attrs=("hair_color",))
    hits, n = eff.follows["hair_color"]
    assert n >= pairs_differ - 2 and hits == n           # skipped only if the hair is not in the hole
    assert eff.control["hair_color"] == [0, n]
    assert eff.hole_change > 5 and eff.z_change == 0.0    # the oracle has no z

    eff = measure(blind, attrs, images, SIZE, attrs=("hair_color",))
    assert eff.follows["hair_color"][0] == 0 and eff.follows["hair_color"][1] >= pairs_differ - 2
    assert eff.hole_change == 0.0
    assert eff.overall() == 0.0 and eff.rate("hair_color", control=True) == 0.0
    assert any("hair_color" in line for line in eff.lines())


def test_measure_refuses_mismatched_records():
    images, attrs = _test_faces(3)
    with pytest.raises(ValueError, match="attribute record"):
        measure(lambda x, m, e, s: x, attrs[:2], images, SIZE)
