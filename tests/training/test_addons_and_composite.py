"""The sketch fine-tune is an add-on a plain run never imports, and the loop's composite (the one
``models.exegan.composite``) gives the training step the values of the arithmetic form
``real * (1 - mask) + pred * mask`` the loop wrote by hand before: losses and weights bit for bit."""
import json
import logging
import subprocess
import sys

import torch

from training import distributed as dist_utils
from trainutil import REPO, tiny_dict


def test_a_plain_run_never_imports_the_sketch_add_on(face_dirs, tmp_path):
    """Build a Trainer and run two steps in a fresh interpreter."""
    cfg = tiny_dict(face_dirs, tmp_path / "runs")
    code = f"""
import json, logging, sys
import torch
from training import distributed as dist_utils
from training.config import from_dict, validate
from training.trainer import Trainer
torch.set_num_threads(1)
cfg = from_dict(json.loads({json.dumps(json.dumps(cfg))}))
validate(cfg)
t = Trainer(cfg, dist_utils.DistInfo(), logging.getLogger("t"))
real = torch.rand(4, 3, cfg.model.size, cfg.model.size) * 2 - 1
for step in (0, 1):
    t.train_step(step, real)
print(json.dumps(sorted(m for m in sys.modules if "sketch" in m)))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "training.sketch" not in loaded and "models.sketch" not in loaded, loaded


def _state(t):
    return {**{f"G.{k}": v for k, v in t.G.state_dict().items()},
            **{f"D.{k}": v for k, v in t.D.state_dict().items()},
            **{f"E.{k}": v for k, v in t.G_ema.state_dict().items()}}


def test_training_step_values_equal_the_arithmetic_composite(face_dirs, tmp_path, monkeypatch):
    from training import trainer as trainer_mod
    from training.config import from_dict, validate

    cfg = from_dict(tiny_dict(face_dirs, tmp_path / "runs",
                              loss={"allow_random_backbone": True, "d_reg_every": 1, "g_reg_every": 1}))
    validate(cfg)
    real = torch.rand(4, 3, cfg.model.size, cfg.model.size, generator=torch.Generator().manual_seed(5)) * 2 - 1

    def run():
        t = trainer_mod.Trainer(cfg, dist_utils.DistInfo(), logging.getLogger("t"))
        stats = [t.train_step(step, real) for step in (0, 1)]
        return stats, _state(t)

    stats_a, state_a = run()
    calls = []

    def arithmetic(x, m, pred):
        calls.append(1)
        return x * (1 - m) + pred * m

    monkeypatch.setattr(trainer_mod, "composite", arithmetic)
    stats_b, state_b = run()
    assert len(calls) == 4  # D main and G main, two steps
    for a, b in zip(stats_a, stats_b):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])), k
    changed = [k for k in state_a if not torch.equal(state_a[k], state_b[k])]
    assert not changed, changed[:5]


def test_full_size_standins_are_the_released_architectures(face_dirs, tmp_path):
    """pretrained.standin_size=full (what scripts/benchmark.py times): the pSp encoder with its 18
    heads at full width and the ResNet-101 ArcFace, random, and the objective uses them."""
    from models.identity import IdentityNet
    from models.psp import StyleEncoder
    from training.config import from_dict, validate
    from training.trainer import Trainer

    cfg = from_dict(tiny_dict(face_dirs, tmp_path / "runs", pretrained={"allow_random": True,
                                                                       "standin_size": "full"}))
    validate(cfg)
    t = Trainer(cfg, dist_utils.DistInfo(), logging.getLogger("t"))
    tiny = Trainer(from_dict(tiny_dict(face_dirs, tmp_path / "runs")), dist_utils.DistInfo(),
                   logging.getLogger("t"))
    enc, ident = t.pre.style_encoder, t.pre.identity
    assert isinstance(enc, StyleEncoder) and enc.n_styles == 18 and isinstance(ident, IdentityNet)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(enc) > 20 * count(tiny.pre.style_encoder)
    assert count(ident) > 20 * count(tiny.pre.identity)
    assert t.pre.random == ("style encoder", "identity net", "LPIPS VGG16")
    mods = set(map(id, t.objective.modules()))
    assert id(enc) in mods and id(ident) in mods and id(t.pre.lpips) in mods
