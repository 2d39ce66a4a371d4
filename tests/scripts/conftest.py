"""Fixtures of the application-script tests: tiny EXE-GAN / sketch / pSp files written in the real
formats (models.checkpoint for G and D, the pSp dict for the style encoder) and small test images."""
import numpy as np
import pytest
import torch
from PIL import Image

from models import Discriminator, Generator, make_checkpoint, save_checkpoint
from models.sketch import upgrade_generator
from metrics.standins import standin_style_encoder

SIZE = 16  # model resolution of the tiny networks (exemplar slots 4, 5)


def _tiny_generator(seed=0):
    torch.manual_seed(seed)
    g = Generator(SIZE, style_dim=16, n_mlp=2, channel_multiplier=2, channel_max=16)
    with torch.no_grad():  # trained noise strengths are non-zero; fresh ones are 0
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.3)
    return g.eval()


def _save_exe(g, path):
    d = Discriminator(SIZE, channel_multiplier=2, channel_max=16)
    save_checkpoint(make_checkpoint(g=g, d=d, g_ema=g, step=1), path)
    return str(path)


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    """{'exe', 'psp', 'sketch0', 'sketch'}: a tiny EXE-GAN, its pSp file, the same generator upgraded
    with a zero sketch column, and one whose sketch column is non-zero."""
    root = tmp_path_factory.mktemp("ckpt")
    g = _tiny_generator()
    out = {"exe": _save_exe(g, root / "exe.pt")}
    enc = standin_style_encoder(g.exemplar_start, g.n_exemplar, g.n_latent, g.style_dim, seed=0)
    state = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    torch.save({"opts": {"encoder_type": "GradualStyleEncoder"}, "state_dict": state,
                "latent_avg": enc.latent_avg.clone()}, root / "psp.pt")
    out["psp"] = str(root / "psp.pt")
    sg = upgrade_generator(g)
    out["sketch0"] = _save_exe(sg, root / "sketch0.pt")
    with torch.no_grad():
        sg.sketch_weight.normal_(0, 3.0)
    out["sketch"] = _save_exe(sg, root / "sketch.pt")
    return out


def write_rgb(path, h, w, seed):
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return a


def write_mask(path, hole):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(hole.astype(np.uint8) * 255).save(path)
    return hole


def box_hole(h, w, top, left, bottom, right):
    hole = np.zeros((h, w), bool)
    hole[top:bottom, left:right] = True
    return hole


def read(path):
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="session")
def h():
    """Small helpers for writing / reading test images."""
    import types
    return types.SimpleNamespace(write_rgb=write_rgb, write_mask=write_mask, box_hole=box_hole, read=read,
                                 SIZE=SIZE)
