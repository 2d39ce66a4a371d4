#!/usr/bin/env python
"""FFHQ-style face alignment and crop from 5 facial landmarks, so that users' own photos look like
the aligned faces EXE-GAN was trained on (CelebA-HQ / FFHQ crops).

    python scripts/align_faces.py --image photo.jpg --landmarks photo.json --out aligned/
    python scripts/align_faces.py --image photos/ --out aligned/          # with facenet-pytorch installed

The alignment (a similarity transform fitted by least squares from the 5 landmarks to an FFHQ-style
template, the bicubic warp, the landmark order and file formats) is library code, described in
:mod:`inference.align`; the detector is :mod:`inference.detect`. This file is the command line.

**Landmark sources**: ``--landmarks`` (a file for one image; a folder of ``<name>.json`` /
``<name>.txt`` files paired by name; or one JSON file mapping image names to points); else the face
detector, facenet-pytorch's MTCNN, whose weights ship inside the package (``make`` installs it from
requirements-nodeps.txt with ``--no-deps``, because the package pins an old torch).
Nothing is ever downloaded. With neither, the script stops with an error saying so.

File formats: TXT = 10 (or 136) numbers, whitespace / comma separated, read as x y pairs; JSON = a
list of [x, y] pairs (or a flat list), or ``{"landmarks": ...}``, or ``{"<image name>": ..., ...}``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inference.align import PAD_MODES, align, landmarks_from_files, template  # noqa: E402
from inference.detect import make_detector  # noqa: E402
from inference.io import read_rgb  # noqa: E402
from scripts import cli_common as cli  # noqa: E402

#: Largest --size: 4096 x 4096 is four times FFHQ's 1024 (a larger one would allocate gigabytes).
MAX_SIZE = 4096

# ------------------------------------------------------------------------------------------ main
EPILOG = """\
outputs (in --out, keeping the input folder structure; nothing is overwritten: a taken name gets
the next free '-N' suffix):
  <name>.png         the aligned face, --size x --size
  <name>_face<k>.png with --all-faces, the k-th detected face (largest first)
  <name>.json        with --save-transform: the landmarks, the template and the 2x3 matrix
                     mapping photo pixels to aligned pixels (to paste an edit back)
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", required=True, help="image file or folder")
    p.add_argument("--landmarks", help="landmark file / folder / JSON map (else the installed detector)")
    p.add_argument("--size", type=int, default=1024, help="output side in pixels (default 1024, as FFHQ)")
    p.add_argument("--pad", choices=tuple(PAD_MODES), default="reflect",
                   help="fill outside the photo: reflect (default), edge or black")
    p.add_argument("--all-faces", action="store_true", help="with the detector: align every face, not only the largest")
    p.add_argument("--save-transform", action="store_true", help="also write <name>.json with the transform")
    p.add_argument("--device", default="cpu", help="device of the detector (default cpu)")
    p.add_argument("--out", required=True, help="output folder")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not 8 <= args.size <= MAX_SIZE:
        raise cli.CLIError(f"--size must be from 8 to {MAX_SIZE} pixels, got {args.size}.")
    images = cli.collect(args.image, "image", "--image")
    marks = landmarks_from_files(images, args.landmarks) if args.landmarks else None
    detector = make_detector(cli.resolve_device(args.device)) if marks is None else None
    writer = cli.OutputWriter(args.out)

    for key, path in images.items():
        image = read_rgb(path)
        if marks is not None:
            faces = [marks[key]]
        else:
            faces = [face.landmarks for face in detector(image)]
            if not faces:
                print(f"{path}: no face found, skipped", file=sys.stderr)
                continue
            if not args.all_faces:
                faces = faces[:1]
        for k, pts in enumerate(faces):
            name = f"{key}_face{k}" if args.all_faces and marks is None else key
            aligned, matrix = align(image, pts, args.size, args.pad)
            suffixes = [".png"] + ([".json"] if args.save_transform else [])
            paths = writer.reserve(name, suffixes)
            writer.save(aligned, paths[".png"], {"exegan:source": path, "exegan:matrix": json.dumps(matrix.tolist())})
            if args.save_transform:
                record = {"source": path, "size": args.size, "landmarks": pts.tolist(),
                          "template": template(args.size).tolist(), "matrix": matrix.tolist(),
                          "convention": "aligned_xy = matrix @ [x, y, 1]; pixel centres at integers"}
                with open(paths[".json"], "x", encoding="utf-8") as f:
                    json.dump(record, f, indent=1)
            print(f"{path} -> {paths['.png']}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
