#!/usr/bin/env python
"""Exemplar-guided inpainting / guided recovery with a trained EXE-GAN (Lu et al., Neurocomputing
2025): fill the holes of face images so that the filled region takes on an exemplar face's
attributes, K diverse results per image, plus a side-by-side sheet.

    python scripts/inpaint.py --ckpt EXE_GAN_model_256.pt --psp psp_ffhq_encode.pt \\
        --image face.png --mask face_mask.png --exemplar other_face.png --samples 4 --out results/

Images may have any size: they are brought to the model size and the prediction is pasted back
at the original size inside the hole only (the known pixels of every output are the input's,
bit for bit). See scripts/_cli_common.py for the resizing and thresholding rules and
docs/applications.md for the whole workflow (alignment, sketches).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts import _cli_common as cli  # noqa: E402

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
    return p


def inpaint_one(model, prep: cli.Prepared, exemplar, *, samples: int, seed: int, truncation: float,
                sketch=None) -> list:
    """K results [H, W, 3] uint8 at the original size; sample k is drawn with seed + k.

    Equal to ``model.inpaint(image, mask, exemplar, seed=seed + k)`` pasted back (the tests check
    it); the exemplar is encoded once for all K samples.
    """
    codes = model.encode_exemplars(exemplar[None])
    return [cli.complete(model, prep, codes, seed=seed + k, truncation=truncation, sketch=sketch)
            for k in range(samples)]


# Metadata written into every PNG and compared by --skip-existing with the files already there.
_SETTINGS_META = ("exegan:ckpt", "exegan:image", "exegan:mask", "exegan:exemplar", "exegan:sketch",
                  "exegan:truncation", "exegan:seed")


def _file_meta(args, key, image_path, masks, exemplars, sketches) -> dict:
    meta = {"exegan:ckpt": os.path.abspath(args.ckpt), "exegan:image": image_path,
            "exegan:mask": masks[key], "exegan:exemplar": exemplars[key],
            "exegan:truncation": args.truncation}
    if sketches is not None:
        meta["exegan:sketch"] = sketches[key]
    return meta


def _differs(path: str, want: dict) -> Optional[str]:
    """Why the PNG at ``path`` was not made by these settings (None when it was)."""
    from PIL import Image

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


def precheck(images, masks, exemplars, sketches, args, todo) -> List[str]:
    """Read every input of the images in ``todo`` before anything is written: a list of problems
    (``<file>: <what is wrong>``; empty when all is well). Warnings are printed as they are found."""
    problems, seen_exemplars = [], {}
    for key in todo:
        image_path = images[key]
        try:
            shape = cli.read_rgb(image_path).shape[:2]
        except cli.user_errors() as e:
            problems.append(str(e))
            shape = None
        if shape is not None:
            try:
                hole = cli.read_binary(masks[key], shape, "mask", "--mask", args.mask_hole == "white")
                if not hole.any():
                    problems.append(f"{masks[key]}: the mask has no hole pixels (nothing to fill); white "
                                    f"marks the hole (use --mask-hole black for black holes).")
                for w in cli.mask_warnings(hole, args.mask_hole):
                    cli.warn(f"{masks[key]}: {w}")
            except cli.user_errors() as e:
                problems.append(str(e))
            if sketches is not None:
                try:
                    cli.read_binary(sketches[key], shape, "sketch", "--sketch", args.sketch_strokes == "white")
                except cli.user_errors() as e:
                    problems.append(str(e))
        ex = exemplars[key]
        if ex not in seen_exemplars:
            try:
                cli.open_rgb(ex)
                seen_exemplars[ex] = None
            except cli.user_errors() as e:
                seen_exemplars[ex] = str(e)
                problems.append(str(e))
    return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.samples < 1:
        raise cli.CLIError(f"--samples must be at least 1, got {args.samples}.")
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

    # --skip-existing: the images whose whole first set is there are done; the files of a set
    # that exist must come from these settings (sample k is seed + k, so the rest completes it).
    todo, problems = list(images), []
    if args.skip_existing:
        todo = []
        for key, image_path in images.items():
            paths = writer.first_set(key, suffixes)
            meta = _file_meta(args, key, image_path, masks, exemplars, sketches)
            there = [s for s, p in paths.items() if os.path.exists(p)]
            for s in there:
                why = _differs(paths[s], {**meta, "exegan:seed": args.seed + int(s[7:-4])}
                               if s.startswith("_sample") else meta)
                if why:
                    problems.append(f"{paths[s]} exists but {why}; use another --out, or remove it.")
            if len(there) < len(suffixes):
                todo.append(key)
        if len(todo) < len(images):
            print(f"--skip-existing: {len(images) - len(todo)} of {len(images)} image(s) already done in "
                  f"{args.out}")
    problems += precheck(images, masks, exemplars, sketches, args, todo)
    if problems:
        if len(problems) == 1:
            raise cli.CLIError(f"{problems[0].rstrip('.')}; nothing was written.")
        raise cli.CLIError(f"{len(problems)} problems with the inputs, nothing was written:\n  "
                           + "\n  ".join(problems))

    model = cli.load_model(args.ckpt, args.psp, device, sketch=sketches is not None, which=args.which)
    size = model.size

    for key in todo:
        image_path = images[key]
        original = cli.read_rgb(image_path)
        hole = cli.read_binary(masks[key], original.shape[:2], "mask", "--mask", args.mask_hole == "white")
        try:
            prep = cli.prepare(original, hole, size)
        except cli.CLIError as e:
            raise cli.CLIError(f"{masks[key]}: {e}") from None
        exemplar = cli.read_exemplar(exemplars[key], size)
        sketch = strokes = None
        if sketches is not None:
            strokes = cli.read_binary(sketches[key], original.shape[:2], "sketch", "--sketch",
                                      args.sketch_strokes == "white")
            sketch = cli.model_sketch(prep, strokes)
        results = inpaint_one(model, prep, exemplar, samples=args.samples, seed=args.seed,
                              truncation=args.truncation, sketch=sketch)

        paths = writer.first_set(key, suffixes) if args.skip_existing else writer.reserve(key, suffixes)
        meta = _file_meta(args, key, image_path, masks, exemplars, sketches)
        for k, res in enumerate(results):
            if not os.path.exists(paths[f"_sample{k}.png"]):
                writer.save(res, paths[f"_sample{k}.png"], {**meta, "exegan:seed": args.seed + k})
        if not args.no_sheet and not os.path.exists(paths["_sheet.png"]):
            h = max(size, 64)
            tiles = [cli.tile(cli.with_hole(original, hole), h), cli.tile(hole, h, nearest=True)]
            if strokes is not None:
                tiles.append(cli.tile(strokes & hole, h, nearest=True))
            tiles.append(cli.tile(cli.to_uint8(exemplar), h))
            tiles += [cli.tile(r, h) for r in results]
            writer.save(cli.hstack(tiles), paths["_sheet.png"], meta)
        print(f"{image_path} -> {', '.join(paths[s] for s in suffixes)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
