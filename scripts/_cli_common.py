"""Shared pieces of the application scripts (inpaint.py, style_mix.py, align_faces.py).

* input collection and pairing by file name (relative path without extension, or the
  ``--pair-by`` patterns; the rule is :mod:`datasets.pairing`, shared with test.py);
* reading images, masks and sketches at their original resolution;
* the any-size round trip: original image -> model-size input -> completed model-size output ->
  result at the original size in which only hole pixels change (:func:`prepare`, :func:`paste_back`);
* PNG writing that never overwrites (:class:`OutputWriter`), model loading, devices, and the
  ``main`` wrapper that prints a user-fixable error as one sentence (exit status 2).

Resizing rules (the model runs at S x S):

* **image** -> hole pixels set to the known pixels' mean colour (below), padded to a square (the short side is extended on both sides by repeating its edge
  pixels; the padding counts as known), then resized to S x S with Pillow's **Lanczos** filter
  (the filter the datasets use); not resampled when already S x S.
* **mask** -> read at the image's own resolution (grayscale; a pixel is a hole when it is brighter
  than half the value range, ``--mask-hole black`` flips that; more than 25 % mid-grey pixels is
  an error), padded with "known", then reduced to S x S by **any-pooling**: a model pixel is a
  hole when any original pixel in its footprint is (``adaptive_max_pool2d``), so the model's hole
  covers every original hole pixel.
* **prediction** -> the completed S x S image (8-bit) is resized back to the padded square with
  Lanczos, the padding is cropped, and it is pasted **only where the original-resolution mask is a
  hole**: every known pixel of the output is the input's decoded 8-bit RGB value, bit for bit.
* **exemplar** -> centre-cropped to a square and resized to S x S with Lanczos (as the datasets).

Before the image is resized its hole pixels are set to the mean colour of its known pixels: the
resize filter reaches about three model pixels around the hole, and what the hole held (an object
to remove, a scribble) should not leak into the known pixels the model reads there.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from PIL.PngImagePlugin import PngInfo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from common.errors import UserError  # noqa: E402
from datasets.imaging import (IMAGE_EXTENSIONS, load_image, open_rgb, pil_to_tensor,  # noqa: E402
                              rel_stem, scan_images)
from datasets.masks import read_mask_file  # noqa: E402

#: Resampling filter for images and predictions.
RESIZE_FILTER = Image.LANCZOS


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's ArgumentDefaultsHelpFormatter, but "(default: X)" is appended only where X is a
    value and the help text does not already say what the default is (no "(default: the preset's)
    (default: None)")."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


class CLIError(UserError, ValueError):
    """An input a user can fix; printed as one sentence without a traceback."""


def user_errors() -> tuple:
    """Exception types whose message is a complete sentence for the user: every error derives
    from :class:`common.errors.UserError`."""
    return (UserError,)


def run(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Call ``main(argv)``; a user error is printed as ``error: <sentence>`` with exit status 2."""
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------------------------ devices
def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CLIError(f"--device {name!r} is not a device name; use cpu or cuda (cuda:N).") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name} was asked for but no CUDA GPU is available; use --device cpu.")
    return device


# ------------------------------------------------------------------------------ input pairing
# The pairing rule itself (patterns, lookup, messages) is datasets/pairing.py, shared with test.py.
def add_pair_by_arg(p, roles: Sequence[str]) -> None:
    """``--pair-by ROLE=PATTERN ...`` for a script whose folders have these roles."""
    from datasets.pairing import NAME
    p.add_argument("--pair-by", nargs="+", default=[], metavar="ROLE=PATTERN",
                   help=f"how file names pair across folders (roles: {', '.join(roles)}): {NAME} "
                        f"is the shared part, e.g. mask={NAME}_mask for x.png + x_mask.png, or "
                        f"image={NAME}_real mask={NAME}_mask exemplar={NAME}_exe for 1_real.png + "
                        f"1_mask.png + 1_exe.png (default: the same name, any extension)")


def folder_pairing(values: Optional[Sequence[str]], folders: Dict[str, Optional[str]]):
    """A :class:`datasets.pairing.FolderPairing` from ``--pair-by`` values and each role's path."""
    from datasets.pairing import FolderPairing, parse_pair_by
    try:
        patterns = parse_pair_by(values, list(folders))
    except ValueError as e:
        raise CLIError(str(e)) from None
    return FolderPairing(patterns, folders)


def _named_files(path: str, what: str, option: str, pairing):
    from datasets.pairing import NamedFiles
    pattern = pairing.pattern(what) if pairing else None
    files = NamedFiles(path, pattern, what, option, error=CLIError,
                       exclude=pairing.exclude(what, path) if pairing else ())
    if not len(files):
        named = f" named like '{files.pattern.template}' (see --pair-by)" if \
            not files.pattern.generic else ""
        raise CLIError(f"{option} folder {path} holds no images{named} ({', '.join(IMAGE_EXTENSIONS)}).")
    return files


