"""Helpers of the training tests: tiny configs, pretrained stand-ins written in the real file
formats (pSp dict, ArcFace ResNet state dict, torchvision VGG16 state dict, pt_inception state
dict) so that the real loaders read them, and subprocess settings."""
import os
import sys

import torch
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 16
STYLE_DIM = 32


def make_faces(root):
    """(train dir, test dir): 16 training and 8 test demo faces at 16 px under `root`."""
    from datasets.demo import make_demo_faces

    faces = make_demo_faces(str(root), n=16, size=SIZE, seed=3, n_test=8)
    return faces.train, faces.test


def tiny_dict(face_dirs, outdir, **sections):
    """A tiny 16-px config as a nested dict; `sections` update it section by section."""
    train_dir, test_dir = face_dirs
    cfg = {
        "name": "tiny",
        "model": {"size": SIZE, "style_dim": STYLE_DIM, "n_mlp": 2, "channel_multiplier": 0.0625,
                  "channel_max": 16},
        "data": {"kind": "folder", "train": train_dir, "test": test_dir, "num_workers": 0},
        "mask": {"kind": "free_form"},
        "exemplar": {"self_prob": 0.5, "per_sample": True},  # self and reversed exemplars each step
        "pretrained": {"allow_random": True},
        "loss": {"allow_random_backbone": True, "d_reg_every": 4, "g_reg_every": 2},
        "train": {"batch": 4, "iters": 4, "device": "cpu", "ckpt_every": 0, "keep_last": 2},
        "eval": {"every": 0, "mask": "center", "metrics": ["psnr", "l1"], "best_metric": "psnr_hole"},
        "log": {"outdir": str(outdir), "log_every": 1, "sample_every": 0, "n_samples": 4,
                "progress": False},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return cfg


def tiny_config(face_dirs, outdir, **sections):
    from training.config import from_dict, validate

    cfg = from_dict(tiny_dict(face_dirs, outdir, **sections))
    validate(cfg)
    return cfg


def write_yaml(path, data):
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return str(path)


# ------------------------------------------------------------------------------------------------
# Pretrained stand-ins in the real file formats

VGG16_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
               (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512),
               (26, 512, 512), (28, 512, 512)]


def write_pretrained_files(d):
    """Random tiny networks saved like the released files under `d`; returns {name: path}."""
    from metrics.inception import FIDInceptionV3
    from models.identity import IdentityNet
    from models.psp import StyleEncoder

    g = torch.Generator().manual_seed(1)
    n_latent = 2 * 4 - 2  # 16 px
    enc = StyleEncoder(start=0, n=1, n_styles=n_latent, style_dim=STYLE_DIM, width=8,
                       units=(1, 1, 1, 1), input_size=32)
    psp = {"opts": {"encoder_type": "GradualStyleEncoder", "input_nc": 3},
           "state_dict": {**{f"encoder.{k}": v for k, v in enc.state_dict().items()},
                          "decoder.style.1.weight": torch.zeros(1)},
           "latent_avg": torch.randn(n_latent, STYLE_DIM, generator=g)}
    torch.save(psp, d / "psp.pt")
    ident = IdentityNet("resnet101", resnet_layers=(1, 1, 1, 1), feature_dim=16)
    torch.save(ident.backbone.state_dict(), d / "arcface.pth")
    vgg = {}
    for idx, cin, cout in VGG16_CONVS:
        vgg[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (cin * 9)) ** 0.5
        vgg[f"features.{idx}.bias"] = torch.zeros(cout)
    torch.save(vgg, d / "vgg16.pth")
    torch.save(FIDInceptionV3().state_dict(), d / "inception.pth")
    return {"style_encoder": str(d / "psp.pt"), "identity": str(d / "arcface.pth"),
            "vgg": str(d / "vgg16.pth"), "inception": str(d / "inception.pth")}


def python_env():
    """Environment for subprocesses: the repo importable, two threads, no GPU."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


PYTHON = sys.executable
