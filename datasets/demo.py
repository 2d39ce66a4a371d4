"""Built-in demo faces: a small procedurally drawn colour face dataset (no download needed).

The demo (``make demo``) and the tests need faces without CelebA-HQ or FFHQ, so
:func:`make_demo_faces` draws them with Pillow + numpy on first use: a large, centred head in
an FFHQ-like framing, with the attributes EXE-GAN transfers from exemplars varying by seed —
skin tone, face shape, hair colour and style (short, bangs, side part, long, curly, bald),
eye colour, gaze and openness, eyebrows, nose, mouth (neutral, smile, open), beard or
moustache, glasses (round, square, sunglasses), blush, clothes and background. Shapes are
lit by a random light through a spherical pseudo-normal (smooth shading), hair carries a
strand texture, and each image gets mild Gaussian noise, so a small network has real
structure to learn and cannot copy flat colours. Faces are drawn at 2-4x and box-downsampled
for antialiasing. The attribute tables and the renderer (:func:`draw_face`, one function per
part of the face) are :mod:`datasets.face_drawing`; this module samples the attributes and
writes the dataset.

Layout written under ``root`` (a train/test split like the real datasets)::

    root/train/000000.png ...     n training faces
    root/test/000000.png ...      n_test test faces (drawn from a different random stream)
    root/real/astronaut_00.png    optional: n_real crops of skimage's astronaut portrait
    root/demo_faces.json          parameters + per-image attributes (what makes it idempotent)

A second call with the same parameters finds the manifest and returns at once; different
parameters regenerate the folder (only a folder this function made is ever replaced). Face
``i`` of a split depends only on ``(seed, split, i)``, so a larger ``n`` extends a smaller one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
from PIL import Image
from tqdm import tqdm

from datasets.errors import DatasetError
from datasets.face_drawing import (BEARDS, BEARDS_P, EYE_COLORS, GLASSES, GLASSES_P, HAIR_COLORS,
                                   HAIR_STYLE_P, HAIR_STYLES, MOUTHS, SKIN_TONES, draw_face)

GENERATOR = "exegan-demo-faces"
VERSION = 1
MANIFEST = "demo_faces.json"


@dataclass
class DemoFaces:
    """Where :func:`make_demo_faces` put the data."""
    root: str
    train: str
    test: str
    real: Optional[str]
    manifest: str
    attributes: List[dict] = field(default_factory=list)
    generated: bool = False  # False when an existing matching folder was reused


def sample_attributes(rng: np.random.Generator) -> dict:
    """All random choices of one face (recorded in the manifest)."""
    pick = lambda keys, p=None: str(rng.choice(keys, p=p))  # noqa: E731
    skin = pick(list(SKIN_TONES))
    style = pick(HAIR_STYLES, HAIR_STYLE_P)
    hair = pick(list(HAIR_COLORS))
    lx, ly = rng.uniform(-0.6, 0.6), rng.uniform(-0.6, -0.05)
    bg_hue = rng.uniform(0, 1)
    return {
        "skin_tone": skin, "hair_color": hair, "hair_style": style,
        "eye_color": pick(list(EYE_COLORS)), "mouth": pick(MOUTHS),
        "glasses": pick(GLASSES, GLASSES_P), "beard": pick(BEARDS, BEARDS_P),
        "blush": bool(rng.random() < 0.3),
        "head": {"cx": rng.uniform(0.47, 0.53), "cy": rng.uniform(0.49, 0.54),
                 "rx": rng.uniform(0.22, 0.265), "aspect": rng.uniform(1.22, 1.36),
                 "jaw_taper": rng.uniform(0.08, 0.35), "squareness": rng.uniform(2.0, 2.7)},
        "eyes": {"dy": rng.uniform(-0.12, 0.0), "dx": rng.uniform(0.36, 0.44),
                 "width": rng.uniform(0.19, 0.25), "openness": rng.uniform(0.38, 0.6),
                 "gaze": rng.uniform(-0.25, 0.25)},
        "brows": {"lift": rng.uniform(1.7, 2.5), "thickness": rng.uniform(0.35, 0.75),
                  "tilt": rng.uniform(-0.4, 0.4)},
        "light": [float(lx), float(ly)],
        "background": {"hue": bg_hue, "hue2": (bg_hue + rng.uniform(-0.15, 0.15)) % 1,
                       "sat": rng.uniform(0.1, 0.45), "top": rng.uniform(0.55, 0.95),
                       "bottom": rng.uniform(0.3, 0.8)},
        "clothes": {"hue": rng.uniform(0, 1), "sat": rng.uniform(0.2, 0.8),
                    "val": rng.uniform(0.25, 0.85)},
    }


def face(index: int, size: int, seed: int = 0, split: str = "train"):
    """Face ``index`` of ``split`` for ``seed``: (Pillow image, attributes dict)."""
    stream = {"train": 0, "test": 1}[split]
    rng = np.random.default_rng([int(seed), stream, int(index)])
    attrs = sample_attributes(rng)
    return draw_face(attrs, size, rng), attrs


def astronaut_crops(n: int, size: int, seed: int = 0) -> List[Image.Image]:
    """``n`` jittered face crops of scikit-image's astronaut portrait (public-domain NASA photo),
    framed like the demo faces: a real face for qualitative checks."""
    from skimage import data as skdata  # heavy: scikit-image only for this photo
    photo = skdata.astronaut()  # [512, 512, 3] uint8; the face is centred near (225, 120)
    rng = np.random.default_rng([int(seed), 2])
    out = []
    for i in range(n):
        side = 240 if i == 0 else int(rng.uniform(215, 255))
        cx = 225 if i == 0 else 225 + int(rng.uniform(-12, 12))
        cy = 128 if i == 0 else 128 + int(rng.uniform(-8, 8))
        left = int(np.clip(cx - side // 2, 0, 512 - side))
        top = int(np.clip(cy - side // 2, 0, 512 - side))
        crop = Image.fromarray(photo[top:top + side, left:left + side])
        if i % 2 == 1:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(crop.resize((size, size), Image.LANCZOS))
    return out


# ----------------------------------------------------------------------------------------------
# The dataset on disk


def _params(n: int, n_test: int, size: int, seed: int, n_real: int) -> Dict[str, int]:
    return {"n": n, "n_test": n_test, "size": size, "seed": seed, "n_real": n_real}


def _read_manifest(root: str) -> Optional[dict]:
    path = os.path.join(root, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("generator") == GENERATOR else None


def _result(root: str, manifest: dict, generated: bool) -> DemoFaces:
    real = os.path.join(root, "real") if manifest["params"]["n_real"] else None
    return DemoFaces(root=root, train=os.path.join(root, "train"), test=os.path.join(root, "test"),
                     real=real, manifest=os.path.join(root, MANIFEST),
                     attributes=manifest["files"], generated=generated)


def make_demo_faces(root: str, n: int = 256, size: int = 64, seed: int = 0, *,
                    n_test: Optional[int] = None, n_real: int = 0,
                    progress: bool = False) -> DemoFaces:
    """Create (or reuse) the demo face dataset under ``root``; see the module docstring.

    Args:
        root: output folder (created; replaced only if it holds demo faces with other params).
        n: number of training faces.
        size: image side in pixels.
        seed: random seed; face ``i`` depends only on ``(seed, split, i)``.
        n_test: number of test faces (default ``max(8, n // 8)``).
        n_real: number of astronaut-photo crops written to ``root/real`` (default 0).
    """
    if n < 1 or size < 8:
        raise ValueError(f"need n >= 1 and size >= 8, got n={n}, size={size}")
    n_test = max(8, n // 8) if n_test is None else int(n_test)
    params = _params(int(n), n_test, int(size), int(seed), int(n_real))
    old = _read_manifest(root)
    if old is not None and old.get("version") == VERSION and old.get("params") == params and \
            all(os.path.isfile(os.path.join(root, f["file"])) for f in old["files"]):
        return _result(root, old, generated=False)
    if os.path.isdir(root) and os.listdir(root) and old is None:
        raise DatasetError(f"Demo folder '{root}' exists and holds other files; "
                           "choose an empty or new folder for the demo faces.")

    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".demo_faces-", dir=parent)
    try:
        files = []
        jobs = [("train", i) for i in range(n)] + [("test", i) for i in range(n_test)]
        for split in ("train", "test"):
            os.makedirs(os.path.join(tmp, split))
        for split, i in tqdm(jobs, desc="drawing demo faces", disable=not progress):
            img, attrs = face(i, size, seed, split)
            rel = f"{split}/{i:06d}.png"
            img.save(os.path.join(tmp, rel))
            files.append({"file": rel, "split": split, **attrs})
        if n_real:
            os.makedirs(os.path.join(tmp, "real"))
            for i, img in enumerate(astronaut_crops(n_real, size, seed)):
                rel = f"real/astronaut_{i:02d}.png"
                img.save(os.path.join(tmp, rel))
                files.append({"file": rel, "split": "real", "source": "skimage.data.astronaut"})
        manifest = {"generator": GENERATOR, "version": VERSION, "params": params, "files": files}
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1)
        if os.path.isdir(root):
            # Only an empty folder or one we made ourselves (manifest found above) gets here.
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _result(root, manifest, generated=True)