def collect(path: str, what: str, option: str, pairing=None) -> Dict[str, str]:
    """{key: file} for a file (key = its stem) or a folder (keys = relative paths without
    extension and without the role's ``--pair-by`` pattern, scanned recursively, sorted)."""
    if not os.path.exists(path):
        raise CLIError(f"{option} {path} does not exist; give an image file or a folder of images.")
    if os.path.isfile(path):
        key = pairing.key_of_file(what, path) if pairing else rel_stem(os.path.basename(path))
        return {key: path}
    files = _named_files(path, what, option, pairing)
    return {k: files.get(k) for k in sorted(files.keys())}


def pair(images: Dict[str, str], path: str, what: str, option: str, pairing=None) -> Dict[str, str]:
    """For each image key, the file of ``path`` that goes with it: a single file serves every
    image; a folder is paired by name (datasets/pairing.py: relative path without extension, or
    the ``--pair-by`` patterns); a missing partner names the file looked for."""
    if not os.path.exists(path):
        raise CLIError(f"{option} {path} does not exist; give {article(what)} {what} file or a folder paired by name.")
    if os.path.isfile(path):
        return {k: path for k in images}
    image_dir = pairing.folders.get("image") if pairing else None
    if what in ("mask", "sketch") and image_dir and os.path.isdir(image_dir) and \
            os.path.realpath(image_dir) == os.path.realpath(path) and \
            pairing.pattern(what) == pairing.pattern("image"):
        from datasets.pairing import suggest_pair_by
        stems = [rel_stem(n) for n in scan_images(path)]
        hint = suggest_pair_by(stems, stems, "image", what) or f"{what}={{name}}_{what}"
        raise CLIError(f"{option} {path} is also the --image folder and both use the name pattern "
                       f"'{pairing.pattern(what).template}', so every image would be its own {what}; "
                       f"tell them apart with --pair-by {hint}.")
    others = _named_files(path, what, option, pairing)
    missing = others.missing(images)
    if missing:
        image_pattern = pairing.pattern("image") if pairing else None
        raise CLIError(others.missing_message(missing, image_pattern, "image", list(images)))
    return {k: others.get(k) for k in images}


# -------------------------------------------------------------------------------------- reading
def read_rgb(path: str) -> np.ndarray:
    """Decoded 8-bit RGB [H, W, 3] (EXIF orientation applied, alpha composited on white)."""
    return np.asarray(open_rgb(path), dtype=np.uint8).copy()


def read_binary(path: str, shape: tuple, what: str, option: str, white_is_on: bool = True) -> np.ndarray:
    """A black-and-white file as bool [H, W] (True = white, or black with ``white_is_on=False``),
    thresholded at half of its value range; it must have the image's size ``shape``."""
    on = read_mask_file(path, hole_value=1 if white_is_on else 0)
    if on.shape != tuple(shape):
        raise CLIError(f"{option} {path} is {on.shape[1]}x{on.shape[0]} but its image is {shape[1]}x{shape[0]}; "
                       f"give {article(what)} {what} of the image's size (width x height).")
    return on


