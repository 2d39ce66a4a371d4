"""A stand-in style encoder that knows the demo faces' attributes (demo only).

The released pSp encoder gives EXE-GAN exemplar codes that describe a face (hair, eyes,
glasses ...); the random stand-in of ``pretrained.allow_random`` gives codes that describe
nothing in particular, so a generator trained with it has no reason to read them and the
exemplar has no visible effect. ``pretrained.standin_encoder_steps: N`` (used by
configs/demo.yaml only) closes that gap on the built-in demo faces: before G training, the
stand-in encoder is trained for ``N`` Adam steps to predict every attribute that
``datasets.demo`` recorded for each training face (hair colour and style, eye colour, glasses,
skin tone, mouth, beard) from its codes, through one linear classifier per attribute on the
flattened codes ``[B, n * style_dim]``. The classifiers are dropped afterwards; the encoder is
frozen again and used exactly as the pretrained pSp encoder would be (exemplar codes, attribute
loss), and saved as ``<run>/checkpoints/standin_psp.pt`` for test.py / scripts/inpaint.py.

DEVIATION: the paper's encoder is pSp trained to invert a StyleGAN2 on FFHQ; this one is a
width-8 IR-SE trained for seconds on labelled synthetic faces. It stands in for "a frozen
encoder whose codes carry attributes", nothing more.

A third of each batch is shown whole, a third with a random box hidden and a third with only
a random box visible (the rest set to 0), so that the codes also describe what is visible in a
partial image: the attribute loss feeds the encoder the completed image weighted towards the
hole (SVGL), which is close to 0 outside it. A small penalty keeps the mean square code near
1 (the scale of the generator's own w), and the run is seeded, so a resumed run trains the
same encoder.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from datasets import demo as demo_faces
from datasets import face_drawing

# The attributes the classifiers predict: name -> class names (the manifest's values).
ATTRIBUTES: Dict[str, Tuple[str, ...]] = {
    "hair_color": tuple(face_drawing.HAIR_COLORS),
    "hair_style": tuple(face_drawing.HAIR_STYLES),
    "eye_color": tuple(face_drawing.EYE_COLORS),
    "glasses": tuple(face_drawing.GLASSES),
    "skin_tone": tuple(face_drawing.SKIN_TONES),
    "mouth": tuple(face_drawing.MOUTHS),
    "beard": tuple(face_drawing.BEARDS),
}
CODE_SCALE_WEIGHT = 0.01   # weight of (mean(codes^2) - 1)^2


def load_labelled_faces(root: str, split: str = "train", size: int = 32
                        ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """The demo faces of ``split`` under ``root`` (made by ``datasets.demo.make_demo_faces``) as
    images [N, 3, size, size] in [-1, 1] and labels {attribute: LongTensor [N]}."""
    path = os.path.join(root, demo_faces.MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist; the demo faces under {root!r} are made "
                                f"by datasets.demo.make_demo_faces (data.kind: demo).")
    with open(path, encoding="utf-8") as f:
        entries = [e for e in json.load(f)["files"] if e.get("split") == split]
    if not entries:
        raise ValueError(f"{path} lists no '{split}' faces.")
    images = []
    for e in entries:
        img = Image.open(os.path.join(root, e["file"])).convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        images.append(np.asarray(img))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    labels = {name: torch.tensor([classes.index(e[name]) for e in entries])
              for name, classes in ATTRIBUTES.items()}
    return x, labels


def _random_boxes(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One random box per image (a third to two thirds of each side): [B, 1, H, W], 1 inside."""
    B, _, H, W = x.shape
    box = torch.zeros(B, 1, H, W)
    for b in range(B):
        h = int(torch.randint(H // 3, 2 * H // 3 + 1, (), generator=g))
        w = int(torch.randint(W // 3, 2 * W // 3 + 1, (), generator=g))
        top = int(torch.randint(0, H - h + 1, (), generator=g))
        left = int(torch.randint(0, W - w + 1, (), generator=g))
        box[b, :, top:top + h, left:left + w] = 1
    return box


def train_attribute_encoder(encoder: nn.Module, images: torch.Tensor,
                            labels: Dict[str, torch.Tensor], *, steps: int, seed: int,
                            batch: int = 32, lr: float = 2e-3) -> Dict[str, float]:
    """Train ``encoder`` (a ``models.psp.StyleEncoder``) in place to predict ``labels`` from its
    codes; return the training accuracy of each attribute over the last quarter of the steps.

    The encoder is frozen and in eval mode again on return (its batch norms use their running
    statistics throughout, as the StyleEncoder always does).
    """
    n = images.shape[0]
    device = next(encoder.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            dim = encoder(images[:1].to(device)).flatten(1).shape[1]
        heads = nn.ModuleDict({k: nn.Linear(dim, len(ATTRIBUTES[k])) for k in labels}).to(device)
        params = list(encoder.parameters()) + list(heads.parameters())
        for p in encoder.parameters():
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=lr)
        hits = {k: 0 for k in labels}
        seen = 0
        try:
            for step in range(steps):
                idx = torch.randint(0, n, (min(batch, n),), generator=g)
                x = images[idx]                                     # [B, 3, S, S] in [-1, 1]
                flip = torch.rand(x.shape[0], generator=g) < 0.5
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
                # A third whole, a third with a box hidden, a third with only a box visible.
                box = _random_boxes(x, g)                           # [B, 1, S, S]
                view = torch.arange(x.shape[0]).view(-1, 1, 1, 1) % 3
                keep = torch.where(view == 0, torch.ones_like(box), torch.where(view == 1, 1 - box, box))
                x = (x * keep).to(device)
                codes = encoder(x)                                  # [B, n, style_dim]
                flat = codes.flatten(1)
                loss = CODE_SCALE_WEIGHT * (codes.pow(2).mean() - 1.0).pow(2)
                late = step >= steps - max(1, steps // 4)
                for k, head in heads.items():
                    logits = head(flat)
                    y = labels[k][idx].to(device)
                    loss = loss + F.cross_entropy(logits, y)
                    if late:
                        hits[k] += int((logits.argmax(1) == y).sum())
                if late:
                    seen += x.shape[0]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        finally:
            for p in encoder.parameters():
                p.requires_grad_(False)
            encoder.eval()
    return {k: v / max(seen, 1) for k, v in hits.items()}

