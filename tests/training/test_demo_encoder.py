"""pretrained.standin_encoder_steps (demo only): the stand-in style encoder trained on the demo
faces' recorded attributes - labels, determinism, that it learns, the config checks, and that
test.py finds the trained encoder of a run."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.demo import make_demo_faces
from metrics.standins import (STANDIN_PSP_FILE, PixelDistance, standin_style_encoder,
                              trained_standin_path)
from models.checkpoint import safe_load
from models.psp import load_style_encoder
from training.config import ConfigError, from_dict, validate
from training.demo_encoder import ATTRIBUTES, load_labelled_faces, train_attribute_encoder
from training.run import run

from trainutil import SIZE, STYLE_DIM, tiny_dict


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return make_demo_faces(str(tmp_path_factory.mktemp("enc") / "faces"), n=24, size=SIZE, seed=5,
                           n_test=8)


def test_labels_are_the_manifest_records(faces):
    x, labels = load_labelled_faces(faces.root, "train", SIZE)
    records = [a for a in faces.attributes if a["split"] == "train"]
    assert x.shape == (24, 3, SIZE, SIZE) and -1 <= x.min() and x.max() <= 1
    first = np.asarray(Image.open(os.path.join(faces.root, records[0]["file"])), np.float32)
    assert torch.allclose(x[0].permute(1, 2, 0), torch.from_numpy(first) / 127.5 - 1)
    for name, classes in ATTRIBUTES.items():
        assert [classes[i] for i in labels[name].tolist()] == [r[name] for r in records]
    with pytest.raises(FileNotFoundError, match="make_demo_faces"):
        load_labelled_faces(str(faces.root) + "-missing")


def _encoder():
    # The demo's shape at this size: 16-px generator -> n_latent 6, exemplar slots [4, 6).
    return standin_style_encoder(4, 2, 6, STYLE_DIM, seed=0)


def test_training_learns_the_attributes_and_is_seeded(faces):
    x, labels = load_labelled_faces(faces.root, "train", SIZE)
    hair = {"hair_color": labels["hair_color"]}
    enc = _encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    acc = train_attribute_encoder(enc, x, hair, steps=60, seed=1, batch=24, lr=5e-3)
    # 8 hair colours (chance 1/8): on 24 faces the last quarter of the steps is well above it.
    assert acc["hair_color"] > 0.5
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.training
    assert any(not torch.equal(before[k], v) for k, v in enc.state_dict().items())
    again = _encoder()
    assert train_attribute_encoder(again, x, hair, steps=60, seed=1, batch=24, lr=5e-3) == acc
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in enc.state_dict().items())


def _demo_cfg(faces, outdir, **pretrained):
    d = tiny_dict(("unused", "unused"), outdir, pretrained={"allow_random": True, **pretrained},
                  train={"iters": 1})
    d["data"] = {"kind": "demo", "demo_root": faces.root, "demo_train": 24, "demo_test": 8,
                 "demo_seed": 5, "num_workers": 0}
    return d


def test_option_needs_random_standins_and_demo_faces(faces, tmp_path):
    ok = from_dict(_demo_cfg(faces, tmp_path, standin_encoder_steps=5))
    validate(ok)
    for change in ({"pretrained": {"allow_random": False, "standin_encoder_steps": 5}},
                   {"pretrained": {"allow_random": True, "standin_encoder_steps": -1}}):
        d = _demo_cfg(faces, tmp_path)
        d.update(change)
        with pytest.raises(ConfigError, match="pretrained.standin_encoder_steps"):
            validate(from_dict(d))
    d = tiny_dict(("a", "b"), tmp_path, pretrained={"allow_random": True, "standin_encoder_steps": 5})
    with pytest.raises(ConfigError, match="data.kind=demo"):
        validate(from_dict(d))


def test_pixel_lpips_standin_known_values_and_checks(faces, tmp_path):
    a = torch.zeros(2, 3, 4, 4)
    b = torch.zeros(2, 3, 4, 4)
    b[0] = 0.5
    b[1, 0, :2] = 1.0          # 8 of 48 values differ by 1
    d = PixelDistance()(a, b)
    assert d.shape == (2, 1, 1, 1)
    assert torch.allclose(d.flatten(), torch.tensor([0.5, 8 / 48]))
    validate(from_dict(_demo_cfg(faces, tmp_path, standin_lpips="pixel_l1")))
    for pre in ({"allow_random": False, "standin_lpips": "pixel_l1"},
                {"allow_random": True, "standin_lpips": "l2"}):
        d = _demo_cfg(faces, tmp_path)
        d["pretrained"] = pre
        with pytest.raises(ConfigError, match="pretrained.standin_lpips"):
            validate(from_dict(d))


def test_run_trains_saves_and_test_py_finds_the_trained_encoder(faces, tmp_path):
    cfg = from_dict(_demo_cfg(faces, tmp_path, standin_encoder_steps=4, standin_lpips="pixel_l1"))
    validate(cfg)
    res = run(cfg)
    assert isinstance(res.trainer.pre.lpips, PixelDistance)
    assert "LPIPS (pixel L1 stand-in)" in res.trainer.pre.random
    enc = res.trainer.pre.style_encoder
    G = res.trainer.G
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    with torch.no_grad():  # trained: not the seeded random stand-in any more
        assert not torch.allclose(enc(x), _encoder()(x))
    export = os.path.join(res.run_dir, "checkpoints", "export.pt")
    config = safe_load(export)["config"]
    path = trained_standin_path(export, config)
    assert path == os.path.join(res.run_dir, "checkpoints", STANDIN_PSP_FILE)
    loaded = load_style_encoder(path, G.exemplar_start, G.n_exemplar)
    with torch.no_grad():
        assert torch.equal(loaded(x), enc(x))
    os.remove(path)
    with pytest.raises(FileNotFoundError, match="--psp"):
        trained_standin_path(export, config)
    # A run without the option: the seeded random stand-in is rebuilt, nothing is looked up.
    plain = run(from_dict(_demo_cfg(faces, tmp_path / "plain")))
    plain_export = os.path.join(plain.run_dir, "checkpoints", "export.pt")
    assert trained_standin_path(plain_export, safe_load(plain_export)["config"]) is None
