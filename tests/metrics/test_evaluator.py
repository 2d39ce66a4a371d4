"""The in-memory Evaluator (shared by test.py and the training loop) and the repeat aggregation.

Most tests use a tiny deterministic feature network in place of Inception (the Evaluator takes
any module mapping images to feature vectors), so the bookkeeping is checked exactly and fast;
one end-to-end test uses the real FID Inception with random weights loaded from a file in the
pt_inception layout, plus a random-backbone LPIPS.
"""
import math

import numpy as np
import pytest
import torch

from metrics.evaluator import (ALL_METRICS, DEFAULT_METRICS, STD_DDOF, Evaluator, EvaluatorError,
                               aggregate_repeats, format_mean_std)
from metrics.fid import feature_stats, fid_from_features
from metrics.ids import IDSWarning, compute_ids
from metrics.image_metrics import psnr, quantize_8bit
from tests.metrics.tiny_features import TinyFeatures

pytestmark = pytest.mark.filterwarnings("ignore::metrics.ids.IDSWarning")


def _pairs(n, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    fake = (real + 0.3 * torch.randn(n, 3, size, size, generator=g)).clamp(-1, 1)
    return fake, real


def test_end_to_end_with_random_inception_and_lpips(random_inception, random_lpips):
    fake, real = _pairs(3, size=32)
    ev = Evaluator(random_inception, random_lpips, device="cpu")
    ev.update(fake[:2], real[:2], buckets=["a", "b"])
    ev.update(fake[2:], real[2:], buckets="a")
    res = ev.compute()
    assert set(res) == {"fid", "u_ids", "p_ids", "lpips", "psnr", "ssim", "l1", "n_images"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in res.values())
    assert res["n_images"] == 3.0
    assert res["fid"] > 0 and 0 <= res["u_ids"] <= 0.5 and 0 <= res["p_ids"] <= 1
    # The stored features are the network's own (checked on one image to save time) and
    # FID/IDS are those of the stored features.
    st = ev.state()
    f_fake, f_real = st["fake_feats"].double().numpy(), st["real_feats"].double().numpy()
    with torch.no_grad():
        direct = random_inception(quantize_8bit(real[2:])).double().numpy()
    np.testing.assert_allclose(f_real[2:], direct, rtol=1e-4, atol=1e-4 * np.abs(direct).max())
    assert res["fid"] == pytest.approx(fid_from_features(f_fake, f_real), rel=1e-6)
    assert (res["u_ids"], res["p_ids"]) == pytest.approx(compute_ids(f_real, f_fake))
    per = ev.compute_per_bucket()
    assert list(per) == ["a", "b"] and per["a"]["n_images"] == 2.0
    assert math.isnan(per["b"]["fid"])            # one image: no covariance
    proto = ev.protocol()
    assert proto["inception_sha256"] == random_inception.weights_sha256


def test_identical_sets_give_ideal_scores():
    fake, real = _pairs(8)
    ev = Evaluator(TinyFeatures(), None, ("fid", "ids", "psnr", "ssim", "l1"))
    ev.update(real, real.clone())
    res = ev.compute()
    assert abs(res["fid"]) < 1e-9
    assert res["psnr"] == math.inf and res["ssim"] == pytest.approx(1.0) and res["l1"] == 0.0
    assert res["u_ids"] == 0.5 and res["p_ids"] == 0.0


def test_per_bucket_results_equal_subset_computations():
    fake, real = _pairs(12)
    labels = ["0.1-0.2", "0.2-0.3", "0.1-0.2"] * 4
    net = TinyFeatures()
    ev = Evaluator(net, None, ("fid", "ids", "psnr", "ssim", "l1"))
    for i in range(0, 12, 5):                          # uneven batches: 5, 5, 2
        ev.update(fake[i:i + 5], real[i:i + 5], buckets=labels[i:i + 5])
    per_img = ev.per_image()
    with torch.no_grad():
        f_fake = net(quantize_8bit(fake)).double().numpy()
        f_real = net(quantize_8bit(real)).double().numpy()
    per = ev.compute_per_bucket()
    for label in ("0.1-0.2", "0.2-0.3"):
        idx = np.array([i for i, b in enumerate(labels) if b == label])
        r = per[label]
        assert r["n_images"] == len(idx)
        assert r["psnr"] == pytest.approx(per_img["psnr"][idx].mean())
        assert r["fid"] == pytest.approx(fid_from_features(f_fake[idx], f_real[idx]), rel=1e-5)
    overall = ev.compute()
    assert overall["fid"] == pytest.approx(fid_from_features(f_fake, f_real), rel=1e-5)
    ref_psnr = psnr(quantize_8bit(fake), quantize_8bit(real)).numpy()
    np.testing.assert_allclose(per_img["psnr"], ref_psnr)
    assert overall["psnr"] == pytest.approx(ref_psnr.mean())


def test_merge_equals_one_pass():
    fake, real = _pairs(10)
    metrics = ("fid", "ids", "psnr", "ssim", "l1")
    whole = Evaluator(TinyFeatures(), None, metrics)
    whole.update(fake, real, buckets="x")
    a = Evaluator(TinyFeatures(), None, metrics)
    b = Evaluator(TinyFeatures(), None, metrics)
    a.update(fake[:4], real[:4], buckets="x")
    b.update(fake[4:], real[4:], buckets="x")
    a.merge(b.state())
    ra, rw = a.compute(), whole.compute()
    assert set(ra) == set(rw)
    for k in rw:
        assert ra[k] == pytest.approx(rw[k], rel=1e-6), k


def test_fid_reference_statistics():
    fake, real = _pairs(10)
    net = TinyFeatures()
    with torch.no_grad():
        mu, sigma = feature_stats(net(quantize_8bit(real)))
    ev_ref = Evaluator(net, None, ("fid",), fid_reference=(mu, sigma))
    ev_gt = Evaluator(net, None, ("fid",))
    ev_ref.update(fake, real)
    ev_gt.update(fake, real)
    assert ev_ref.compute()["fid"] == pytest.approx(ev_gt.compute()["fid"], rel=1e-5)
    assert ev_ref._real_feats == []                   # the ground truth never went through it


def test_quantize_option():
    fake, real = _pairs(2)
    q = Evaluator(None, None, ("psnr",), quantize=True)
    raw = Evaluator(None, None, ("psnr",), quantize=False)
    q.update(fake, real)
    raw.update(fake, real)
    np.testing.assert_allclose(raw.per_image()["psnr"], psnr(fake, real).numpy())
    np.testing.assert_allclose(q.per_image()["psnr"],
                               psnr(quantize_8bit(fake), quantize_8bit(real)).numpy())
    assert not np.allclose(q.per_image()["psnr"], raw.per_image()["psnr"])


def test_running_means_and_subset_of_metrics():
    fake, real = _pairs(4)
    ev = Evaluator(None, None, ("psnr", "l1"))
    ev.update(fake[:2], real[:2])
    first = ev.running()
    ev.update(fake[2:], real[2:])
    assert set(ev.compute()) == {"psnr", "l1", "n_images"}
    assert first["l1"] == pytest.approx(ev.per_image()["l1"][:2].mean())
    assert ev.running()["l1"] == pytest.approx(ev.compute()["l1"])


def test_input_validation():
    ev = Evaluator(None, None, ("psnr",))
    with pytest.raises(EvaluatorError, match="before any update"):
        ev.compute()
    x = torch.zeros(2, 3, 16, 16)
    with pytest.raises(EvaluatorError, match=r"\[-1, 1\]"):
        ev.update(x + 200, x)                        # 8-bit values passed by mistake
    with pytest.raises(EvaluatorError, match="same shape"):
        ev.update(x, x[:1])
    with pytest.raises(EvaluatorError, match="bucket labels"):
        ev.update(x, x, buckets=["a"])
    with pytest.raises(EvaluatorError, match="NaN"):
        ev.update(x * float("nan"), x)
    with pytest.raises(EvaluatorError, match="Inception"):
        Evaluator(None, None, ("fid",))
    with pytest.raises(EvaluatorError, match="LPIPS"):
        Evaluator(None, None, ("lpips",))
    with pytest.raises(EvaluatorError, match="unknown"):
        Evaluator(None, None, ("is",))


def test_from_files(inception_weights_file, tmp_path, monkeypatch):
    import hashlib

    import losses.perceptual
    from metrics.inception import InceptionWeightsError
    ev = Evaluator.from_files(("fid", "psnr"), inception_path=inception_weights_file)
    assert ev.protocol()["inception_sha256"] == ev.inception.weights_sha256
    assert not ev.inception.training
    # The LPIPS trunk file's hash goes into the record too (loader stubbed: a real VGG16 file
    # is 0.5 GB; the loader itself is tested in tests/losses).
    vgg = tmp_path / "vgg16.pth"
    vgg.write_bytes(b"not really vgg")
    calls = []
    monkeypatch.setattr(losses.perceptual, "load_lpips",
                        lambda path, **kw: calls.append((path, kw)) or torch.nn.Linear(1, 1))
    ev = Evaluator.from_files(("lpips",), lpips_vgg_path=str(vgg))
    assert calls == [(str(vgg), {"allow_random_backbone": False, "device": "cpu"})]
    assert ev.protocol()["lpips_vgg_sha256"] == hashlib.sha256(b"not really vgg").hexdigest()
    with pytest.raises(InceptionWeightsError, match="eval.inception"):
        Evaluator.from_files(("fid",), inception_path=str(tmp_path / "missing.pth"),
                             inception_config_key="eval.inception")


def test_aggregate_repeats():
    runs = [{"fid": 10.0, "psnr": 20.0, "buckets": {"a": {"fid": 1.0}}},
            {"fid": 12.0, "psnr": 22.0, "buckets": {"a": {"fid": 3.0}}},
            {"fid": 14.0, "psnr": 24.0, "buckets": {"a": {"fid": 5.0}}, "note": "x"}]
    agg = aggregate_repeats(runs)
    assert agg["fid"]["mean"] == pytest.approx(12.0)
    # Population std (ddof 0, np.std's default, as the authors report): sqrt(8 / 3), not the
    # sample std 2.0 (ddof 1).
    assert agg["fid"]["std"] == pytest.approx(math.sqrt(8 / 3), rel=1e-12)
    assert agg["fid"]["std"] == pytest.approx(float(np.std([10.0, 12.0, 14.0])), rel=1e-12)
    assert agg["fid"]["n"] == 3 and agg["fid"]["values"] == [10.0, 12.0, 14.0]
    assert agg["buckets"]["a"]["fid"]["mean"] == pytest.approx(3.0)
    assert agg["buckets"]["a"]["fid"]["std"] == pytest.approx(math.sqrt(8 / 3), rel=1e-12)
    assert "note" not in agg
    assert format_mean_std(agg["psnr"], 2) == "22.00 ± 1.63"
    single = aggregate_repeats([{"fid": 5.0}])
    assert single["fid"]["std"] == 0.0
    # Two repeats: |a - b| / 2 (ddof 1 would give |a - b| / sqrt(2)).
    assert aggregate_repeats([{"l1": 0.5}, {"l1": 0.25}])["l1"]["std"] == pytest.approx(0.125)
    assert STD_DDOF == 0


def test_all_metrics_constant():
    assert DEFAULT_METRICS == ("fid", "ids", "lpips", "psnr", "ssim", "l1")
    assert ALL_METRICS == DEFAULT_METRICS + ("ssim_gauss11", "l1_mean")
    assert issubclass(IDSWarning, UserWarning)


def test_paper_ssim_and_l1_through_the_evaluator_equal_the_authors_definitions():
    """What results.json reports as ``ssim`` / ``l1``: the authors' per-image skimage call (win 51)
    and sum|gt-out| / sum(gt+out), averaged over images — across two update() batches."""
    from skimage.metrics import structural_similarity
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 256, (5, 64, 64, 3)).astype(np.uint8)
    gt = np.clip(gt // 2 + np.arange(64)[None, :, None, None], 0, 255).astype(np.uint8)
    out = gt.copy()
    out[:, 16:48, 16:48] = rng.integers(0, 256, (5, 32, 32, 3))
    to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1   # noqa: E731
    ev = Evaluator(None, None, ("ssim", "l1", "ssim_gauss11", "l1_mean"))
    ev.update(to_t(out[:2]), to_t(gt[:2]))
    ev.update(to_t(out[2:]), to_t(gt[2:]))
    res = ev.compute()
    ref_ssim = np.mean([structural_similarity(gt[i], out[i], channel_axis=-1, win_size=51,
                                              data_range=255) for i in range(5)])
    g, o = gt.astype(np.float64), out.astype(np.float64)
    ref_l1 = np.mean([np.abs(g[i] - o[i]).sum() / (g[i] + o[i]).sum() for i in range(5)])
    assert res["ssim"] == pytest.approx(ref_ssim, abs=1e-6)
    assert res["l1"] == pytest.approx(ref_l1, abs=1e-7)
    assert res["l1_mean"] == pytest.approx(np.abs(g - o).mean() / 255, abs=1e-7)
    assert res["ssim_gauss11"] != pytest.approx(res["ssim"], abs=1e-3)
    proto = ev.protocol()
    assert proto["ssim_window"] == [51] and "win_size=51" in proto["definitions"]["ssim"]
