"""The evaluation loop (metrics/eval_loop.py): ``evaluate()`` — shared by test.py and the
training loop — checked against completions computed by hand, seed and repeat bookkeeping,
per-image mask seeding, irregular-mask bucketing and dealing, and the clear errors.

A tiny 16 px generator with a tiny IR-SE style encoder stands in for EXE-GAN, and a fixed
6-d feature map stands in for Inception (the Evaluator takes any feature network), so every
test runs in seconds; the real Inception file is exercised by tests/test_test_py.py.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from common.seeding import derive_seed
from datasets.errors import MaskError, ProtocolError
from datasets.imaging import pil_to_tensor
from datasets.protocols import ALL_BUCKET, make_mask_protocol
from metrics.eval_loop import evaluate
from metrics.evaluator import Evaluator, EvaluatorError
from metrics.image_metrics import l1, psnr, quantize_8bit, to_unit
from metrics.results import results_rows, summary_means
from metrics.standins import standin_style_encoder
from models.exegan import EXEGAN
from models.generator import Generator
from tests.metrics.tiny_features import TinyFeatures

pytestmark = pytest.mark.filterwarnings("ignore::metrics.ids.IDSWarning")

SIZE = 16


class Images:
    """A test set in memory: item i is a fixed random image [3, S, S] in [-1, 1]."""

    def __init__(self, n, size=SIZE, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = quantize_8bit(torch.rand(n, 3, size, size, generator=g) * 2 - 1)
        self.names = [f"img{i:02d}.png" for i in range(n)]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    g = Generator(SIZE, style_dim=16, n_mlp=2, channel_multiplier=2, channel_max=16)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.3)       # make the noise maps matter
    enc = standin_style_encoder(g.exemplar_start, g.n_exemplar, g.n_latent, g.style_dim, seed=0)
    return EXEGAN(g, enc, mean_latent_samples=64)


def _evaluator(metrics=("fid", "ids", "psnr", "ssim", "l1")):
    return Evaluator(TinyFeatures(), None, metrics)


def _write_mask(path, size, rows):
    """A white-is-hole mask file: the first `rows` rows are hole."""
    a = np.zeros((size, size), np.uint8)
    a[:rows] = 255
    Image.fromarray(a, "L").save(path)


# -- evaluate() against a hand computation ------------------------------------------------------

def test_evaluate_equals_completions_computed_by_hand(model):
    data = Images(3)
    res = evaluate(model, data, "center", "self", evaluator=_evaluator(), batch=2, seed=7)
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., 4:12, 4:12] = 1
    outs = []
    for k, idx in enumerate(([0, 1], [2])):
        real = data.x[idx]
        m = mask.expand(len(idx), -1, -1, -1)
        codes = model.encode_exemplars(real)          # self exemplars
        outs.append(model.complete(real, m, codes, seed=derive_seed(7, 0x5A, k)))
    out = quantize_8bit(torch.cat(outs))
    real = data.x
    r = res["repeats"][0]["results"][ALL_BUCKET]
    assert r["n_images"] == 3
    assert r["psnr"] == pytest.approx(float(psnr(out, real).mean()), rel=1e-9)
    assert r["l1"] == pytest.approx(float(l1(out, real).mean()), rel=1e-9)
    # The paper's L1, sum|gt - out| / sum(gt + out), over the whole image and over the hole.
    # Known pixels are returned untouched, so both share the numerator.
    u_out, u_real = to_unit(out), to_unit(real)
    diff, total = (u_out - u_real).abs(), u_out + u_real
    hole_l1 = diff[..., 4:12, 4:12].flatten(1).sum(1) / total[..., 4:12, 4:12].flatten(1).sum(1)
    whole_l1 = diff.flatten(1).sum(1) / total.flatten(1).sum(1)
    assert r["l1_hole"] == pytest.approx(float(hole_l1.mean()), rel=1e-9)
    assert r["l1"] == pytest.approx(float(whole_l1.mean()), rel=1e-9)
    assert (whole_l1 < hole_l1).all()
    assert set(r) >= {"fid", "u_ids", "p_ids", "psnr_hole"}
    rec = res["protocol"]
    assert rec["masks"]["kind"] == "center" and rec["exemplars"]["mode"] == "self"
    assert (rec["n_images"], rec["batch"], rec["seeds"], rec["mask_seeds"]) == (3, 2, [7], [7])


def test_reverse_pairing_guides_each_image_by_its_mirror_in_the_batch(model):
    data = Images(4)
    a = evaluate(model, data, "center", "reverse", evaluator=_evaluator(("psnr",)), batch=4,
                 record_pairs=True)
    assert [p["exemplar"] for p in a["pairs"]] == list(reversed(data.names))
    # Against a hand run with the reversed batch as exemplars.
    m = torch.zeros(4, 1, SIZE, SIZE)
    m[..., 4:12, 4:12] = 1
    out = model.complete(data.x, m, model.encode_exemplars(data.x.flip(0)),
                         seed=derive_seed(0, 0x5A, 0))
    assert a["summary"][ALL_BUCKET]["psnr"]["mean"] == pytest.approx(
        float(psnr(quantize_8bit(out), data.x).mean()), rel=1e-9)


# -- seeds and repeats ---------------------------------------------------------------------------

def test_repeats_are_seeded_runs_and_give_mean_and_std(model):
    data = Images(2)
    kw = dict(evaluator=_evaluator(("psnr", "l1")), batch=2)
    both = evaluate(model, data, "free_form", "reverse", seed=4, repeats=2, **kw)
    # Repeat r is exactly the single run with seed + r (z / noise and masks): reproducible
    # across calls, and each repeat is a plain seeded run.
    for r in (0, 1):
        single = evaluate(model, data, "free_form", "reverse", seed=4 + r, **kw)
        assert both["repeats"][r]["results"] == single["repeats"][0]["results"]
    vals = [both["repeats"][r]["results"][ALL_BUCKET]["psnr"] for r in (0, 1)]
    assert vals[0] != vals[1]
    s = both["summary"][ALL_BUCKET]["psnr"]
    assert s["values"] == vals and s["n"] == 2
    # Population std (ddof 0) over repeats, as the authors report it; recorded with the results.
    assert s["mean"] == pytest.approx(np.mean(vals)) and s["std"] == pytest.approx(np.std(vals))
    assert s["std"] == pytest.approx(abs(vals[0] - vals[1]) / 2)
    assert both["protocol"]["std_ddof"] == 0 and "ddof 0" in both["protocol"]["std"]
    assert summary_means(both)["psnr"] == s["mean"]
    header, rows = results_rows(both)
    assert header[:5] == ["bucket", "stat", "repeat", "seed", "mask_seed"]
    assert [(r["stat"], r["seed"]) for r in rows] == [("mean", ""), ("std", ""), ("repeat", 4),
                                                       ("repeat", 5)]
    assert rows[1]["psnr"] == s["std"] and rows[3]["psnr"] == vals[1]


def test_z_seed_and_mask_seed_are_separate(model):
    data = Images(2)
    kw = dict(evaluator=_evaluator(("psnr",)), batch=2, record_pairs=True)
    a = evaluate(model, data, "free_form", "self", seed=0, mask_seed=10, **kw)
    b = evaluate(model, data, "free_form", "self", seed=1, mask_seed=10, **kw)
    c = evaluate(model, data, "free_form", "self", seed=0, mask_seed=11, **kw)
    assert [p["mask"] for p in a["pairs"]] == [p["mask"] for p in b["pairs"]]
    assert a["summary"] != b["summary"]          # z / noise changed, masks did not
    assert a["summary"] != c["summary"]          # masks changed


def test_free_form_mask_of_an_image_does_not_depend_on_the_batch(model, tmp_path):
    data = Images(2)
    ev = _evaluator(("l1",))
    evaluate(model, data, "free_form", "self", evaluator=ev, batch=1, mask_seed=3,
             save_dir=str(tmp_path / "b1"))
    evaluate(model, data, "free_form", "self", evaluator=ev, batch=2, mask_seed=3,
             save_dir=str(tmp_path / "b2"))
    evaluate(model, data, "free_form", "self", evaluator=ev, batch=2, mask_seed=4,
             save_dir=str(tmp_path / "other"))
    for name in ("img00", "img01"):
        m1, m2, other = (np.asarray(Image.open(tmp_path / d / "masks" / "all" / "r0" / f"{name}.png"))
                         for d in ("b1", "b2", "other"))
        assert m1.any() and np.array_equal(m1, m2)
        assert not np.array_equal(m1, other)


# -- irregular masks -----------------------------------------------------------------------------

def test_irregular_buckets_are_evaluated_separately_and_dealt_without_repeats(model, tmp_path):
    root = tmp_path / "masks"
    root.mkdir()
    # 32 x 32 files (the protocol resizes them to 16): ratios 2/32 (0-10 %), 4/32, 5/32 and
    # 6/32 (10-20 %), 12/32 (30-40 %), 28/32 (> 60 %: not part of the protocol); "g" (1/32,
    # 0-10 %) loses its one hole row in the resize to 16 and is left out (no hole-less masks).
    for name, rows in (("a", 2), ("b", 4), ("c", 5), ("d", 6), ("e", 12), ("f", 28), ("g", 1)):
        _write_mask(root / f"{name}.png", 32, rows)
    data = Images(3)
    g, e = model.generator, model.style_encoder
    g.train()
    res = evaluate((g, e), data, {"kind": "irregular", "root": str(root)}, "self",
                   evaluator=_evaluator(("psnr", "l1")), batch=2, record_pairs=True, seed=1)
    assert g.training and not e.training            # flags of a (G, E) pair are restored
    g.eval()
    assert list(res["summary"]) == [ALL_BUCKET, "0-10", "10-20", "30-40"]
    per = res["repeats"][0]["results"]
    assert [per[b]["n_images"] for b in ("0-10", "10-20", "30-40")] == [3, 3, 3]
    assert per[ALL_BUCKET]["n_images"] == 9
    # The whole-set score is the image-weighted mean of the equal-sized buckets.
    assert per[ALL_BUCKET]["l1"] == pytest.approx(
        np.mean([per[b]["l1"] for b in ("0-10", "10-20", "30-40")]))
    used = {b: [p["mask"] for p in res["pairs"] if p["bucket"] == b] for b in per if b != "all"}
    assert used["0-10"] == ["a.png"] * 3 and used["30-40"] == ["e.png"] * 3
    assert sorted(used["10-20"]) == ["b.png", "c.png", "d.png"]     # no file used twice
    rec = res["protocol"]["masks"]
    assert rec["files_per_bucket"] == {"0-10": 1, "10-20": 3, "30-40": 1}
    assert rec["empty_buckets_left_out"] == ["20-30", "40-50", "50-60"]
    assert rec["files_above_60_percent_left_out"] == 1
    assert rec["files_without_hole_at_size_left_out"] == ["g.png"]
    # The bigger the hole, the worse the reconstruction of this untrained generator.
    assert per["0-10"]["l1"] < per["10-20"]["l1"] < per["30-40"]["l1"]


def test_mask_protocol_errors(tmp_path, model):
    with pytest.raises(ProtocolError, match="Unknown mask protocol"):
        make_mask_protocol("square")
    with pytest.raises(ProtocolError, match="does not exist"):
        make_mask_protocol("irregular", str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MaskError, match="contains no image files"):
        make_mask_protocol("irregular", str(empty))
    with pytest.raises(ProtocolError, match="takes no folder"):
        make_mask_protocol("center", str(empty))
    one = tmp_path / "one"
    one.mkdir()
    _write_mask(one / "m.png", 16, 2)                      # 12.5 %: bucket 10-20
    with pytest.raises(ProtocolError, match="no mask in the requested bucket"):
        make_mask_protocol("irregular", str(one), buckets=["10-20", "40-50"])
    with pytest.raises(ProtocolError, match="Unknown mask bucket"):
        make_mask_protocol("irregular", str(one), buckets=["15-25"])
    # Paired masks must be S x S (no image file known here).
    paired = tmp_path / "paired"
    paired.mkdir()
    for i in range(2):
        _write_mask(paired / f"img{i:02d}.png", 24 if i else 16, 4)
    with pytest.raises(MaskError, match="img01.png' is 24x24"):
        evaluate(model, Images(2), {"kind": "paired", "root": str(paired)}, "self",
                 evaluator=_evaluator(("l1",)))
    with pytest.raises(ProtocolError, match="Asked for 5 test images but the test set has 2"):
        evaluate(model, Images(2), "center", "self", evaluator=_evaluator(("l1",)), n_images=5)


def test_paired_masks_follow_file_names_and_a_mask_without_hole_is_refused(model, tmp_path):
    paired = tmp_path / "paired"
    paired.mkdir()
    for i, r in enumerate((2, 6, 0)):                 # the third mask has no hole
        _write_mask(paired / f"img{i:02d}.png", SIZE, r)
    data = Images(3)
    # Before the fix the image was scored with NaN hole metrics (and Infinity / NaN in the
    # results files); now it is one sentence naming the file.
    with pytest.raises(ProtocolError, match=r"img02\.png' has no hole pixel"):
        evaluate(model, data, {"kind": "paired", "root": str(paired)}, "self",
                 evaluator=_evaluator(("l1",)), batch=3)
    rows = (2, 6, 3)
    _write_mask(paired / "img02.png", SIZE, 3)
    res = evaluate(model, data, {"kind": "paired", "root": str(paired)}, "self",
                   evaluator=_evaluator(("l1",)), batch=3, record_pairs=True,
                   save_dir=str(tmp_path / "out"))
    assert [p["mask"] for p in res["pairs"]] == ["img00.png", "img01.png", "img02.png"]
    hole_l1 = []
    for i, r in enumerate(rows):
        saved = np.asarray(Image.open(tmp_path / "out" / "masks" / "all" / "r0" / f"img{i:02d}.png"))
        assert (saved[:r] == 255).all() and (saved[r:] == 0).all()
        img = pil_to_tensor(Image.open(tmp_path / "out" / "images" / "all" / "r0" / f"img{i:02d}.png"))
        diff = (to_unit(img) - to_unit(data.x[i])).abs()
        total = to_unit(img) + to_unit(data.x[i])
        assert (diff[:, r:] == 0).all()               # known pixels untouched
        hole_l1.append(float(diff[:, :r].sum() / total[:, :r].sum()))
    r = res["repeats"][0]["results"][ALL_BUCKET]
    assert r["l1_hole"] == pytest.approx(np.mean(hole_l1), rel=1e-9)


def test_real_features_are_computed_once_across_repeats(model):
    # Inception features of the real images do not depend on the repeat (or bucket): evaluate()
    # computes them once per batch and hands them to the Evaluator again.
    data = Images(4)
    ev = _evaluator(("fid", "ids", "psnr"))
    calls = []
    ev.inception.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    both = evaluate(model, data, "center", "reverse", evaluator=ev, batch=2, seed=4, repeats=2)
    assert len(calls) == 2 * 2 + 2          # fakes: repeats x batches; reals: batches
    for r in (0, 1):
        single = evaluate(model, data, "center", "reverse", evaluator=_evaluator(("fid", "ids", "psnr")),
                          batch=2, seed=4 + r)
        assert both["repeats"][r]["results"] == single["repeats"][0]["results"]


def test_evaluator_reuses_given_real_features():
    g = torch.Generator().manual_seed(1)
    fake, real = (quantize_8bit(torch.rand(3, 3, SIZE, SIZE, generator=g) * 2 - 1) for _ in range(2))
    a, b = _evaluator(("fid", "ids")), _evaluator(("fid", "ids"))
    a.update(fake, real)
    b.update(fake, real, real_features=b.real_features(real))
    assert torch.equal(a.state()["real_feats"], b.state()["real_feats"])
    assert a.compute() == b.compute()
    with pytest.raises(EvaluatorError, match="real_features has 2 rows for 3 images"):
        b.update(fake, real, real_features=b.real_features(real[:2]))
    assert _evaluator(("psnr",)).real_features(real) is None
