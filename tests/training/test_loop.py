"""The real training loop on a tiny 16-px config on CPU: every loss term, outputs, evaluation,
pretrained networks read through the real loaders, bitwise resume, and non-finite losses."""
import json
import math
import os

import pytest
import torch

from training import cli, distributed as dist_utils
from training.checkpointing import load_training_checkpoint
from training.run import run
from training.trainer import Trainer
from trainutil import tiny_config, tiny_dict, write_yaml


def _rows(run_dir, kind="train"):
    with open(os.path.join(run_dir, "stats.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == kind]


def _file_config(face_dirs, outdir, files, **extra):
    sections = dict(
        pretrained={"allow_random": False, "style_encoder": files["style_encoder"],
                    "identity": files["identity"], "identity_kind": "resnet101",
                    "inception": files["inception"]},
        loss={"allow_random_backbone": False, "lpips_vgg_path": files["vgg"],
              "d_reg_every": 2, "g_reg_every": 2},
    )
    sections.update(extra)
    return tiny_config(face_dirs, outdir, **sections)


def test_pretrained_networks_come_from_the_files(face_dirs, pretrained_files, tmp_path):
    cfg = _file_config(face_dirs, tmp_path, pretrained_files)
    info = dist_utils.DistInfo()
    import logging
    t = Trainer(cfg, info, logging.getLogger("test"))
    psp = torch.load(pretrained_files["style_encoder"], weights_only=True)
    enc = t.pre.style_encoder
    for k, v in enc.state_dict().items():
        assert torch.equal(v, psp["state_dict"][f"encoder.{k}"]), k
    assert torch.equal(enc.latent_avg, psp["latent_avg"])
    assert (enc.start, enc.n) == (t.G.exemplar_start, t.G.n_exemplar)
    arc = torch.load(pretrained_files["identity"], weights_only=True)
    assert all(torch.equal(v, arc[k]) for k, v in t.pre.identity.backbone.state_dict().items())
    vgg = torch.load(pretrained_files["vgg"], weights_only=True)
    assert torch.equal(t.pre.lpips.net.slice5.state_dict()["28.weight"], vgg["features.28.weight"])
    assert t.pre.random == ()
    # Adam with the lazy-regularization correction, c = k / (k + 1).
    c = 2 / 3
    assert t.g_optim.param_groups[0]["lr"] == pytest.approx(0.002 * c)
    assert t.g_optim.param_groups[0]["betas"] == pytest.approx((0.0, 0.99 ** c))


def test_all_losses_outputs_and_evaluation(face_dirs, pretrained_files, tmp_path):
    cfg = _file_config(face_dirs, tmp_path / "runs", pretrained_files,
                       train={"iters": 4, "ckpt_every": 2},
                       eval={"every": 2, "n_images": 4, "batch": 4,
                             "metrics": ["fid", "lpips", "psnr", "ssim", "l1"], "best_metric": "fid"},
                       log={"sample_every": 2})
    res = run(cfg)
    assert res.step == 4 and res.stopped_by is None
    run_dir = res.run_dir
    assert os.path.basename(run_dir) == "00000-tiny"

    rows = _rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        for k in ("d_loss", "g_adv", "g_attr", "g_id", "g_lpips", "g_total", "real_score", "fake_score"):
            assert math.isfinite(r[k]), (k, r)
    assert {r["step"] for r in rows if "r1" in r} == {1, 3}           # iterations 0 and 2
    assert {r["step"] for r in rows if "path_penalty" in r} == {1, 3}
    assert all(math.isfinite(r["r1"]) and math.isfinite(r["path_penalty"]) for r in rows if "r1" in r)
    assert any(r["g_lpips"] > 0 for r in rows) and all(r["g_id"] > 0 for r in rows)
    for r in rows:  # the objective's total is the weighted sum of its terms
        total = r["g_adv"] + 0.1 * r["g_attr"] + 0.1 * r["g_id"] + 0.5 * r["g_lpips"]
        assert r["g_total"] == pytest.approx(total, rel=1e-5)

    evals = _rows(run_dir, "eval")
    assert [e["step"] for e in evals] == [2, 4]
    for e in evals:
        for k in ("fid", "lpips", "psnr", "ssim", "l1", "l1_hole", "psnr_hole"):
            assert math.isfinite(e[k]), (k, e)
        assert e["n_images"] == 4

    ck = os.path.join(run_dir, "checkpoints")
    assert sorted(os.listdir(ck)) == ["best.pt", "ckpt-0000002.pt", "ckpt-0000004.pt", "export.pt",
                                      "g_ema-0000002.pt", "g_ema-0000004.pt", "latest.pt"]
    latest = load_training_checkpoint(os.path.join(ck, "latest.pt"))  # weights_only
    assert latest["step"] == 4 and latest["config"]["name"] == "tiny"
    best_step = min(evals, key=lambda e: e["fid"])["step"]
    assert load_training_checkpoint(os.path.join(ck, "best.pt"))["step"] == best_step
    trainer = res.trainer
    for k, v in trainer.G_ema.state_dict().items():
        assert torch.equal(latest["g_ema"][k], v)
    # The small export rebuilds G_ema by itself through the models package.
    from models import load_generator
    G = load_generator(os.path.join(ck, "export.pt"))
    assert all(torch.equal(v, trainer.G_ema.state_dict()[k]) for k, v in G.state_dict().items())

    # TensorBoard events hold the same scalars and the sample grids.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(run_dir)
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/d_loss")] == [1, 2, 3, 4]
    assert [e.value for e in acc.Scalars("train/d_loss")] == pytest.approx([r["d_loss"] for r in rows])
    assert [e.step for e in acc.Scalars("eval/fid")] == [2, 4]
    assert len(acc.Images("samples/input_mask_exemplar_output_gt")) == 3  # steps 0, 2, 4
    assert sorted(os.listdir(os.path.join(run_dir, "samples"))) == [
        "step-0000000.png", "step-0000002.png", "step-0000004.png"]
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["first_eval"]["step"] == 2 and summary["last_eval"]["step"] == 4
    assert summary["final_samples"].endswith("samples/step-0000004.png")

    # A second run never reuses the directory.
    cfg2 = tiny_config(face_dirs, tmp_path / "runs", train={"iters": 1})
    assert os.path.basename(run(cfg2).run_dir) == "00001-tiny"


def _assert_same_state(a, b):
    for key in ("g", "d", "g_ema"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    for key in ("g_optim", "d_optim"):
        sa, sb = a[key]["state"], b[key]["state"]
        assert sa.keys() == sb.keys()
        for i in sa:
            for name in sa[i]:
                assert torch.equal(torch.as_tensor(sa[i][name]), torch.as_tensor(sb[i][name])), (key, i, name)
        assert a[key]["param_groups"] == b[key]["param_groups"]
    assert a["pl_mean"] == b["pl_mean"] and a["step"] == b["step"]


def test_resume_is_bitwise_identical(face_dirs, tmp_path):
    # 8 steps straight vs 4 + stop + resume 4. The second half holds an R1 step (iteration 4)
    # and path-length steps (4, 6); DiffAugment, style mixing and flips are on.
    sections = dict(train={"iters": 8, "deterministic": True, "diffaug": True},
                    loss={"d_reg_every": 4, "g_reg_every": 2})
    straight = run(tiny_config(face_dirs, tmp_path / "a", **sections))
    part1 = run(tiny_config(face_dirs, tmp_path / "b", **sections), stop_at=4)
    assert part1.step == 4 and part1.stopped_by == "stop_at"
    ck_b = os.path.join(part1.run_dir, "checkpoints")
    assert load_training_checkpoint(os.path.join(ck_b, "latest.pt"))["step"] == 4
    part2 = run(tiny_config(face_dirs, tmp_path / "b", **sections),
                resume=os.path.join(ck_b, "latest.pt"))
    assert part2.run_dir == part1.run_dir and part2.step == 8
    torch.use_deterministic_algorithms(False)

    a = load_training_checkpoint(os.path.join(straight.run_dir, "checkpoints", "latest.pt"))
    b = load_training_checkpoint(os.path.join(ck_b, "latest.pt"))
    _assert_same_state(a, b)
    rows_a = {r["step"]: r for r in _rows(straight.run_dir)}
    rows_b = {r["step"]: r for r in _rows(part1.run_dir)}
    strip = lambda r: {k: v for k, v in r.items() if k not in ("images_per_s", "sec_per_it")}
    for step in range(5, 9):
        assert strip(rows_a[step]) == strip(rows_b[step])
    assert "r1" in rows_b[5] and "path_penalty" in rows_b[7]
    with open(os.path.join(part1.run_dir, "log.txt")) as f:
        log = f.read()
    assert "starting run" in log and "resuming run" in log  # one log, appended


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(face_dirs, tmp_path, monkeypatch, capsys):
    original = Trainer.train_step

    def poisoned(self, step, real):
        if step == 3:  # the fourth iteration: after the checkpoint at step 2
            with torch.no_grad():
                next(self.G.parameters()).fill_(float("nan"))
        return original(self, step, real)

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    cfg_path = write_yaml(tmp_path / "tiny.yaml",
                          tiny_dict(face_dirs, tmp_path / "runs", train={"iters": 6, "ckpt_every": 2}))
    rc = cli.main(["--config", cfg_path])
    err = capsys.readouterr().err
    assert rc == 2
    assert "error: Non-finite loss at step 4" in err and "Traceback" not in err
    ck = tmp_path / "runs" / "00000-tiny" / "checkpoints"
    assert sorted(os.listdir(ck)) == ["ckpt-0000002.pt", "export.pt", "g_ema-0000002.pt", "latest.pt"]
    latest = load_training_checkpoint(str(ck / "latest.pt"))
    assert latest["step"] == 2
    assert all(torch.isfinite(v).all() for v in latest["g"].values() if v.is_floating_point())


def test_bf16_autocast_stays_finite(face_dirs, tmp_path):
    # train.amp = bf16 on CPU: autocast of the G/D forwards through R1 and path-length steps.
    sections = dict(train={"iters": 3}, loss={"d_reg_every": 2, "g_reg_every": 2})
    fp32 = run(tiny_config(face_dirs, tmp_path / "fp32", **sections))
    sections["train"]["amp"] = "bf16"
    bf16 = run(tiny_config(face_dirs, tmp_path / "bf16", **sections))
    rows = _rows(bf16.run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(v) for r in rows for k, v in r.items() if isinstance(v, float))
    # Autocast was in effect: the same seeded step gives other numbers than in float32.
    assert rows[0]["real_score"] != _rows(fp32.run_dir)[0]["real_score"]
    t = bf16.trainer
    assert all(torch.isfinite(p).all() for p in t.G.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(t.G.parameters(), fp32.trainer.G.parameters()))


def test_modconv_setting_holds_during_the_run_and_is_restored(face_dirs, tmp_path, monkeypatch):
    from models import stylegan2

    seen = []
    original = Trainer.train_step

    def spy(self, step, real):
        seen.append(stylegan2.get_modconv_impl())
        return original(self, step, real)

    monkeypatch.setattr(Trainer, "train_step", spy)
    before = stylegan2.get_modconv_impl()
    run(tiny_config(face_dirs, tmp_path, train={"iters": 2, "modconv": "batched"}))
    assert seen == ["batched", "batched"]
    assert stylegan2.get_modconv_impl() == before
