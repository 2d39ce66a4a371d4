#!/usr/bin/env python
"""Exemplar-guided inpainting with an exported EXE-GAN ONNX graph (scripts/export_onnx.py), with
numpy, Pillow and onnxruntime only (no PyTorch):

    python scripts/inpaint_onnx.py --onnx exegan_256.onnx --image face.png --mask face_mask.png \\
        --exemplar other_face.png --samples 4 --out results/

The flags are inpaint.py's where they apply (--image / --mask / --exemplar files or folders paired by
relative name, --samples, --seed, --truncation, --mask-hole, --sketch for a sketch graph, --out),
and so is the any-size round trip of inference/roundtrip.py, re-implemented here in numpy and
Pillow: hole pixels set to the known pixels' mean colour, the image edge-padded to a square and
resized to the model size with Lanczos, the mask padded with "known" and any-pooled; the completed
model-size image is resized back with Lanczos, cropped and pasted inside the original-resolution
hole only, so every known pixel of a result is the input's decoded 8-bit value, bit for bit.

Random numbers (documented so that any runtime can reproduce a result): sample k of an image uses
``rng = numpy.random.default_rng(seed + k)`` and draws ``z = rng.standard_normal(style_dim)`` then
``noise = rng.standard_normal(n_noise)`` (float64, cast to float32; ``n_noise`` from the graph's
metadata). This is numpy's PCG64 stream, not torch's: the same --seed gives a different (equally
valid) sample than scripts/inpaint.py; with the same z and noise the two agree (tests/deploy).

Outputs: ``<out>/<name>_sample<k>.png`` (folder structure kept); nothing is overwritten: if a name
is taken the whole set gets the next free ``-N`` suffix.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnxruntime as ort
from PIL import Image
from PIL.PngImagePlugin import PngInfo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from common.errors import UserError, report  # noqa: E402  (plain Python: no torch)
from common.imagefile import DECODE_ERRORS, load_rgb, mask_bits  # noqa: E402  (Pillow + NumPy: no torch)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
RESIZE_FILTER = Image.LANCZOS
#: A mask with more mid-grey pixels than this fraction is refused (datasets/mask_files.py's rule).
MAX_GREY_FRACTION = 0.25


class OnnxInputError(UserError, ValueError):
    """An input a user can fix (one sentence)."""


# ------------------------------------------------------------------------------------- reading
# The decoding itself is common/imagefile.py (Pillow and NumPy only), the same code the datasets and
# the inference library use.
def read_rgb(path: str) -> np.ndarray:
    """Decoded 8-bit RGB [H, W, 3], EXIF orientation applied, alpha composited on white."""
    try:
        img = load_rgb(path)
    except DECODE_ERRORS as e:
        raise OnnxInputError(f"cannot decode image {path} ({type(e).__name__}: {e}); remove or replace the file.") from None
    return np.asarray(img, dtype=np.uint8).copy()


def read_binary(path: str, shape: Tuple[int, int], option: str, white_is_on: bool = True) -> np.ndarray:
    """A black-and-white file as bool [H, W] (datasets.mask_files.read_mask_file's thresholds: on when
    brighter than half the value range, refused when over a quarter of it is mid-grey)."""
    try:
        on, grey = mask_bits(path)
    except DECODE_ERRORS as e:
        raise OnnxInputError(f"{option} {path} cannot be read ({type(e).__name__}: {e}); remove or replace it.") from None
    if grey > MAX_GREY_FRACTION:
        raise OnnxInputError(f"{option} {path} is not black-and-white ({100 * grey:.0f} % of its pixels are "
                             f"mid-grey); give a black-and-white image.")
    on = on if white_is_on else ~on
    if on.shape != tuple(shape):
        raise OnnxInputError(f"{option} {path} is {on.shape[1]}x{on.shape[0]} but its image is "
                             f"{shape[1]}x{shape[0]}; give one of the image's size (width x height).")
    return on


def read_exemplar(path: str, size: int) -> np.ndarray:
    """[S, S, 3] uint8: the largest centred square, resized with Lanczos (datasets.imaging.load_image)."""
    img = Image.fromarray(read_rgb(path))
    w, h = img.size
    if w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if img.size != (size, size):
        img = img.resize((size, size), RESIZE_FILTER)
    return np.asarray(img, dtype=np.uint8)


#: Masks whose hole covers more than this fraction of the image get a warning (inference.io's rule).
LARGE_HOLE = 0.70


def mask_warnings(hole: np.ndarray, hole_colour: str = "white") -> List[str]:
    """inference.io.mask_warnings: a hole over LARGE_HOLE of the image, or one that runs round the
    whole border around an island of known pixels (a mask drawn in the other colour)."""
    frac = float(hole.mean())
    border = np.concatenate([hole[0], hole[-1], hole[1:-1, 0], hole[1:-1, -1]])
    if frac > 0.5 and float(border.mean()) > 0.95:
        other = "black" if hole_colour == "white" else "white"
        return [f"the mask looks inverted: the hole covers {100 * frac:.0f} % of the image and "
                f"surrounds the known pixels; if {other} marks the hole in your masks, pass "
                f"--mask-hole {other}."]
    if frac > LARGE_HOLE:
        return [f"the hole covers {100 * frac:.0f} % of the image (more than {100 * LARGE_HOLE:.0f} %); "
                f"with so little of the face known the results will be poor."]
    return []


# ------------------------------------------------------------------------- the any-size round trip
def any_pool(on: np.ndarray, size: int) -> np.ndarray:
    """bool [N, N] -> bool [S, S]: on where any pixel of the footprint is (adaptive max pooling:
    output i covers inputs [floor(i N / S), ceil((i + 1) N / S)))."""
    n = on.shape[0]
    if n == size:
        return on.copy()
    i = np.arange(size)
    starts, ends = (i * n) // size, -((-(i + 1) * n) // size)
    rows = np.stack([on[s:e].any(0) for s, e in zip(starts, ends)])
    return np.stack([rows[:, s:e].any(1) for s, e in zip(starts, ends)], 1)


def _pad_square(a: np.ndarray, side: int, top: int, left: int, mode: str) -> np.ndarray:
    h, w = a.shape[:2]
    pads = [(top, side - h - top), (left, side - w - left)] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, pads, mode="edge") if mode == "edge" else np.pad(a, pads, mode="constant")


class Prepared:
    """One image on its way to the model (``image`` [S, S, 3] uint8, ``mask`` [S, S, 1] uint8 with
    255 = hole) and back (:meth:`paste`)."""

    def __init__(self, original: np.ndarray, hole: np.ndarray, size: int):
        h, w = hole.shape
        if not hole.any():
            raise OnnxInputError("the mask has no hole pixels (nothing to fill); white marks the hole "
                                 "(use --mask-hole black for black holes).")
        self.original, self.hole, self.size = original, hole, size
        self.side = side = max(h, w)
        self.top, self.left = (side - h) // 2, (side - w) // 2
        filled = original.copy()
        filled[hole] = np.round(original[~hole].reshape(-1, 3).mean(0)).astype(np.uint8) \
            if not hole.all() else np.full(3, 128, np.uint8)
        square = _pad_square(filled, side, self.top, self.left, "edge")
        if side != size:
            square = np.asarray(Image.fromarray(square).resize((size, size), RESIZE_FILTER))
        self.image = np.ascontiguousarray(square, dtype=np.uint8)
        self.mask = self.pooled(hole)

    def pooled(self, on: np.ndarray) -> np.ndarray:
        """bool [H, W] at the original size -> [S, S, 1] uint8 (255 = on), padded and any-pooled."""
        sq = _pad_square(on, self.side, self.top, self.left, "constant")
        return (any_pool(sq, self.size)[..., None] * np.uint8(255)).astype(np.uint8)

    def paste(self, completed: np.ndarray) -> np.ndarray:
        """Model-size result [S, S, 3] uint8 -> [H, W, 3] at the original size, known pixels the input's."""
        up = completed
        if self.side != self.size:
            up = np.asarray(Image.fromarray(completed).resize((self.side, self.side), RESIZE_FILTER))
        h, w = self.hole.shape
        up = up[self.top:self.top + h, self.left:self.left + w]
        return np.where(self.hole[..., None], up, self.original)


