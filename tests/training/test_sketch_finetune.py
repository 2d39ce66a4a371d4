"""The sketch-guided fine-tune through the real training loop (training/sketch.py on top of
models/sketch.py): start from a trained tiny base run, exact base behaviour at step 0, a changed
model after a few steps, bitwise resume, the exported file read back as a SketchGenerator and
used by scripts/inpaint.py --sketch; plus the stand-in pSp file of allow_random runs."""
import json
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from models import load_style_encoder
from models.checkpoint import CheckpointError, load_generator
from models.sketch import SketchGenerator, extract_edges, load_sketch_generator
from training import cli, distributed as dist_utils
from training.checkpointing import load_training_checkpoint
from training.run import run
from training.trainer import Trainer
from training.sketch import gin_with_edges as make_gin, make_sketch
from trainutil import SIZE, tiny_config, tiny_dict, write_yaml

SKETCH_STEPS = dict(train={"iters": 4, "ckpt_every": 2, "deterministic": True},
                    loss={"d_reg_every": 2, "g_reg_every": 2})


@pytest.fixture(scope="module")
def base_run(face_dirs, tmp_path_factory):
    """A tiny base model trained for 2 steps: its latest checkpoint (g, g_ema, d)."""
    res = run(tiny_config(face_dirs, tmp_path_factory.mktemp("base"), train={"iters": 2}))
    return res


def _sketch_cfg(face_dirs, outdir, base_ckpt, **extra):
    sections = {k: dict(v) for k, v in SKETCH_STEPS.items()}
    sections["sketch"] = {"enabled": True, "base_checkpoint": base_ckpt, "drop_prob": 0.25,
                          "edge_threshold": 0.02}
    for k, v in extra.items():
        sections.setdefault(k, {}).update(v)
    return tiny_config(face_dirs, outdir, **sections)


def _inputs(trainer, face_dirs):
    from datasets.folder import ImageFolderDataset
    from datasets.mask_generators import CenterMask

    ds = ImageFolderDataset(face_dirs[1], SIZE)
    real = torch.stack([ds[i] for i in range(4)])
    mask = CenterMask()(SIZE)[None].expand(4, -1, -1, -1).contiguous()
    codes = trainer.pre.style_encoder(real.flip(0))
    z = torch.randn(4, trainer.G.style_dim, generator=torch.Generator().manual_seed(5))
    return real, mask, codes, z


def test_make_sketch_drops_whole_samples_from_the_seeded_stream(face_dirs, tmp_path, base_run):
    cfg = _sketch_cfg(face_dirs, tmp_path, os.path.join(base_run.run_dir, "checkpoints", "latest.pt"),
                      sketch={"drop_prob": 0.5})
    real = torch.rand(8, 3, SIZE, SIZE) * 2 - 1
    mask = torch.zeros(8, 1, SIZE, SIZE)
    mask[..., 4:12, 4:12] = 1
    edges = extract_edges(real, mask, threshold=0.02)
    assert (edges.flatten(1).sum(1) > 0).all()
    g = np.random.default_rng(7)
    keep = np.random.default_rng(7).random(8) >= 0.5
    sk = make_sketch(cfg, real, mask, g)
    for i in range(8):
        assert torch.equal(sk[i], edges[i] if keep[i] else torch.zeros_like(edges[i])), i
    assert 0 < keep.sum() < 8
    assert torch.equal(make_sketch(cfg, real, mask), edges)  # evaluation: no drops
    gin = make_gin(cfg, real, mask)
    assert gin.shape[1] == 5 and torch.equal(gin[:, :4], torch.cat([real * (1 - mask), mask - 0.5], 1))


