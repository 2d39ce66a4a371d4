"""The FID Inception: strict loading of the pt_inception layout, feature equality with
pytorch-fid's network, preprocessing (TF1 resize), and the user-facing load errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metrics.inception import (STANDARD_WEIGHTS_NAME, FIDInceptionV3, InceptionWeightsError,
                               load_inception, tf1_resize_bilinear)


def test_layout_has_the_566_reference_keys():
    import torchvision
    ours = FIDInceptionV3().state_dict()
    ref = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                          init_weights=False).state_dict()
    assert len(ours) == 566
    assert list(ours) == list(ref)
    assert all(ours[k].shape == ref[k].shape for k in ref)


def test_features_match_pytorch_fid(inception_weights_file, random_inception,
                                    pytorch_fid_features):
    """Same weights file, same 8-bit images: our features == pytorch-fid's (incl. its resize)."""
    state = torch.load(inception_weights_file, weights_only=True)
    theirs = pytorch_fid_features(state)
    g = torch.Generator().manual_seed(0)
    x01 = torch.randint(0, 256, (2, 3, 64, 48), generator=g).float() / 255   # PNG-like images
    with torch.no_grad():
        ref = theirs(x01)[0].flatten(1)                   # pytorch-fid takes [0, 1]
        ours = random_inception(x01 * 2 - 1)              # we take [-1, 1]
    assert ours.shape == (2, 2048)
    assert ref.abs().max() > 1e-2                         # well-scaled features, not ~0
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    # The features depend on the image (a broken net could map everything to one vector).
    assert (ours[0] - ours[1]).abs().max() > 1e-3 * float(ref.abs().max())


def test_fid_pooling_variants_matter(random_inception):
    """Swapping Mixed_7c's max pool for an average pool changes its output: the FID-specific
    pooling is really in use (and the pytorch-fid comparison would catch its absence)."""
    from metrics.inception import _tf_avg_pool
    block = random_inception.Mixed_7c
    inp = torch.rand(1, 2048, 8, 8)
    with torch.no_grad():
        a = block(inp)
        saved = block.pool
        block.pool = _tf_avg_pool
        try:
            b = block(inp)
        finally:
            block.pool = saved
    assert not torch.allclose(a, b)


def test_stays_in_eval_mode(random_inception):
    random_inception.train()
    assert not random_inception.training
    assert not any(m.training for m in random_inception.modules())
    assert not any(p.requires_grad for p in random_inception.parameters())


def test_weights_hash_recorded(inception_weights_file, random_inception):
    import hashlib
    with open(inception_weights_file, "rb") as f:
        assert random_inception.weights_sha256 == hashlib.sha256(f.read()).hexdigest()


def test_missing_file_names_config_key_and_file(tmp_path):
    with pytest.raises(InceptionWeightsError) as e:
        load_inception(str(tmp_path / "nope.pth"), "cpu", config_key="eval.inception_path")
    msg = str(e.value)
    assert "eval.inception_path" in msg and STANDARD_WEIGHTS_NAME in msg
    with pytest.raises(InceptionWeightsError, match="pretrained.inception"):
        load_inception(None)


def test_wrong_layout_lists_keys(tmp_path, inception_weights_file):
    state = torch.load(inception_weights_file, weights_only=True)
    del state["Mixed_6b.branch1x1.conv.weight"]
    state["AuxLogits.fc.weight"] = torch.zeros(1)
    p = tmp_path / "bad.pth"
    torch.save(state, p)
    with pytest.raises(InceptionWeightsError) as e:
        load_inception(str(p))
    assert "Mixed_6b.branch1x1.conv.weight" in str(e.value)
    assert "AuxLogits.fc.weight" in str(e.value)
    torch.save([1, 2], p)
    with pytest.raises(InceptionWeightsError, match="not a state dict"):
        load_inception(str(p))


def _tf1_reference(img, out):
    """Direct transcription of TF1 resize_bilinear(align_corners=False) for one 2-D image."""
    h, w = img.shape
    res = np.zeros((out, out))
    for i in range(out):
        sy = i * h / out
        y0 = int(np.floor(sy)); y1 = min(y0 + 1, h - 1); fy = sy - y0
        for j in range(out):
            sx = j * w / out
            x0 = int(np.floor(sx)); x1 = min(x0 + 1, w - 1); fx = sx - x0
            top = img[y0, x0] + (img[y0, x1] - img[y0, x0]) * fx
            bot = img[y1, x0] + (img[y1, x1] - img[y1, x0]) * fx
            res[i, j] = top + (bot - top) * fy
    return res


@pytest.mark.parametrize("shape,out", [((5, 7), 13), ((16, 16), 8), ((9, 4), 9)])
def test_tf1_resize_matches_direct_formula(shape, out):
    img = torch.rand(1, 1, *shape, dtype=torch.float64)
    ours = tf1_resize_bilinear(img, out)[0, 0].numpy()
    np.testing.assert_allclose(ours, _tf1_reference(img[0, 0].numpy(), out), atol=1e-12)


def test_tf1_resize_differs_from_half_pixel():
    img = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    # 2x downscale: TF1 samples even pixels exactly; half-pixel bilinear averages pairs.
    assert torch.equal(tf1_resize_bilinear(img, 8), img[..., ::2, ::2])
    assert not torch.allclose(F.interpolate(img, size=8, mode="bilinear", align_corners=False),
                              img[..., ::2, ::2])


def test_preprocessing_modes():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    pf = FIDInceptionV3(resize="pytorch_fid", quantize=False).preprocess(x)
    ref = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    assert torch.allclose(pf, ref)
    tf = FIDInceptionV3(resize="tf1", quantize=True).preprocess(x)
    v = ((x + 1) * 127.5).round()
    assert torch.allclose(tf, (tf1_resize_bilinear(v, 299) - 128) / 128)
    q = FIDInceptionV3(quantize=True).preprocess(torch.full((1, 3, 299, 299), 0.3))
    assert torch.allclose(q, torch.full_like(q, round(1.3 * 127.5) / 127.5 - 1))
    with pytest.raises(ValueError):
        FIDInceptionV3(resize="bicubic")
