"""Command-line pieces of the application scripts (inpaint.py, style_mix.py, align_faces.py, the
editor): input collection and pairing by file name (relative path without extension, or the
``--pair-by`` patterns; the rule is :mod:`datasets.pairing`, shared with test.py), PNG writing that
never overwrites (:class:`OutputWriter`), side-by-side sheets, devices, the shared flags, the
newest demo run's files (``--demo``), and the ``main`` wrapper that prints a user-fixable error as
one sentence (exit status 2).

The library they call lives in :mod:`inference`: reading photos, masks and exemplars
(:mod:`inference.io`), the any-size round trip (:mod:`inference.roundtrip`, whose docstring has the
resizing rules), face alignment (:mod:`inference.align`, :mod:`inference.detect`) and the photo
pipeline of ``--align`` (:mod:`inference.photo`); import them from there.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from common.errors import UserError  # noqa: E402
from datasets.imaging import IMAGE_EXTENSIONS, rel_stem, scan_images  # noqa: E402
from datasets.pairing import NAME, FolderPairing, NamedFiles, parse_pair_by, suggest_pair_by  # noqa: E402
from inference.align import landmarks_from_files  # noqa: E402
from inference.errors import InferenceInputError  # noqa: E402
from inference.io import article, read_rgb  # noqa: E402
from inference.photo import check_settings, parse_face  # noqa: E402
from inference.roundtrip import RESIZE_FILTER  # noqa: E402
from metrics.standins import STANDIN_PSP_FILE  # noqa: E402

#: An input a user can fix; printed as one sentence without a traceback.
CLIError = InferenceInputError


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
    p.add_argument("--pair-by", nargs="+", default=[], metavar="ROLE=PATTERN",
                   help=f"how file names pair across folders (roles: {', '.join(roles)}): {NAME} "
                        f"is the shared part, e.g. mask={NAME}_mask for x.png + x_mask.png, or "
                        f"image={NAME}_real mask={NAME}_mask exemplar={NAME}_exe for 1_real.png + "
                        f"1_mask.png + 1_exe.png (default: the same name, any extension)")


def folder_pairing(values: Optional[Sequence[str]], folders: Dict[str, Optional[str]]):
    """A :class:`datasets.pairing.FolderPairing` from ``--pair-by`` values and each role's path."""
    try:
        patterns = parse_pair_by(values, list(folders))
    except ValueError as e:
        raise CLIError(str(e)) from None
    return FolderPairing(patterns, folders)


def _named_files(path: str, what: str, option: str, pairing):
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
        # Checked before any work, leaving nothing behind: the nearest existing folder on the way
        # must take a new folder (not a file, a read-only file system, /proc, another user's).
        parent = os.path.abspath(root)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise CLIError(f"--out {root} cannot be created: {parent} is a file; give a folder for the results.")
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".exegan-write-check-", dir=parent))
        except OSError as e:
            raise CLIError(f"--out {root} cannot be written ({parent}: {e.strerror or e}); give a folder you "
                           f"can write to.") from None
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
        return self._write(path, "xb", lambda f: img.save(f, format="PNG", pnginfo=info))

    def save_json(self, record: dict, path: str) -> str:
        """``record`` as indented JSON at ``path`` (exclusive create, like :meth:`save`)."""
        return self._write(path, "x", lambda f: json.dump(record, f, indent=1))

    def _write(self, path: str, mode: str, write: Callable) -> str:
        """Create ``path`` exclusively and ``write(file)``; a failure is one sentence and leaves no
        half-written file (the files written before it are kept)."""
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
                write(f)
        except FileExistsError:
            raise CLIError(f"{path} appeared while this run was writing; results are never overwritten, "
                           f"run again (or use another --out).") from None
        except OSError as e:
            _remove_partial(path)
            raise CLIError(f"cannot write {path} ({e.strerror or e}); the results written so far are kept "
                           f"- free space or give another --out, then resume with --skip-existing.") from None
        self.written.append(path)
        return path


def _remove_partial(path: str) -> None:
    """Remove the half-written file of a failed write (never a file another run made: ours were
    created with exclusive mode, so one that exists at ``path`` after a failure is ours)."""
    try:
        os.remove(path)
    except OSError:
        pass


# -------------------------------------------------------------------------------------- models
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


def demo_files(runs: str) -> tuple:
    """(export.pt, standin_psp.pt) of the newest ``make demo`` run under ``runs`` (the editor's and
    figure_photo.py's ``--demo``)."""
    found = []
    if os.path.isdir(runs):
        for d in sorted(os.listdir(runs)):
            ckpt = os.path.join(runs, d, "checkpoints", "export.pt")
            if d.endswith("-demo") and os.path.isfile(ckpt):
                found.append((ckpt, os.path.join(runs, d, "checkpoints", STANDIN_PSP_FILE)))
    if not found:
        raise CLIError(f"no demo run with checkpoints/export.pt under {runs}/; run `make demo` first "
                       f"(or give --ckpt and --psp).")
    return found[-1]


