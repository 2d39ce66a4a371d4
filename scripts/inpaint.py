#!/usr/bin/env python
"""Exemplar-guided inpainting / guided recovery with a trained EXE-GAN (Lu et al., Neurocomputing
2025): fill the holes of face images so that the filled region takes on an exemplar face's
attributes, K diverse results per image, plus a side-by-side sheet.

    python scripts/inpaint.py --ckpt EXE_GAN_model_256.pt --psp psp_ffhq_encode.pt \\
        --image face.png --mask face_mask.png --exemplar other_face.png --samples 4 --out results/

Images may have any size: they are brought to the model size and the prediction is pasted back
at the original size inside the hole only (the known pixels of every output are the input's,
bit for bit). See inference/roundtrip.py for the resizing and thresholding rules and
docs/applications.md for the whole workflow (sketches, your own photos).

Ordinary photos (not aligned face crops) go through the face's aligned crop with ``--align``:

    python scripts/inpaint.py --ckpt EXE_GAN_model_256.pt --psp psp_ffhq_encode.pt --align \\
        --image photo.jpg --mask photo_mask.png --exemplar other_photo.jpg --out results/

the face is found (``--landmarks`` or the detector), photo, hole and exemplar are aligned, the crop
is completed and warped back into the photo inside the hole only (inference/photo.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional, Sequence, Tuple

from PIL import Image
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.imaging import open_rgb  # noqa: E402
from inference import runtime  # noqa: E402
from inference.io import mask_warnings, read_binary, read_exemplar, to_uint8, warn  # noqa: E402
from inference.photo import PhotoAligner, transform_json  # noqa: E402
from inference.roundtrip import inpaint_one, model_sketch, prepare, with_hole  # noqa: E402
from scripts import cli_common as cli  # noqa: E402

EPILOG = """\
inputs:
  --image     an image file, or a folder (scanned recursively)
  --mask      a mask file (for one image, or the same mask for all images of its size), or a folder
              whose files are paired with the images by name (relative path without extension);
              same size as its image; white = hole (--mask-hole black for black holes), thresholded
              at half the value range; mostly grey masks are refused
  --exemplar  one exemplar for all images, or a folder paired by name; any size (centre-cropped)
  --pair-by   other namings of paired folders, e.g. --pair-by mask={name}_mask (x.png + x_mask.png,
              also both in one folder) or image={name}_real mask={name}_mask exemplar={name}_exe
  --sketch    (needs a sketch fine-tuned checkpoint) stroke images paired like masks, same size as
              the image; white strokes on black (--sketch-strokes black for dark strokes on white);
              only strokes inside the hole are used

outputs (in --out, keeping the input folder structure; nothing is overwritten: if a name is taken
the whole set gets the next free '-N' suffix):
  <name>_sample<k>.png   result k (k = 0..K-1, drawn with seed + k), at the input's size
  <name>_sheet.png       input with the hole in white | mask | [sketch |] exemplar | results

