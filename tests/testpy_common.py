"""What the two test.py end-to-end test files share (tests/test_test_py.py: a checkpoint under a
protocol; tests/test_test_py_pred.py: completions that exist, --pred / --gt): tiny checkpoints in
our format and in the authors' layout (with a pickled argparse.Namespace), a tiny pSp file, a
handful of demo faces, and random-weight FID Inception / VGG16 files in their real layouts, all
loaded through the real loaders; the root test.py as a module, and small readers.
"""
import argparse
import csv
import hashlib
import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.folder import ImageFolderDataset
from metrics.standins import standin_style_encoder
from models.checkpoint import make_checkpoint, save_checkpoint
from models.discriminator import Discriminator
from models.generator import Generator
from tests.models.test_psp import _psp_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 16
ALL_KEYS = {"n_images", "fid", "u_ids", "p_ids", "lpips", "psnr", "ssim", "l1", "l1_hole",
            "psnr_hole"}


def entry_module():
    """The root test.py as a module (the name 'test' is taken by the standard library)."""
    spec = importlib.util.spec_from_file_location("exegan_test_entry",
                                                  os.path.join(ROOT, "test.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tiny_generator(seed):
    torch.manual_seed(seed)
    return Generator(SIZE, style_dim=16, n_mlp=2, channel_multiplier=2, channel_max=16).eval()


def write_mask(path, size, rows):
    a = np.zeros((size, size), np.uint8)
    a[:rows] = 255                      # white = hole
    Image.fromarray(a, "L").save(path)


@pytest.fixture(scope="module", name="files")
def files_fixture(tmp_path_factory, inception_weights_file):
    """The checkpoints, the pSp file, the faces and the metric networks' files (a test module
    imports tests.metrics.conftest's inception_weights_file fixture beside this one)."""
    import torchvision
    from datasets.demo import make_demo_faces

    root = tmp_path_factory.mktemp("e2e")
    g = tiny_generator(0)
    d = Discriminator(SIZE, channel_multiplier=2, channel_max=16)
    ours = root / "ours.pt"
    save_checkpoint(make_checkpoint(g=g, d=d, g_ema=g, step=7, config={"train": {"seed": 5}}),
                    ours)
    # The authors' layout: state dicts + their argparse.Namespace of training options.
    g2 = tiny_generator(1)
    authors = root / "EXE_GAN_model_16.pt"
    torch.save({"g": g2.state_dict(), "d": d.state_dict(), "g_ema": g2.state_dict(),
                "args": argparse.Namespace(size=SIZE, latent=16, n_mlp=2, channel_multiplier=2,
                                           batch=4, iter=1000)}, authors)
    enc = standin_style_encoder(g.exemplar_start, g.n_exemplar, g.n_latent, 16, seed=3)
    psp = _psp_file(enc, enc.latent_avg.clone(), root / "psp.pt")
    faces = make_demo_faces(str(root / "faces"), n=1, size=SIZE, seed=0, n_test=4).test
    # torchvision VGG16 trunk keys (features.*), the part of vgg16-397923af.pth LPIPS reads.
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    vgg = root / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, vgg)
    return argparse.Namespace(root=root, ours=str(ours), authors=str(authors), psp=str(psp),
                              faces=faces, vgg=str(vgg), inception=inception_weights_file)


@pytest.fixture(scope="module", name="entry")
def entry_fixture():
    return entry_module()


def run_cli(entry, capsys, *args):
    rc = entry.main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def real_images(faces):
    ds = ImageFolderDataset(faces, SIZE)
    return ds, torch.stack([ds[i] for i in range(len(ds))])


def png(path):
    return np.asarray(Image.open(path))



def strict_json(path):
    """json.loads that refuses the non-standard NaN / Infinity tokens."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token} in {path}")
    return json.loads(path.read_text(), parse_constant=refuse)