def article(word: str) -> str:
    """'a' or 'an' before ``word`` (by its first letter: an exemplar, a mask)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


#: Masks whose hole covers more than this fraction of the image get a warning.
LARGE_HOLE = 0.70


def mask_warnings(hole: np.ndarray, hole_colour: str = "white") -> List[str]:
    """Sentences about a mask that is valid but implausible (empty list when it looks fine):

    * the hole covers more than ``LARGE_HOLE`` of the image (little is left to go on);
    * it looks inverted: the hole covers most of the image and runs round its whole border while
      the known pixels form an island inside - what a hole drawn in the other colour gives.

    ``hole_colour`` is the --mask-hole value used to read it (for the suggested fix).
    """
    frac = float(hole.mean())
    out = []
    border = np.concatenate([hole[0], hole[-1], hole[1:-1, 0], hole[1:-1, -1]])
    if frac > 0.5 and float(border.mean()) > 0.95:
        other = "black" if hole_colour == "white" else "white"
        out.append(f"the mask looks inverted: the hole covers {100 * frac:.0f} % of the image and "
                   f"surrounds the known pixels; if {other} marks the hole in your masks, pass "
                   f"--mask-hole {other}.")
    elif frac > LARGE_HOLE:
        out.append(f"the hole covers {100 * frac:.0f} % of the image (more than {100 * LARGE_HOLE:.0f} %); "
                   f"with so little of the face known the results will be poor.")
    return out


def warn(message: str) -> None:
    """One ``warning: ...`` line on stderr (the run goes on)."""
    print(f"warning: {message}", file=sys.stderr)


def read_exemplar(path: str, size: int) -> torch.Tensor:
    """Exemplar [3, S, S] in [-1, 1]: centre crop + Lanczos, as the datasets read images."""
    return pil_to_tensor(load_image(path, size))


# -------------------------------------------------------------------------- model-size round trip
@dataclass
class Prepared:
    """One image on its way to the model and back."""
    original: np.ndarray          # [H, W, 3] uint8, as decoded
    hole: np.ndarray              # [H, W] bool at the original resolution (True = hole)
    top: int                      # padding added above / left to make a square of side `side`
    left: int
    side: int
    image: torch.Tensor           # [3, S, S] in [-1, 1]
    mask: torch.Tensor            # [1, S, S] float, 1 = hole

    @property
    def size(self) -> int:
        return int(self.image.shape[-1])


def _pad_square(a: np.ndarray, side: int, top: int, left: int, mode: str) -> np.ndarray:
    h, w = a.shape[:2]
    pads = [(top, side - h - top), (left, side - w - left)] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, pads, mode=mode) if mode == "edge" else np.pad(a, pads, mode="constant")


def any_pool(on: np.ndarray, size: int) -> torch.Tensor:
    """bool [N, N] -> float [1, S, S]: 1 where any pixel of the footprint is on."""
    t = torch.from_numpy(on.astype(np.float32))[None, None]
    if t.shape[-1] != size:
        t = F.adaptive_max_pool2d(t, size)
    return t[0]


def prepare(original: np.ndarray, hole: np.ndarray, size: int) -> Prepared:
    """Model-size input for an image of any size (see the module docstring)."""
    h, w = hole.shape
    if not hole.any():
        raise CLIError("the mask has no hole pixels (nothing to fill); white marks the hole "
                       "(use --mask-hole black for black holes).")
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    filled = original.copy()
    filled[hole] = np.round(original[~hole].reshape(-1, 3).mean(0)).astype(np.uint8) if (~hole).any() else 128
    square = _pad_square(filled, side, top, left, "edge")
    if side != size:
        square = np.asarray(Image.fromarray(square).resize((size, size), RESIZE_FILTER))
    image = pil_to_tensor(Image.fromarray(square))
    mask = any_pool(_pad_square(hole, side, top, left, "constant"), size)
    return Prepared(original, hole, top, left, side, image, mask)


def model_sketch(prep: Prepared, strokes: np.ndarray) -> torch.Tensor:
    """User strokes (bool [H, W], original resolution) -> [1, S, S] in {0, 1}: restricted to the
    hole, padded like the image and any-pooled, so a 1-pixel stroke survives the downscale."""
    on = strokes & prep.hole
    return any_pool(_pad_square(on, prep.side, prep.top, prep.left, "constant"), prep.size)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> [H, W, 3] uint8 (rounded)."""
    a = ((t.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return a.permute(1, 2, 0).numpy()


def paste_back(prep: Prepared, completed: torch.Tensor) -> np.ndarray:
    """Completed model-size image [3, S, S] -> result [H, W, 3] uint8 at the original size whose
    known pixels are ``prep.original``'s exactly."""
    up = to_uint8(completed)
    if prep.side != prep.size:
        up = np.asarray(Image.fromarray(up).resize((prep.side, prep.side), RESIZE_FILTER))
    h, w = prep.hole.shape
    up = up[prep.top:prep.top + h, prep.left:prep.left + w]
    return np.where(prep.hole[..., None], up, prep.original)


def with_hole(original: np.ndarray, hole: np.ndarray, fill=(255, 255, 255)) -> np.ndarray:
    """The input as the model sees it: hole pixels painted ``fill`` (for the sheets)."""
    out = original.copy()
    out[hole] = fill
    return out


def complete(model, prep: Prepared, codes: torch.Tensor, *, seed: int, truncation: float,
             sketch: Optional[torch.Tensor] = None) -> np.ndarray:
    """One result [H, W, 3] uint8 at the original size: ``model.complete`` on the model-size input
    with exemplar ``codes`` [1, n, style_dim] (from ``model.encode_exemplars``, computed once per
    exemplar rather than once per sample as ``inpaint`` / ``style_mix`` would), z and noise drawn
    from ``seed``; then :func:`paste_back`. ``sketch`` [1, S, S] needs a SketchEXEGAN."""
    dev = model.device
    kw = {} if sketch is None else {"sketch": sketch[None].to(dev)}
    out = model.complete(prep.image[None].to(dev), prep.mask[None].to(dev), codes.to(dev),
                         seed=seed, truncation=truncation, **kw)[0]
    return paste_back(prep, out)


# ---------------------------------------------------------------------------------------- sheets
def tile(a: np.ndarray, height: int, nearest: bool = False) -> Image.Image:
    """[H, W(, 3)] uint8 (or bool) -> RGB image of the given height, aspect kept."""
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    img = Image.fromarray(a).convert("RGB")
    w = max(1, round(img.width * height / img.height))
    if img.size != (w, height):
        img = img.resize((w, height), Image.NEAREST if nearest else RESIZE_FILTER)
    return img


def hstack(tiles: List[Image.Image], gap: int = 4, background=(255, 255, 255)) -> Image.Image:
    height = max(t.height for t in tiles)
    width = sum(t.width for t in tiles) + gap * (len(tiles) - 1)
    sheet = Image.new("RGB", (width, height), background)
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 0))
        x += t.width + gap
    return sheet