# ---------------------------------------------------------------------------------- the graph
def latents(seed: int, style_dim: int, n_noise: int) -> Tuple[np.ndarray, np.ndarray]:
    """(z [style_dim], noise [n_noise]) float32 from ``numpy.random.default_rng(seed)``, z first."""
    rng = np.random.default_rng(int(seed))
    z = rng.standard_normal(style_dim).astype(np.float32)
    noise = rng.standard_normal(n_noise).astype(np.float32)
    return z, noise


class OnnxInpainter:
    """An exported inpainting graph in an onnxruntime session, with its metadata."""

    def __init__(self, path: str, threads: int = 0):
        if not os.path.isfile(path):
            raise OnnxInputError(f"--onnx {path} does not exist; export one with scripts/export_onnx.py.")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for a bad file
            raise OnnxInputError(f"--onnx {path} cannot be loaded by onnxruntime ({type(e).__name__}); "
                                 f"export it again with scripts/export_onnx.py.") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("exegan.graph") != "inpaint":
            raise OnnxInputError(f"--onnx {path} is not an EXE-GAN inpainting graph (metadata exegan.graph is "
                                 f"{meta.get('exegan.graph')!r}); export one with scripts/export_onnx.py.")
        self.meta = meta
        self.size = int(meta["exegan.size"])
        self.style_dim = int(meta["exegan.style_dim"])
        self.n_noise = int(meta["exegan.n_noise"])
        self.sketch = meta.get("exegan.sketch") == "1"

    def run(self, image: np.ndarray, mask: np.ndarray, exemplar: np.ndarray, z: np.ndarray,
            noise: np.ndarray, truncation: float = 1.0, sketch: Optional[np.ndarray] = None):
        """Batched arrays (NHWC uint8, z [B, D], noise [B, N]) -> (output uint8, completed float)."""
        feed = {"image": image, "mask": mask, "exemplar": exemplar, "z": z.astype(np.float32),
                "noise": noise.astype(np.float32), "truncation": np.array([truncation], np.float32)}
        if self.sketch:
            feed["sketch"] = sketch if sketch is not None else np.zeros_like(mask)
        return self.session.run(["output", "completed"], feed)

    def samples(self, prep: Prepared, exemplar: np.ndarray, *, samples: int, seed: int,
                truncation: float = 1.0, sketch: Optional[np.ndarray] = None) -> List[np.ndarray]:
        """K results at the original size (one batch); sample k draws from seed + k (:func:`latents`)."""
        zs, noises = zip(*(latents(seed + k, self.style_dim, self.n_noise) for k in range(samples)))
        rep = lambda a: np.repeat(a[None], samples, 0)  # noqa: E731
        out, _ = self.run(rep(prep.image), rep(prep.mask), rep(exemplar), np.stack(zs), np.stack(noises),
                          truncation, None if sketch is None else rep(sketch))
        return [prep.paste(o) for o in out]


