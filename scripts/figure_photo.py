#!/usr/bin/env python
"""The before/after figure of docs/applications.md "Your own photos": scikit-image's astronaut (a
public-domain NASA portrait) with a hole painted over nose and mouth, completed through the photo
pipeline of ``--align`` (inference/photo.py), every step shown:

    photo + hole, face box, landmarks | aligned crop + its hole | completed crop | result | zoom before | zoom after

    python scripts/figure_photo.py --ckpt runs/<demo run>/checkpoints/export.pt \\
        --psp runs/<demo run>/checkpoints/standin_psp.pt --out docs/figures/photo_round_trip.png
    python scripts/figure_photo.py --demo --out docs/figures/photo_round_trip.png   # the newest `make demo` run

The exemplar is the astronaut mirrored (another photo: detected and aligned like the photo).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from skimage import data  # noqa: E402

from inference.io import to_uint8  # noqa: E402
from inference.photo import PhotoAligner  # noqa: E402
from inference.roundtrip import with_hole  # noqa: E402
from inference import runtime  # noqa: E402
from scripts import cli_common as cli  # noqa: E402

HEIGHT = 256


def astronaut_and_hole():
    photo = data.astronaut()
    hole = np.zeros(photo.shape[:2], bool)
    yy, xx = np.ogrid[0:512, 0:512]
    hole[((xx - 226) / 26.0) ** 2 + ((yy - 133) / 19.0) ** 2 < 1] = True     # nose and mouth
    return photo, hole


def figure(photo, hole, prep, completed, result, exemplar) -> Image.Image:
    marked = Image.fromarray(with_hole(photo, hole))
    draw = ImageDraw.Draw(marked)
    x0, y0, x1, y1 = prep.face.box
    draw.rectangle([x0, y0, x1, y1], outline=(255, 212, 0), width=3)
    for x, y in prep.face.landmarks:
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(46, 204, 113))
    zx0, zy0, zx1, zy1 = (int(v) for v in (x0 - 20, y0 - 20, x1 + 20, y1 + 20))
    tiles = [cli.tile(np.asarray(marked), HEIGHT), cli.tile(with_hole(prep.crop, prep.crop_hole), HEIGHT),
             cli.tile(exemplar, HEIGHT), cli.tile(completed, HEIGHT), cli.tile(result, HEIGHT),
             cli.tile(with_hole(photo, hole)[zy0:zy1, zx0:zx1], HEIGHT),
             cli.tile(result[zy0:zy1, zx0:zx1], HEIGHT)]
    return cli.hstack(tiles)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt")
    p.add_argument("--psp")
    p.add_argument("--demo", nargs="?", const="runs", metavar="RUNS", help="the newest `make demo` run under RUNS")
    p.add_argument("--feather", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.demo:
        args.ckpt, args.psp = cli.demo_files(args.demo)
    if not (args.ckpt and args.psp):
        raise cli.CLIError("give --ckpt and --psp, or --demo.")
    model = runtime.load_model(args.ckpt, args.psp, cli.resolve_device("cpu"), runtime="torch")
    photo, hole = astronaut_and_hole()
    aligner = PhotoAligner(model.size, feather=args.feather)
    prep = aligner.photo(photo, hole, "astronaut", aligner.faces(photo))
    mirrored = np.ascontiguousarray(photo[:, ::-1])
    ex, _ = aligner.exemplar(mirrored, "astronaut (mirrored)", aligner.faces(mirrored))
    codes = model.encode_exemplars(ex[None])
    out = model.complete(prep.image[None], prep.mask[None], codes, seed=args.seed)[0]
    result = prep.paste(out)
    assert np.array_equal(result[~hole], photo[~hole])
    sheet = figure(photo, hole, prep, to_uint8(out), result, to_uint8(ex))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"{args.out}: {sheet.width}x{sheet.height} ({args.ckpt}, {model.size}x{model.size} model)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
