"""FFHQ-style face alignment from 5 facial landmarks: the similarity transform that brings a photo's
face onto the aligned crops EXE-GAN was trained on (CelebA-HQ / FFHQ), the warp, and the landmark
file readers. Used by scripts/align_faces.py, the photo pipeline (:mod:`inference.photo`) and the
editor.

A similarity transform (rotation, uniform scale, translation; no reflection, no shear) is fitted
by least squares (Umeyama, 1991) from the 5 landmarks to the template below, and the photo is
warped with it (bicubic; a large shrink first reduces the photo with Lanczos to avoid aliasing).

**Landmarks** (x, y in pixels of the image as displayed, i.e. after EXIF orientation; the centre
of the top-left pixel is (0, 0)), in this order: left eye centre, right eye centre, nose tip,
left mouth corner, right mouth corner — "left" = the image's left (the person's right), as MTCNN
and most detectors report them. 68-point (iBUG / dlib) landmarks are accepted and reduced to
these five (eyes = mean of points 36-41 / 42-47, nose tip = 30, mouth corners = 48, 54).

**Template** (fractions of the output side S; pixel coordinates are ``fraction * S - 0.5``):

    left eye (0.375, 0.4725)   right eye (0.625, 0.4725)   nose tip (0.5, 0.6225)
    left mouth corner (0.4, 0.7475)   right mouth corner (0.6, 0.7475)

It is the FFHQ crop rule (the dataset's alignment script: a square of half-side
max(2 * eye distance, 1.8 * eye-to-mouth distance) centred 0.1 * eye-to-mouth below the eye
midpoint, upright along the eye-mouth axes) applied to a mean frontal face whose mouth line lies
1.1 eye distances below the eyes, mouth corners 0.8 eye distances apart and nose tip 0.6 eye
distances below the eyes: eyes a quarter of the output width apart at 47 % of its height,
like FFHQ's own aligned images. (FFHQ places the crop from 68 points; the least-squares fit to
five points gives the same crop for a face with those proportions, and the nearest one otherwise.)

File formats (:func:`landmarks_from_files`): TXT = 10 (or 136) numbers, whitespace / comma
separated, read as x y pairs; JSON = a list of [x, y] pairs (or a flat list), or
``{"landmarks": ...}``, or ``{"<image name>": ..., ...}``.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from datasets.imaging import rel_stem
from inference.errors import InferenceInputError

#: Template of the 5 landmarks as fractions of the output side (see the module docstring).
TEMPLATE = np.array([
    [0.375, 0.4725],   # left eye
    [0.625, 0.4725],   # right eye
    [0.5, 0.6225],     # nose tip
    [0.4, 0.7475],     # left mouth corner
    [0.6, 0.7475],     # right mouth corner
])
LANDMARK_NAMES = ("left eye", "right eye", "nose tip", "left mouth corner", "right mouth corner")
PAD_MODES = {"reflect": "reflection", "edge": "border", "black": "zeros"}


def template(size: int) -> np.ndarray:
    """Template positions in pixels of a ``size`` x ``size`` output (pixel centres at integers)."""
    return TEMPLATE * size - 0.5


# ------------------------------------------------------------------------------------ geometry
def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (no reflection) with dst ~ M @ [src, 1].

    Umeyama (1991), "Least-squares estimation of transformation parameters between two point
    patterns": with centred points, covariance C = dst_c^T src_c / n = U D V^T, R = U S V^T where
    S = diag(1, det(U) det(V)) rules out a reflection, scale = trace(D S) / var(src), and
    t = mean(dst) - scale R mean(src). Returns the 2x3 matrix [scale R | t].
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # absurd coordinates: refused below
        mu_s, mu_d = src.mean(0), dst.mean(0)
        sc, dc = src - mu_s, dst - mu_d
        var_s = (sc ** 2).sum(1).mean()
    if not np.isfinite(var_s):
        raise InferenceInputError("the landmarks give no usable face transform (they are too large to be "
                                  "pixel coordinates); check the landmark file.")
    if var_s <= 0:
        raise InferenceInputError("the landmarks all lie at one point; check the landmark file.")
    u, d, vt = np.linalg.svd(dc.T @ sc / len(src))
    s = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    r = u @ s @ vt
    scale = float(np.trace(np.diag(d) @ s) / var_s)
    t = mu_d - scale * r @ mu_s
    matrix = np.concatenate([scale * r, t[:, None]], 1)
    if not (np.isfinite(matrix).all() and scale > 1e-9):
        raise InferenceInputError("the landmarks give no usable face transform (they are nearly all at one "
                                  "point, or too large to be pixel coordinates); check the landmark file.")
    return matrix


def apply(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points [N, 2] through a 2x3 affine matrix."""
    pts = np.asarray(pts, np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def warp(image: np.ndarray, matrix: np.ndarray, size: int, pad: str = "reflect") -> np.ndarray:
    """Resample ``image`` [H, W, 3] uint8 so that output pixel q shows source point M^-1 q.

    Bicubic ``grid_sample``; when the transform shrinks by 2x or more the photo is first reduced
    with Lanczos by the integer part of the shrink, so the bicubic step never skips pixels.
    ``pad``: what lies outside the photo (reflect | edge | black).
    """
    h, w = image.shape[:2]
    a, t = matrix[:, :2], matrix[:, 2]
    scale = math.sqrt(abs(np.linalg.det(a)))
    src = Image.fromarray(image)
    factor = int(1.0 / scale) if scale < 0.5 else 1
    if factor > 1:
        src = src.resize((max(1, round(w / factor)), max(1, round(h / factor))), Image.LANCZOS)
    sx, sy = src.width / w, src.height / h  # source pixel u -> (u + 0.5) * sx - 0.5 after the reduce

    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    q = torch.stack([xs, ys], -1).reshape(-1, 2) - torch.from_numpy(t)
    p = q @ torch.from_numpy(np.linalg.inv(a)).T                      # source pixel coordinates
    u = (p[:, 0] + 0.5) * sx - 0.5
    v = (p[:, 1] + 0.5) * sy - 0.5
    # grid_sample, align_corners=False: normalised -1 is the left edge of pixel 0 (u = -0.5).
    grid = torch.stack([(2 * u + 1) / src.width - 1, (2 * v + 1) / src.height - 1], -1)
    grid = grid.reshape(1, size, size, 2).float()
    x = torch.from_numpy(np.asarray(src, np.float32).copy()).permute(2, 0, 1)[None]
    out = F.grid_sample(x, grid, mode="bicubic", padding_mode=PAD_MODES[pad], align_corners=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def align(image: np.ndarray, landmarks: np.ndarray, size: int, pad: str = "reflect"):
    """(aligned [size, size, 3] uint8, 2x3 matrix image -> aligned) for 5 landmarks [5, 2]."""
    matrix = umeyama(landmarks, template(size))
    return warp(image, matrix, size, pad), matrix


def to_five(points, where: str) -> np.ndarray:
    """[5, 2] landmarks from 5 or 68 (x, y) points (flat or paired)."""
    try:
        a = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise InferenceInputError(f"{where} does not hold numbers as x y pairs; give 5 landmarks "
                           f"({', '.join(LANDMARK_NAMES)}).") from None
    if not np.isfinite(a).all():
        raise InferenceInputError(f"{where} holds a landmark that is not a finite number (nan or inf); give "
                                  f"5 landmarks as x y pixel coordinates ({', '.join(LANDMARK_NAMES)}).")
    if len(a) == 68:
        a = np.stack([a[36:42].mean(0), a[42:48].mean(0), a[30], a[48], a[54]])
    if len(a) != 5:
        raise InferenceInputError(f"{where} holds {len(a)} points; give 5 landmarks as x y pairs "
                           f"({', '.join(LANDMARK_NAMES)}) or 68 iBUG points.")
    return a


def read_points(path: str):
    """Contents of a landmark file: points (a list) or, for a JSON name map, a dict."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise InferenceInputError(f"cannot read landmark file {path} ({e.strerror}).") from None
    except UnicodeDecodeError:
        raise InferenceInputError(f"landmark file {path} is not a text file; give 10 numbers or JSON.") from None
    return parse_points(text, path, path.lower().endswith(".json"))


def parse_points(text: str, name: str, is_json: bool):
    """Points (a list) or a JSON name map (a dict) from the text of landmark file ``name``."""
    if is_json:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            why = f"{e.msg}, line {e.lineno}" if isinstance(e, json.JSONDecodeError) else "nested too deeply"
            raise InferenceInputError(f"landmark file {name} is not valid JSON ({why}).") from None
        if isinstance(data, dict) and "landmarks" in data:
            data = data["landmarks"]
        return data
    try:
        return [float(v) for v in re.split(r"[\s,;]+", text.strip()) if v]
    except ValueError:
        raise InferenceInputError(f"landmark file {name} holds something other than numbers; give 10 numbers "
                                  f"(x y for {', '.join(LANDMARK_NAMES)}).") from None


def lookup(data: dict, key: str, image_path: str, path: str):
    """Entry of a JSON name -> points map for an image (by relative name, file name or stem)."""
    base = os.path.basename(image_path)
    for k in (key, base, rel_stem(base), image_path):
        if k in data:
            entry = data[k]
            return entry["landmarks"] if isinstance(entry, dict) and "landmarks" in entry else entry
    raise InferenceInputError(f"landmark file {path} has no entry for image {image_path} (looked up {key!r} "
                       f"and {base!r}).")


def landmarks_from_files(images: Dict[str, str], path: str) -> Dict[str, np.ndarray]:
    """{image key: [5, 2]} from --landmarks (file, folder paired by name, or JSON name map)."""
    if not os.path.exists(path):
        raise InferenceInputError(f"--landmarks {path} does not exist.")
    out = {}
    if os.path.isdir(path):
        for key in images:
            found = [c for c in (os.path.join(path, key + e) for e in (".json", ".txt")) if os.path.isfile(c)]
            if not found:
                raise InferenceInputError(f"--landmarks folder {path} has no {key}.json or {key}.txt for image "
                                   f"{images[key]}; landmark files are paired with images by name.")
            data = read_points(found[0])
            if isinstance(data, dict):
                data = lookup(data, key, images[key], found[0])
            out[key] = to_five(data, found[0])
        return out
    data = read_points(path)
    if not isinstance(data, dict) and len(images) > 1:
        raise InferenceInputError(f"--landmarks {path} holds one set of landmarks but --image has {len(images)} "
                           f"images; give a folder of <name>.json/.txt files or a JSON name -> points map.")
    for key, image_path in images.items():
        pts = lookup(data, key, image_path, path) if isinstance(data, dict) else data
        out[key] = to_five(pts, path)
    return out