checks: every input is read before anything is written (images and masks decode, each mask has
its image's size, is black-and-white and has a hole, every image has its exemplar / sketch); all
problems are listed at once. Masks whose hole covers more than 70 % of the image, or that look
inverted (the hole runs round the border, the known pixels form an island), get a warning.

--align (ordinary photos): the face whose aligned crop holds the hole is completed (--face to
choose); a hole that reaches outside the crop is an error that suggests a --crop-scale; exemplars
are aligned too (their own landmarks or detection) unless --exemplar-aligned; every result is at
the photo's size and carries the transform in its 'exegan:transform' PNG text chunk
(--save-transform also writes <name>_transform.json).

--skip-existing resumes an interrupted folder run in the same --out: images whose outputs are all
there are skipped, missing files of a set are written (sample k is always drawn with seed + k, so
the set is what an uninterrupted run writes); an existing file made with another checkpoint,
seed, truncation or input is an error.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", required=True, help="image file or folder")
    p.add_argument("--mask", required=True, help="mask file or folder (paired by name)")
    p.add_argument("--exemplar", required=True, help="exemplar file (for all) or folder (paired by name)")
    p.add_argument("--samples", type=int, default=1, help="K diverse results per image (default 1)")
    p.add_argument("--sketch", help="sketch file or folder (paired by name); needs a sketch fine-tuned --ckpt")
    p.add_argument("--sketch-strokes", choices=("white", "black"), default="white",
                   help="stroke colour of the sketch files (default white strokes on black)")
    p.add_argument("--no-sheet", action="store_true", help="do not write the side-by-side sheets")
    cli.add_pair_by_arg(p, ("image", "mask", "exemplar", "sketch"))
    p.add_argument("--skip-existing", action="store_true",
                   help="resume an interrupted run into the same --out: skip images whose outputs "
                        "exist, write only the missing files (instead of a new '-N' set)")
    cli.add_model_args(p)
    runtime.add_runtime_args(p)
    cli.add_align_args(p)
    return p


# Metadata written into every PNG and compared by --skip-existing with the files already there.
_SETTINGS_META = ("exegan:ckpt", "exegan:image", "exegan:mask", "exegan:exemplar", "exegan:sketch",
                  "exegan:truncation", "exegan:seed", "exegan:align")


def _file_meta(args, key, image_path, masks, exemplars, sketches) -> dict:
    meta = {"exegan:ckpt": os.path.abspath(args.ckpt), "exegan:image": image_path,
            "exegan:mask": masks[key], "exegan:exemplar": exemplars[key],
            "exegan:truncation": args.truncation}
    if sketches is not None:
        meta["exegan:sketch"] = sketches[key]
    if args.align:
        meta["exegan:align"] = (f"face={args.face};crop_scale={args.crop_scale:g};feather={args.feather};"
                                f"exemplar_aligned={int(args.exemplar_aligned)}")
    return meta


def _differs(path: str, want: dict) -> Optional[str]:
    """Why the PNG at ``path`` was not made by these settings (None when it was)."""
    try:
        with Image.open(path) as img:
            have = dict(getattr(img, "text", {}) or {})
    except OSError:
        return "it cannot be read as a PNG"
    for k in _SETTINGS_META:
        if k not in want:
            continue
        a, b = have.get(k), str(want[k])
        if k in ("exegan:image", "exegan:mask", "exegan:exemplar", "exegan:sketch"):
            a, b = a and os.path.basename(a), os.path.basename(b)  # relative paths depend on the cwd
        if a != b:
            return f"it was made with {k.split(':')[1]} {a!r}, this run uses {b!r}"
    return None


def _transform_differs(path: str, args, image_path: str) -> Optional[str]:
    """Why the --save-transform file at ``path`` was not made by these settings (None when it was)."""
    try:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
        have = (os.path.basename(rec["source"]), rec["crop_scale"], rec["feather"])
    except (OSError, ValueError, KeyError, TypeError):
        return "it cannot be read as a transform file"
    want = (os.path.basename(image_path), args.crop_scale, args.feather)
    if have != want:
        return (f"it was made for {have[0]!r} with crop scale {have[1]:g} and feather {have[2]}, this run "
                f"uses {want[0]!r}, {want[1]:g} and {want[2]}")
    return None


def _not_done(args, images, masks, exemplars, sketches, writer, suffixes) -> Tuple[List[str], List[str]]:
    """--skip-existing: (the images still to do, problems). The images whose whole first set is there
    are done; the files of a set that exist must come from these settings (sample k is seed + k, so
    the rest completes it)."""
    todo, problems = [], []
    for key, image_path in images.items():
        paths = writer.first_set(key, suffixes)
        meta = _file_meta(args, key, image_path, masks, exemplars, sketches)
        there = [s for s, p in paths.items() if os.path.exists(p)]
        for s in there:
            if s == "_transform.json":
                why = _transform_differs(paths[s], args, image_path)
            else:
                why = _differs(paths[s], {**meta, "exegan:seed": args.seed + int(s[7:-4])}
                               if s.startswith("_sample") else meta)
            if why:
                problems.append(f"{paths[s]} exists but {why}; use another --out, or remove it.")
        if len(there) < len(suffixes):
            todo.append(key)
    if len(todo) < len(images):
        print(f"--skip-existing: {len(images) - len(todo)} of {len(images)} image(s) already done in "
              f"{args.out}")
    return todo, problems


def precheck(images, masks, exemplars, sketches, args, todo, faces=None) -> List[str]:
    """Read every input of the images in ``todo`` before anything is written: a list of problems
    (``<file>: <what is wrong>``; empty when all is well). Warnings are printed as they are found.
    With --align (``faces``, a :class:`cli.PhotoFaces`) every photo's face is found and its crop
    checked to hold the hole, and every exemplar's face is found."""
    problems, seen_exemplars = [], {}
    for key in _progress(todo, "checking inputs", faces is not None):
        image_path = images[key]
        try:
            shape = cli.read_rgb(image_path).shape[:2]
        except cli.user_errors() as e:
            problems.append(str(e))
            shape = None
        if shape is not None:
            try:
                hole = read_binary(masks[key], shape, "mask", "--mask", args.mask_hole == "white")
                if not hole.any():
                    problems.append(f"{masks[key]}: the mask has no hole pixels (nothing to fill); white "
                                    f"marks the hole (use --mask-hole black for black holes).")
                for w in mask_warnings(hole, args.mask_hole):
                    warn(f"{masks[key]}: {w}")
                if faces is not None and hole.any():
                    faces.photo(key, image_path, cli.read_rgb(image_path), hole, args.landmarks)
            except cli.user_errors() as e:
                problems.append(str(e))
            if sketches is not None:
                try:
                    read_binary(sketches[key], shape, "sketch", "--sketch", args.sketch_strokes == "white")
                except cli.user_errors() as e:
                    problems.append(str(e))
        ex = exemplars[key]
        if ex not in seen_exemplars:
            try:
                if faces is not None and not args.exemplar_aligned:
                    faces.exemplar(key, ex, args.exemplar_landmarks)
                else:
                    open_rgb(ex)
                seen_exemplars[ex] = None
            except cli.user_errors() as e:
                seen_exemplars[ex] = str(e)
                problems.append(str(e))
    return problems


def _progress(keys, desc: str, show: bool):
    """``keys`` with a tqdm progress bar on stderr for folder runs (more than one image)."""
    if not show or len(keys) < 2:
        return keys
    return tqdm(keys, desc=desc, unit="image", leave=False)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.samples < 1:
        raise cli.CLIError(f"--samples must be at least 1, got {args.samples}.")
    cli.check_finite(truncation=args.truncation)
    cli.check_align_args(args)
    device = cli.resolve_device(args.device)

    pairing = cli.folder_pairing(args.pair_by, {"image": args.image, "mask": args.mask,
                                                "exemplar": args.exemplar, "sketch": args.sketch})
    images = cli.collect(args.image, "image", "--image", pairing)
    paired, missing = {}, []  # every role's missing partners at once
    for role, path in (("mask", args.mask), ("exemplar", args.exemplar), ("sketch", args.sketch)):
        if path:
            try:
                paired[role] = cli.pair(images, path, role, f"--{role}", pairing)
            except cli.CLIError as e:
                missing.append(str(e))
    if len(missing) > 1:
        raise cli.CLIError(f"{len(missing)} problems with the inputs, nothing was written:\n  "
                           + "\n  ".join(missing))
    if missing:
        raise cli.CLIError(missing[0])
    masks, exemplars, sketches = paired["mask"], paired["exemplar"], paired.get("sketch")
    writer = cli.OutputWriter(args.out)
    suffixes = [f"_sample{k}.png" for k in range(args.samples)] + ([] if args.no_sheet else ["_sheet.png"])
    if args.save_transform:
        suffixes.append("_transform.json")
    faces = model = None
    if args.align:  # the crop geometry needs the model's size before the checks
        photo_marks = cli.photo_landmarks(images, args.landmarks, "--landmarks")
        exemplar_marks = None if args.exemplar_aligned else \
            cli.photo_landmarks(exemplars, args.exemplar_landmarks, "--exemplar-landmarks")
        model = runtime.load_model(args.ckpt, args.psp, device, sketch=sketches is not None, which=args.which,
                                   runtime=args.runtime, cache=args.onnx_cache, work=len(images) * args.samples)
        aligner = PhotoAligner(model.size, crop_scale=args.crop_scale, face=args.face, feather=args.feather,
                               device=device)
        faces = cli.PhotoFaces(aligner, photo_marks, exemplar_marks)

    todo, problems = list(images), []
    if args.skip_existing:
        todo, problems = _not_done(args, images, masks, exemplars, sketches, writer, suffixes)
    problems += precheck(images, masks, exemplars, sketches, args, todo, faces)
    if problems:
        if len(problems) == 1:
            raise cli.CLIError(f"{problems[0].rstrip('.')}; nothing was written.")
        raise cli.CLIError(f"{len(problems)} problems with the inputs, nothing was written:\n  "
                           + "\n  ".join(problems))

    if model is None:
        model = runtime.load_model(args.ckpt, args.psp, device, sketch=sketches is not None, which=args.which,
                                   runtime=args.runtime, cache=args.onnx_cache, work=len(todo) * args.samples)
    size = model.size

    for key in _progress(todo, "inpainting", True):
        image_path = images[key]
        original = cli.read_rgb(image_path)
        hole = read_binary(masks[key], original.shape[:2], "mask", "--mask", args.mask_hole == "white")
        record = None
        if faces is not None:
            prep = faces.photo(key, image_path, original, hole, args.landmarks)
            record = prep.record()
            if args.exemplar_aligned:
                exemplar = read_exemplar(exemplars[key], size)
            else:
                exemplar, record["exemplar"] = faces.exemplar(key, exemplars[key], args.exemplar_landmarks)
        else:
            try:
                prep = prepare(original, hole, size)
            except cli.CLIError as e:
                raise cli.CLIError(f"{masks[key]}: {e}") from None
            exemplar = read_exemplar(exemplars[key], size)
        sketch = strokes = None
        if sketches is not None:
            strokes = read_binary(sketches[key], original.shape[:2], "sketch", "--sketch",
                                      args.sketch_strokes == "white")
            sketch = prep.model_sketch(strokes) if faces is not None else model_sketch(prep, strokes)
        results = inpaint_one(model, prep, exemplar, samples=args.samples, seed=args.seed,
                              truncation=args.truncation, sketch=sketch)

        paths = writer.first_set(key, suffixes) if args.skip_existing else writer.reserve(key, suffixes)
        meta = {**_file_meta(args, key, image_path, masks, exemplars, sketches),
                "exegan:runtime": getattr(model, "runtime", "PyTorch")}
        if record is not None:
            meta["exegan:transform"] = transform_json(record)
            if args.save_transform and not os.path.exists(paths["_transform.json"]):
                writer.save_json({**record, "source": image_path}, paths["_transform.json"])
        for k, res in enumerate(results):
            if not os.path.exists(paths[f"_sample{k}.png"]):
                writer.save(res, paths[f"_sample{k}.png"], {**meta, "exegan:seed": args.seed + k})
        if not args.no_sheet and not os.path.exists(paths["_sheet.png"]):
            h = max(size, 64)
            tiles = [cli.tile(with_hole(original, hole), h), cli.tile(hole, h, nearest=True)]
            if faces is not None:  # what the model saw: the aligned crop and its hole
                tiles.append(cli.tile(with_hole(prep.crop, prep.crop_hole), h))
            if strokes is not None:
                tiles.append(cli.tile(strokes & hole, h, nearest=True))
            tiles.append(cli.tile(to_uint8(exemplar), h))
            tiles += [cli.tile(r, h) for r in results]
            writer.save(cli.hstack(tiles), paths["_sheet.png"], meta)
        where = "" if record is None else f" (face {record['face_index']} of {record['faces_found']})"
        _say(f"{image_path}{where} -> {', '.join(paths[s] for s in suffixes)}", len(todo) > 1)
    return 0


def _say(line: str, folder: bool) -> None:
    """One line per image, written so that a progress bar stays intact."""
    if folder:
        tqdm.write(line)
    else:
        print(line)


if __name__ == "__main__":
    sys.exit(cli.run(main))
