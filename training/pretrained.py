"""The frozen pretrained networks of training: pSp style encoder, ArcFace, LPIPS VGG16.

Each is read from the local file named in the config (nothing is downloaded); a missing file is
one sentence naming the config key. Only the networks a positive loss weight needs are built,
except the style encoder, which always runs (it gives the generator its exemplar codes).

``pretrained.allow_random: true`` (demo and tests only) builds randomly initialised *tiny*
stand-ins instead: an IR-SE style encoder of width 8 with one unit per stage at 32 px input, a
width-8 IR-SE ArcFace, and LPIPS with a random VGG16 trunk. They are seeded from
``train.seed``, so every process of a run and every resume builds the same ones. The log says
so in capitals: losses computed with them carry no pretrained knowledge. The style encoder and
stand-ins are built in ``metrics/standins.py`` (test.py builds the same ones from there).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

import torch

from common import seeding as rng
from metrics.standins import PixelDistance, standin_identity, standin_lpips, standin_style_encoder
from models.identity import load_identity_net
from models.psp import load_style_encoder

from .errors import ConfigError


@dataclass
class Pretrained:
    style_encoder: torch.nn.Module                 # img -> exemplar codes [B, n_exemplar, style_dim]
    identity: Optional[torch.nn.Module] = None     # img -> L2-normalised features [B, D]
    lpips: Optional[torch.nn.Module] = None        # lpips.LPIPS (VGG, v0.1)
    random: tuple = ()                             # names of the random stand-ins in use


def train_standin_on_demo_faces(encoder, cfg, log: logging.Logger) -> dict:
    """``pretrained.standin_encoder_steps > 0`` (demo only): train the stand-in style encoder to
    predict the demo faces' recorded attributes (training/demo_encoder.py), seeded from
    ``train.seed`` so that a resumed run trains the same one. Returns the training accuracies."""
    from .demo_encoder import load_labelled_faces, train_attribute_encoder  # demo only

    steps = cfg.pretrained.standin_encoder_steps
    t0 = time.perf_counter()
    images, labels = load_labelled_faces(cfg.data.demo_root, "train", cfg.model.size)
    acc = train_attribute_encoder(encoder, images, labels, steps=steps,
                                  seed=rng.derive_seed(cfg.train.seed, rng.STANDIN_TRAINING_KEY))
    log.info("stand-in style encoder trained for %d steps on the attributes of %d demo faces "
             "(%.0f s); training accuracy: %s", steps, images.shape[0], time.perf_counter() - t0,
             ", ".join(f"{k} {v:.2f}" for k, v in acc.items()))
    return acc


def check_files(cfg, *, resuming: bool = False) -> None:
    """Fail before anything is created when a file the run will read is missing (a sketch
    fine-tune's base checkpoint too, unless ``resuming``: the run's own checkpoint holds it).

    The loaders give the same kind of message later; checking up front means a typo in a path
    costs no run directory and no minutes of start-up.
    """
    s = cfg.sketch
    if s.enabled and not resuming and not (s.base_checkpoint and os.path.isfile(s.base_checkpoint)):
        raise ConfigError(f"sketch.base_checkpoint = {s.base_checkpoint!r} does not exist; a sketch "
                          f"fine-tune starts from a trained EXE-GAN checkpoint (with g, g_ema and d, "
                          f"e.g. runs/<run>/checkpoints/latest.pt), so point it at one.")
    p, L, e = cfg.pretrained, cfg.loss, cfg.eval
    needed = []
    if not p.allow_random:
        needed.append(("pretrained.style_encoder", p.style_encoder, "psp_ffhq_encode.pt"))
        if L.lambda_id > 0:
            needed.append(("pretrained.identity", p.identity, "Arcface.pth"))
        # loss.allow_random_backbone: the LPIPS loss may run on a random VGG16 trunk (loudly).
        if ((L.lambda_lpips > 0 and not (L.allow_random_backbone and not L.lpips_vgg_path))
                or (e.every > 0 and "lpips" in e.metrics)):
            needed.append(("loss.lpips_vgg_path", L.lpips_vgg_path, "vgg16-397923af.pth"))
        if e.every > 0 and ("fid" in e.metrics or "ids" in e.metrics):
            needed.append(("pretrained.inception", p.inception, "pt_inception-2015-12-05-6726825d.pth"))
    if cfg.data.kind == "folder":
        needed += [("data.train", cfg.data.train, None)]
        if e.every > 0 or cfg.log.sample_every > 0:
            needed.append(("data.test", cfg.data.test, None))
    for key, path, released in needed:
        if not path:
            raise ConfigError(f"{key} is not set; point it at the released {released} (nothing is "
                              f"downloaded at run time)"
                              + (" or set loss.allow_random_backbone=true (tests / demo only)."
                                 if key == "loss.lpips_vgg_path" and L.lambda_lpips > 0
                                 and not (e.every > 0 and "lpips" in e.metrics) else "."))
        ok = os.path.isdir(path) if key.startswith("data.") else os.path.isfile(path)
        if not ok:
            what = (f"put the released {released} there" if released
                    else "point it at an image folder or an LMDB pack")
            raise ConfigError(f"{key} = {path!r} does not exist; {what} or fix the path "
                              f"(nothing is downloaded at run time).")


def build(cfg, generator, device, log: logging.Logger) -> Pretrained:
    """The pretrained networks the config needs, frozen, in eval mode, on `device`."""
    p, L = cfg.pretrained, cfg.loss
    start, n = generator.exemplar_start, generator.n_exemplar
    need_id, need_lpips = L.lambda_id > 0, L.lambda_lpips > 0

    if p.allow_random and p.standin_size == "full":
        # The released architectures at full size with random weights (pSp IR-SE50 with 18
        # heads, the ArcFace of pretrained.identity_kind, LPIPS VGG16): the compute of a real run
        # without its files (scripts/benchmark.py).
        seed = cfg.train.seed
        enc = standin_style_encoder(start, n, max(18, generator.n_latent), generator.style_dim,
                                    seed, full_size=True)
        ident = standin_identity(seed, kind=p.identity_kind) if need_id else None
        lp = standin_lpips(seed, device) if need_lpips else None
        random = tuple(name for name, m in (("style encoder", enc), ("identity net", ident),
                                            ("LPIPS VGG16", lp)) if m is not None)
        log.warning("PRETRAINED NETWORKS ARE RANDOM FULL-SIZE STAND-INS (pretrained.standin_size=full): "
                    "%s; the losses carry NO pretrained knowledge (timing only).", ", ".join(random))
        return Pretrained(enc.to(device), ident.to(device) if ident is not None else None, lp, random)
    if p.allow_random:
        seed = cfg.train.seed
        enc = standin_style_encoder(start, n, generator.n_latent, generator.style_dim, seed)
        if p.standin_encoder_steps > 0:
            train_standin_on_demo_faces(enc, cfg, log)
        ident = standin_identity(seed) if need_id else None
        if need_lpips and p.standin_lpips == "pixel_l1":
            lp = PixelDistance().to(device)
        else:
            lp = standin_lpips(seed, device) if need_lpips else None
        lp_name = "LPIPS (pixel L1 stand-in)" if isinstance(lp, PixelDistance) else "LPIPS VGG16"
        random = tuple(name for name, m in (("style encoder", enc), ("identity net", ident),
                                            (lp_name, lp)) if m is not None)
        bar = "!" * 78
        log.warning(bar)
        log.warning("PRETRAINED NETWORKS ARE RANDOM STAND-INS (pretrained.allow_random=true): %s.",
                    ", ".join(random))
        if p.standin_encoder_steps > 0:
            log.warning("The style encoder was trained for seconds on the demo faces' attribute labels "
                        "(pretrained.standin_encoder_steps): its codes know hair / eye colour, glasses ... "
                        "of these synthetic faces and nothing else.")
        log.warning("The %s losses carry NO pretrained knowledge. Use this for the demo and tests "
                    "only; real training needs the files under checkpoints/.",
                    "identity / LPIPS" if p.standin_encoder_steps > 0 else "attribute / identity / LPIPS")
        log.warning(bar)
        return Pretrained(enc.to(device), ident.to(device) if ident is not None else None, lp, random)

    enc = load_style_encoder(p.style_encoder, start=start, n=n, device=device)
    if enc.style_dim != generator.style_dim:
        raise ConfigError(f"The style encoder {p.style_encoder} gives {enc.style_dim}-d codes but "
                          f"model.style_dim is {generator.style_dim}; set model.style_dim={enc.style_dim}.")
    ident = None
    if need_id:
        ident = load_identity_net(p.identity, kind=p.identity_kind, device=device)
    lp = None
    if need_lpips:
        from losses.perceptual import load_lpips  # optional: the lpips package, only for the LPIPS term
        lp = load_lpips(L.lpips_vgg_path, allow_random_backbone=L.allow_random_backbone, device=device)
    return Pretrained(enc, ident, lp, ())