# --------------------------------------------------------------------------------------- writing
class OutputWriter:
    """Writes PNGs under ``root`` and never overwrites a file.

    A set of outputs that belong together (e.g. the K samples and the sheet of one image) is
    reserved at once: ``<key><suffix>`` for every suffix if none of them exists, else the first
    ``<key>-<n><suffix>`` (n = 1, 2, ...) that is free for the whole set. Files are created with
    exclusive mode, so even a concurrent run cannot be overwritten (it is an error instead).
    """

    def __init__(self, root: str):
        if os.path.exists(root) and not os.path.isdir(root):
            raise CLIError(f"--out {root} is a file; give a folder for the results.")
        self.root = root
        self.written: List[str] = []

    def first_set(self, key: str, suffixes: Sequence[str]) -> Dict[str, str]:
        """``<key><suffix>`` for every suffix: the files of a first run (``--skip-existing``)."""
        return {s: os.path.join(self.root, key + s) for s in suffixes}

    def reserve(self, key: str, suffixes: Sequence[str]) -> Dict[str, str]:
        n = 0
        while True:
            stem = key if n == 0 else f"{key}-{n}"
            paths = {s: os.path.join(self.root, stem + s) for s in suffixes}
            if not any(os.path.exists(p) for p in paths.values()):
                return paths
            n += 1

    def save(self, img, path: str, meta: Optional[Dict[str, str]] = None) -> str:
        if isinstance(img, np.ndarray):
            img = Image.fromarray(img)
        info = PngInfo()
        for k, v in (meta or {}).items():
            info.add_text(k, str(v))
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            with open(path, "xb") as f:
                img.save(f, format="PNG", pnginfo=info)
        except FileExistsError:
            raise CLIError(f"{path} appeared while this run was writing; results are never overwritten, "
                           f"run again (or use another --out).") from None
        self.written.append(path)
        return path


# -------------------------------------------------------------------------------------- models
def load_model(ckpt: str, psp: str, device: torch.device, sketch: bool = False, which: str = "g_ema"):
    """EXEGAN (or SketchEXEGAN) from the two files, the generator from entry ``which`` of a
    training checkpoint; errors are one sentence."""
    for option, path in (("--ckpt", ckpt), ("--psp", psp)):
        if not os.path.isfile(path):
            raise CLIError(f"{option} {path} does not exist; give the path of the "
                           f"{'EXE-GAN checkpoint' if option == '--ckpt' else 'pSp encoder file (psp_ffhq_encode.pt)'}.")
    if sketch:
        from models.sketch import SketchEXEGAN
        return SketchEXEGAN.from_checkpoints(ckpt, psp, device, which=which)
    from models.exegan import EXEGAN
    return EXEGAN.from_checkpoints(ckpt, psp, device, which=which)


def add_model_args(p) -> None:
    p.add_argument("--ckpt", required=True, help="EXE-GAN checkpoint (ours, export.pt, or the released "
                                                 "EXE_GAN_model_256.pt / _512.pt)")
    p.add_argument("--which", default="g_ema", metavar="ENTRY",
                   help="which generator of --ckpt to use: g_ema (default, the moving average) or "
                        "g (the raw generator of a training checkpoint); a bare generator state "
                        "dict ignores it")
    p.add_argument("--psp", required=True, help="pSp style encoder file (psp_ffhq_encode.pt)")
    p.add_argument("--truncation", type=float, default=1.0,
                   help="psi for the random style z (< 1: closer to the average; default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of z and the noise maps (default 0)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    p.add_argument("--mask-hole", choices=("white", "black"), default="white",
                   help="which colour of the mask files is the hole (default white)")
    p.add_argument("--out", required=True, help="output folder (created; existing files are never overwritten)")