# ------------------------------------------------------------------------------ --align (photos)
def add_align_args(p, exemplar_options: Sequence[str] = ("--exemplar",)) -> None:
    """The flags of the photo pipeline (:mod:`inference.photo`)."""
    g = p.add_argument_group("your own photos (--align)")
    g.add_argument("--align", action="store_true",
                   help="the images are ordinary photos: find the face (--landmarks or the detector), "
                        "complete its aligned crop and put the result back into the photo, inside the "
                        "hole only (every other pixel is the photo's, bit for bit)")
    g.add_argument("--landmarks", help="with --align: landmark file / folder / JSON map of the photos (5 points: "
                                       "left eye, right eye, nose tip, left and right mouth corners; else the "
                                       "detector finds them)")
    g.add_argument("--face", default="auto",
                   help="with --align and several faces: auto (default: the face whose crop holds the hole), "
                        "largest, or N (0 = the largest face, 1 = the next, ...)")
    g.add_argument("--crop-scale", type=float, default=1.0,
                   help="with --align: a crop this many times larger around the same face, for holes that "
                        "reach past the standard aligned crop (default 1)")
    g.add_argument("--feather", type=int, default=0, metavar="PX",
                   help="with --align: blend the outermost PX pixels inside the hole edge with the photo "
                        "(a distance ramp; never outside the hole; default 0: a hard composite)")
    g.add_argument("--exemplar-aligned", action="store_true",
                   help=f"with --align: {'/'.join(exemplar_options)} already aligned face crops (centre-"
                        f"cropped as without --align) instead of photos whose face is found and aligned")
    g.add_argument("--exemplar-landmarks",
                   help="with --align: landmark file / folder / JSON map of the exemplars (else the detector)")
    g.add_argument("--save-transform", action="store_true",
                   help="with --align: also write <name>_transform.json (transform, landmarks, face box; "
                        "the PNGs carry it in their 'exegan:transform' text chunk either way)")


def check_finite(**values: float) -> None:
    """Every given number is finite: ``check_finite(truncation=args.truncation)`` refuses
    ``--truncation nan`` / ``inf`` (argparse's float() takes them) with one sentence."""
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise CLIError(f"--{name.replace('_', '-')} must be a finite number, got {value}.")


def check_align_args(args) -> None:
    """The --align flags make sense together (one sentence otherwise)."""
    if not args.align:
        used = [f for f, v in (("--landmarks", args.landmarks), ("--face", args.face != "auto"),
                               ("--crop-scale", args.crop_scale != 1.0), ("--feather", args.feather != 0),
                               ("--exemplar-aligned", args.exemplar_aligned),
                               ("--exemplar-landmarks", args.exemplar_landmarks),
                               ("--save-transform", args.save_transform)) if v]
        if used:
            raise CLIError(f"{', '.join(used)} only {'apply' if len(used) > 1 else 'applies'} with --align; add "
                           f"--align to complete a photo through its aligned face crop.")
        return
    if args.exemplar_aligned and args.exemplar_landmarks:
        raise CLIError("--exemplar-aligned and --exemplar-landmarks contradict each other: aligned exemplars "
                       "need no landmarks; give one of them.")
    check_finite(crop_scale=args.crop_scale)
    args.face = parse_face(args.face)
    check_settings(args.crop_scale, args.feather)


def photo_landmarks(images: Dict[str, str], path: Optional[str], option: str) -> Optional[Dict[str, np.ndarray]]:
    """{key: [5, 2]} from a landmark file / folder / JSON map, or None (the detector finds them)."""
    if not path:
        return None
    try:
        return landmarks_from_files(images, path)
    except CLIError as e:
        raise CLIError(str(e).replace("--landmarks", option, 1)) from None


class PhotoFaces:
    """Faces of photos and exemplars for --align, from landmark files or the detector, found once per
    file (the checks before the first write find them; the run reuses them)."""

    def __init__(self, aligner, photo_marks=None, exemplar_marks=None):
        self.aligner = aligner
        self.photo_marks, self.exemplar_marks = photo_marks or {}, exemplar_marks or {}
        self._found: Dict[str, list] = {}

    def of(self, path: str, rgb: np.ndarray, marks: Optional[np.ndarray], source: str) -> list:
        if path not in self._found:
            self._found[path] = self.aligner.faces(rgb, marks, source)
        return self._found[path]

    def photo(self, key: str, path: str, rgb: np.ndarray, hole: np.ndarray, landmarks_path: Optional[str]):
        faces = self.of(path, rgb, self.photo_marks.get(key), landmarks_path or "")
        return self.aligner.photo(rgb, hole, path, faces)

    def exemplar(self, key: str, path: str, landmarks_path: Optional[str]):
        """(aligned exemplar [3, S, S], its record)."""
        rgb = read_rgb(path)
        faces = self.of(path, rgb, self.exemplar_marks.get(key), landmarks_path or "")
        return self.aligner.exemplar(rgb, path, faces)
