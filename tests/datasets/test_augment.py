"""DiffAugment-style augmentation: translation moves image and mask together, colour touches
only the image, seeded, off by default."""
import numpy as np
import pytest
import torch

from datasets.augment import DiffAugment, shift, translation_offsets
from datasets.mask_generators import FreeFormMasks
from datasets.masks import batch_masks

S = 32


def image_from_mask(mask):
    """Two flat colours: one inside the hole, one outside (never 0, the padding value)."""
    inside = torch.tensor([0.8, -0.6, 0.3]).view(1, 3, 1, 1)
    outside = torch.tensor([-0.4, 0.5, 0.9]).view(1, 3, 1, 1)
    return mask * inside + (1 - mask) * outside


def test_off_by_default_is_identity():
    aug = DiffAugment()
    img, mask = torch.randn(2, 3, S, S), torch.zeros(2, 1, S, S)
    out_img, out_mask = aug(img, mask)
    assert out_img is img and out_mask is mask and not aug.enabled


def test_translation_moves_image_and_mask_together():
    mask = batch_masks(FreeFormMasks(), 6, S, np.random.default_rng(0))
    img = image_from_mask(mask)
    aug = DiffAugment("translation")
    out_img, out_mask = aug(img, mask, np.random.default_rng(4))
    offsets = translation_offsets(6, S, S, 0.125, np.random.default_rng(4))
    assert np.abs(offsets).max() <= 4 and (offsets != 0).any()
    for i, (dy, dx) in enumerate(offsets):
        assert torch.equal(out_mask[i], shift(mask[i], int(dy), int(dx)))
        assert torch.equal(out_img[i], shift(img[i], int(dy), int(dx)))
        # Pixel-wise: the image still shows the hole colour exactly where the mask is 1.
        valid = shift(torch.ones(1, S, S), int(dy), int(dx)).bool()[0]
        assert torch.equal(out_img[i][:, valid], image_from_mask(out_mask[i:i + 1])[0][:, valid])
        assert (out_img[i][:, ~valid] == 0).all() and (out_mask[i][:, ~valid] == 0).all()


def test_shift_direction():
    x = torch.zeros(1, 5, 5)
    x[0, 1, 1] = 1
    y = shift(x, 2, -1)
    assert y[0, 3, 0] == 1 and y.sum() == 1
    assert shift(x, 5, 0).sum() == 0


def test_colour_changes_only_the_image_and_is_seeded():
    mask = batch_masks(FreeFormMasks(), 4, S, np.random.default_rng(1))
    img = image_from_mask(mask)
    aug = DiffAugment("color")
    a_img, a_mask = aug(img, mask, np.random.default_rng(2))
    b_img, _ = aug(img, mask, np.random.default_rng(2))
    c_img, _ = aug(img, mask, np.random.default_rng(3))
    assert torch.equal(a_mask, mask)
    assert torch.equal(a_img, b_img) and not torch.equal(a_img, c_img)
    assert (a_img - img).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every sample changed


def test_colour_plus_translation_keeps_regions_aligned():
    mask = batch_masks(FreeFormMasks(), 4, S, np.random.default_rng(5))
    img = image_from_mask(mask)
    img.requires_grad_(True)
    out_img, out_mask = DiffAugment("color,translation")(img, mask, np.random.default_rng(6))
    for i in range(4):
        # Colour ops are per-image affine maps of each pixel: equal inputs stay equal, so the
        # hole region of the output is one colour and the known (non-padded) region another.
        hole = out_mask[i, 0].bool()
        pix = out_img[i].detach().reshape(3, -1).T
        hole_cols = torch.unique(pix[hole.flatten()].round(decimals=5), dim=0)
        assert len(hole_cols) == 1
        known_cols = torch.unique(pix[~hole.flatten()].round(decimals=5), dim=0)
        assert len(known_cols) <= 2  # the known colour, plus the padding colour if shifted
    out_img.sum().backward()
    assert img.grad is not None and torch.isfinite(img.grad).all()


def test_bad_policy_and_shapes():
    with pytest.raises(ValueError, match="policy"):
        DiffAugment("cutout,blur")
    with pytest.raises(ValueError, match="does not match"):
        DiffAugment("translation")(torch.zeros(2, 3, S, S), torch.zeros(2, 1, 16, 16),
                                   np.random.default_rng(0))