# ------------------------------------------------------------------------------- files and CLI
def _scan(root: str) -> Dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
                out[os.path.splitext(rel)[0]] = os.path.join(dirpath, name)
    return dict(sorted(out.items()))


def collect(path: str, option: str) -> Dict[str, str]:
    """{key: file}: a file (key = its stem) or a folder scanned recursively (key = relative path
    without extension)."""
    if not os.path.exists(path):
        raise OnnxInputError(f"{option} {path} does not exist; give an image file or a folder of images.")
    if os.path.isfile(path):
        return {os.path.splitext(os.path.basename(path))[0]: path}
    found = _scan(path)
    if not found:
        raise OnnxInputError(f"{option} folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    return found


def pair(keys: Sequence[str], path: str, option: str) -> Dict[str, str]:
    """A single file for every image, or the folder's file with the same relative name."""
    if not os.path.exists(path):
        raise OnnxInputError(f"{option} {path} does not exist; give a file or a folder paired by name.")
    if os.path.isfile(path):
        return {k: path for k in keys}
    found = _scan(path)
    missing = [k for k in keys if k not in found]
    if missing:
        raise OnnxInputError(f"{option} folder {path} has no file named like {', '.join(missing[:5])}"
                             f"{' ...' if len(missing) > 5 else ''} (any extension); add them or pair other folders.")
    return {k: found[k] for k in keys}


def reserve(out: str, key: str, suffixes: Sequence[str]) -> List[str]:
    n = 0
    while True:
        stem = key if n == 0 else f"{key}-{n}"
        paths = [os.path.join(out, stem + s) for s in suffixes]
        if not any(os.path.exists(p) for p in paths):
            return paths
        n += 1


def save_png(a: np.ndarray, path: str, meta: Dict[str, str]) -> None:
    info = PngInfo()
    for k, v in meta.items():
        info.add_text(k, str(v))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        with open(path, "xb") as f:
            Image.fromarray(a).save(f, format="PNG", pnginfo=info)
    except FileExistsError:
        raise OnnxInputError(f"{path} appeared while this run was writing; results are never overwritten, "
                             f"run again (or use another --out).") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True, help="graph written by scripts/export_onnx.py")
    p.add_argument("--image", required=True, help="image file or folder")
    p.add_argument("--mask", required=True, help="mask file or folder (paired by name); white = hole")
    p.add_argument("--exemplar", required=True, help="exemplar file (for all) or folder (paired by name)")
    p.add_argument("--sketch", help="(sketch graphs) stroke file or folder paired by name, white strokes")
    p.add_argument("--samples", type=int, default=1, help="K diverse results per image (default 1)")
    p.add_argument("--seed", type=int, default=0, help="sample k uses numpy.random.default_rng(seed + k) (default 0)")
    p.add_argument("--truncation", type=float, default=1.0, help="psi for the random style (default 1)")
    p.add_argument("--mask-hole", choices=("white", "black"), default="white",
                   help="which colour of the mask files is the hole (default white)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (default: its own choice)")
    p.add_argument("--out", required=True, help="output folder (existing files are never overwritten)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.samples < 1:
        raise OnnxInputError(f"--samples must be at least 1, got {args.samples}.")
    if not 0 < args.truncation <= 1:
        raise OnnxInputError(f"--truncation must be in (0, 1], got {args.truncation}.")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise OnnxInputError(f"--out {args.out} is a file; give a folder for the results.")
    images = collect(args.image, "--image")
    masks = pair(list(images), args.mask, "--mask")
    exemplars = pair(list(images), args.exemplar, "--exemplar")
    sketches = pair(list(images), args.sketch, "--sketch") if args.sketch else None
    model = OnnxInpainter(args.onnx, args.threads)
    if sketches is not None and not model.sketch:
        raise OnnxInputError(f"--sketch needs a graph exported from a sketch fine-tuned checkpoint; {args.onnx} "
                             f"has no sketch input.")
    # Every input is read before anything is written.
    problems = []
    for key, path in images.items():
        try:
            rgb = read_rgb(path)
            hole = read_binary(masks[key], rgb.shape[:2], "--mask", args.mask_hole == "white")
            if not hole.any():
                problems.append(f"{masks[key]}: the mask has no hole pixels (nothing to fill); white marks the "
                                f"hole (use --mask-hole black for black holes).")
            for w in mask_warnings(hole, args.mask_hole):
                print(f"warning: {masks[key]}: {w}", file=sys.stderr)
            if sketches is not None:
                read_binary(sketches[key], rgb.shape[:2], "--sketch")
            read_rgb(exemplars[key])
        except OnnxInputError as e:
            problems.append(str(e))
    if len(problems) == 1:
        raise OnnxInputError(f"{problems[0].rstrip('.')}; nothing was written.")
    if problems:
        raise OnnxInputError(f"{len(problems)} problems with the inputs, nothing was written:\n  " + "\n  ".join(problems))
    suffixes = [f"_sample{k}.png" for k in range(args.samples)]
    for key, path in images.items():
        rgb = read_rgb(path)
        hole = read_binary(masks[key], rgb.shape[:2], "--mask", args.mask_hole == "white")
        prep = Prepared(rgb, hole, model.size)
        sketch = None
        if sketches is not None:
            sketch = prep.pooled(read_binary(sketches[key], rgb.shape[:2], "--sketch") & hole)
        results = model.samples(prep, read_exemplar(exemplars[key], model.size), samples=args.samples,
                                seed=args.seed, truncation=args.truncation, sketch=sketch)
        paths = reserve(args.out, key, suffixes)
        for k, (res, p) in enumerate(zip(results, paths)):
            save_png(res, p, {"exegan:onnx": os.path.abspath(args.onnx), "exegan:image": path,
                              "exegan:mask": masks[key], "exegan:exemplar": exemplars[key],
                              "exegan:seed": args.seed + k, "exegan:truncation": args.truncation,
                              "exegan:rng": "numpy.random.default_rng(seed): z, then noise",
                              "exegan:graph": json.dumps({"ckpt_sha256": model.meta.get("exegan.ckpt_sha256")})})
        print(f"{path} -> {', '.join(paths)}")
    return 0


def run(argv: Optional[Sequence[str]] = None) -> int:
    try:
        return main(argv)
    except UserError as e:
        return report(e)


if __name__ == "__main__":
    sys.exit(run())