def test_sketch_finetune_starts_at_the_base_and_resumes_bitwise(face_dirs, tmp_path, base_run):
    base_ckpt = os.path.join(base_run.run_dir, "checkpoints", "latest.pt")
    cfg = _sketch_cfg(face_dirs, tmp_path / "a", base_ckpt)

    # Step 0: the upgraded networks are the base networks; with a sketch they compute exactly
    # what the base computes on the 4-channel gin.
    t = Trainer(cfg, dist_utils.DistInfo(), logging.getLogger("test"))
    assert isinstance(t.G, SketchGenerator) and isinstance(t.G_ema, SketchGenerator)
    assert t.G.training and not t.G_ema.training and t.D.training
    base = load_training_checkpoint(base_ckpt)
    for k, v in t.D.state_dict().items():
        assert torch.equal(v, base["d"][k]), k
    base_G = load_generator(base_ckpt, which="g_ema")
    real, mask, codes, z = _inputs(t, face_dirs)
    gin5 = make_gin(cfg, real, mask)
    assert gin5[:, 4].sum() > 0  # the sketch is not empty
    with torch.no_grad():
        want = base_G(gin5[:, :4], codes, [z], randomize_noise=False)
        assert torch.equal(t.G_ema(gin5, codes, [z], randomize_noise=False), want)
    assert t.G.sketch_weight.abs().sum() == 0

    # A short fine-tune: 4 steps straight vs 2 + stop + resume 2.
    straight = run(cfg)
    part1 = run(_sketch_cfg(face_dirs, tmp_path / "b", base_ckpt), stop_at=2)
    ck_b = os.path.join(part1.run_dir, "checkpoints")
    # The resume needs no base checkpoint any more: the networks come from the run's own file.
    resumed_cfg = _sketch_cfg(face_dirs, tmp_path / "b", str(tmp_path / "gone.pt"))
    part2 = run(resumed_cfg, resume=os.path.join(ck_b, "latest.pt"))
    torch.use_deterministic_algorithms(False)
    assert part2.step == 4
    a = load_training_checkpoint(os.path.join(straight.run_dir, "checkpoints", "latest.pt"))
    b = load_training_checkpoint(os.path.join(ck_b, "latest.pt"))
    for key in ("g", "d", "g_ema"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    assert a["arch"]["g"]["sketch_channels"] == 1 and a["g"]["down_from_big.0.weight"].shape[1] == 5

    # The fine-tuned model's output with a sketch differs from the base, the sketch column moved.
    export = os.path.join(ck_b, "export.pt")
    G = load_sketch_generator(export)
    assert G.sketch_weight.abs().sum() > 0
    assert all(torch.equal(v, part2.trainer.G_ema.state_dict()[k]) for k, v in G.state_dict().items())
    with torch.no_grad():
        assert not torch.equal(G(gin5, codes, [z], randomize_noise=False), want)
    # The plain loader points at the sketch loader.
    with pytest.raises(CheckpointError, match="load_sketch_generator"):
        load_generator(export)

    # scripts/inpaint.py --sketch on the export, with the run's stand-in pSp file.
    from scripts import inpaint
    d = tmp_path / "inputs"
    d.mkdir()
    img = ((real[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    Image.fromarray(img).save(d / "face.png")
    Image.fromarray(img[::-1].copy()).save(d / "ex.png")
    Image.fromarray((mask[0, 0].numpy() * 255).astype(np.uint8)).save(d / "mask.png")
    strokes = np.zeros((SIZE, SIZE), np.uint8)
    strokes[8, 4:12] = 255
    Image.fromarray(strokes).save(d / "sketch.png")
    with open(os.path.join(part1.run_dir, "summary.json")) as f:
        psp = json.load(f)["standin_psp"]
    out = tmp_path / "out"
    rc = inpaint.main(["--ckpt", export, "--psp", psp, "--image", str(d / "face.png"), "--mask",
                       str(d / "mask.png"), "--exemplar", str(d / "ex.png"), "--sketch",
                       str(d / "sketch.png"), "--out", str(out), "--no-sheet"])
    assert rc == 0
    res = np.asarray(Image.open(out / "face_sample0.png"))
    known = mask[0, 0].numpy() == 0
    assert np.array_equal(res[known], img[known])


def test_missing_base_checkpoint_is_one_sentence_before_the_run_dir(face_dirs, tmp_path, capsys):
    data = tiny_dict(face_dirs, tmp_path / "runs",
                     sketch={"enabled": True, "base_checkpoint": str(tmp_path / "nope.pt")})
    rc = cli.main(["--config", write_yaml(tmp_path / "s.yaml", data)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "sketch.base_checkpoint" in err and "nope.pt" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "runs")


def test_standin_style_encoder_is_saved_in_the_psp_layout(face_dirs, tmp_path):
    res = run(tiny_config(face_dirs, tmp_path, train={"iters": 1}))
    path = os.path.join(res.run_dir, "checkpoints", "standin_psp.pt")
    with open(os.path.join(res.run_dir, "summary.json")) as f:
        assert json.load(f)["standin_psp"] == path
    enc = res.trainer.pre.style_encoder
    G = res.trainer.G
    loaded = load_style_encoder(path, G.exemplar_start, G.n_exemplar)
    assert loaded.state_dict().keys() == enc.state_dict().keys()
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert torch.equal(loaded.latent_avg, enc.latent_avg)
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), enc(x))
