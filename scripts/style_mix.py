#!/usr/bin/env python
"""Exemplar style mixing with a trained EXE-GAN (Lu et al., Neurocomputing 2025, style-mixing
results): inpaint one image with two exemplars A and B, the exemplar codes of w slots i..j taken
from B and all other exemplar slots from A (``EXEGAN.style_mix``), over a grid of (i, j).

    python scripts/style_mix.py --ckpt EXE_GAN_model_256.pt --psp psp_ffhq_encode.pt \\
        --image face.png --mask face_mask.png --exemplar-a a.png --exemplar-b b.png --out results/

Slots are generator layer indices inside the exemplar range [start, start + n) (4..13 at 256 px,
4..15 at 512): low slots drive coarse structure (pose, face shape), high ones colour and texture.
Every cell uses the same z and noise (``--seed``), so cells differ only by the exemplar codes.
Images of any size are handled as in scripts/inpaint.py (known pixels are the input's, bit for bit);
``--align`` completes an ordinary photo through its face's aligned crop and aligns both exemplars,
as in scripts/inpaint.py (inference/photo.py). The mixing of the codes is inference/stylemix.py.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inference import runtime  # noqa: E402
from inference.io import mask_warnings, read_binary, read_exemplar, to_uint8, warn  # noqa: E402
from inference.photo import PhotoAligner, transform_json  # noqa: E402
from inference.roundtrip import prepare, with_hole  # noqa: E402
from inference.stylemix import mix  # noqa: E402
from scripts import cli_common as cli  # noqa: E402

EPILOG = """\
outputs (in --out; nothing is overwritten, a taken name gets the next free '-N' suffix):
  <name>_mix_grid.png     top strip: input with the hole | exemplar A | exemplar B | A only | B only;
                          below, row i and column j (i <= j) hold the result with slots i..j from B
                          (cells with j < i are empty: that range is empty, i.e. "A only")
  <name>_mix_<i>-<j>.png  each cell at the input's size (with --save-cells), plus
  <name>_mix_A.png, <name>_mix_B.png
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", required=True, help="image file")
    p.add_argument("--mask", required=True, help="mask file of the image's size (white = hole)")
    p.add_argument("--exemplar-a", required=True, help="exemplar A (the default for every slot)")
    p.add_argument("--exemplar-b", required=True, help="exemplar B (slots i..j)")
    p.add_argument("--slots", type=int, nargs=2, metavar=("FIRST", "LAST"),
                   help="limit the grid to slots FIRST..LAST (default: every exemplar slot)")
    p.add_argument("--save-cells", action="store_true", help="also write every cell as its own PNG")
    cli.add_model_args(p)
    runtime.add_runtime_args(p)
    cli.add_align_args(p, ("--exemplar-a", "--exemplar-b"))
    return p


def _label(img: Image.Image, text: str) -> Image.Image:
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    draw.text((img.width // 2, img.height // 2), text, fill=(0, 0, 0), font=font, anchor="mm")
    return img


def grid_sheet(strip: list, cells: dict, slots: Sequence[int], height: int, gap: int = 4) -> Image.Image:
    """Top strip of tiles, then the (i, j) triangle with row / column labels."""
    n = len(slots)
    cell_w = max(t.width for t in cells.values())
    label_w = max(32, height // 3)
    strip_img = cli.hstack(strip, gap)
    width = max(strip_img.width, label_w + gap + n * (cell_w + gap))
    top = strip_img.height + 2 * gap
    head = max(16, height // 6)
    sheet = Image.new("RGB", (width, top + head + n * (height + gap)), (255, 255, 255))
    sheet.paste(strip_img, (0, 0))
    for c, j in enumerate(slots):
        x = label_w + gap + c * (cell_w + gap)
        sheet.paste(_label(Image.new("RGB", (cell_w, head), (255, 255, 255)), f"j={j}"), (x, top))
    for r, i in enumerate(slots):
        y = top + head + r * (height + gap)
        sheet.paste(_label(Image.new("RGB", (label_w, height), (255, 255, 255)), f"i={i}"), (0, y))
        for c, j in enumerate(slots):
            if j >= i:
                sheet.paste(cells[(i, j)], (label_w + gap + c * (cell_w + gap), y))
    return sheet


def _align_inputs(args, model, device, original, hole):
    """--align: (the photo's AlignedPhoto, exemplar A, exemplar B, the transform record)."""
    aligner = PhotoAligner(model.size, crop_scale=args.crop_scale, face=args.face, feather=args.feather,
                           device=device)
    key = cli.rel_stem(os.path.basename(args.image))
    marks = cli.photo_landmarks({key: args.image}, args.landmarks, "--landmarks")
    faces = cli.PhotoFaces(aligner, marks)
    prep = faces.photo(key, args.image, original, hole, args.landmarks)
    record = prep.record()
    exemplars = []
    for tag, path in (("a", args.exemplar_a), ("b", args.exemplar_b)):
        if args.exemplar_aligned:
            exemplars.append(read_exemplar(path, model.size))
            continue
        faces.exemplar_marks = cli.photo_landmarks({key: path}, args.exemplar_landmarks, "--exemplar-landmarks") or {}
        tensor, record[f"exemplar_{tag}"] = faces.exemplar(key, path, args.exemplar_landmarks)
        exemplars.append(tensor)
    return prep, exemplars[0], exemplars[1], record


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    cli.check_finite(truncation=args.truncation)
    cli.check_align_args(args)
    device = cli.resolve_device(args.device)
    for option, path in (("--image", args.image), ("--mask", args.mask),
                         ("--exemplar-a", args.exemplar_a), ("--exemplar-b", args.exemplar_b)):
        if not os.path.isfile(path):
            raise cli.CLIError(f"{option} {path} is not a file; style mixing takes one image, one mask "
                               f"and two exemplar files.")
    writer = cli.OutputWriter(args.out)
    # Generator passes: the grid's cells and the two exemplar-only results; without --slots the
    # released 256-px model's ten exemplar slots (4..13) are assumed.
    n = args.slots[1] - args.slots[0] + 1 if args.slots else 10
    model = runtime.load_model(args.ckpt, args.psp, device, which=args.which, runtime=args.runtime,
                               cache=args.onnx_cache, work=n * (n + 1) // 2 + 2)
    g = model.generator
    lo, hi = g.exemplar_start, g.exemplar_start + g.n_exemplar - 1
    first, last = args.slots if args.slots else (lo, hi)
    if not lo <= first <= last <= hi:
        raise cli.CLIError(f"--slots {first} {last} must satisfy {lo} <= FIRST <= LAST <= {hi}, the "
                           f"exemplar slots of this {g.size}x{g.size} model.")
    slots = list(range(first, last + 1))

    original = cli.read_rgb(args.image)
    hole = read_binary(args.mask, original.shape[:2], "mask", "--mask", args.mask_hole == "white")
    for w in mask_warnings(hole, args.mask_hole):
        warn(f"{args.mask}: {w}")
    record = None
    if args.align:
        prep, ex_a, ex_b, record = _align_inputs(args, model, device, original, hole)
    else:
        prep = prepare(original, hole, model.size)
        ex_a = read_exemplar(args.exemplar_a, model.size)
        ex_b = read_exemplar(args.exemplar_b, model.size)
    # Each exemplar is encoded once (EXEGAN.style_mix would encode both for every cell).
    kw = dict(seed=args.seed, truncation=args.truncation,
              codes=(model.encode_exemplars(ex_a[None]), model.encode_exemplars(ex_b[None])))

    only_a = mix(model, prep, ex_a, ex_b, lo, lo - 1, **kw)
    only_b = mix(model, prep, ex_a, ex_b, lo, hi, **kw)
    results = {(i, j): mix(model, prep, ex_a, ex_b, i, j, **kw) for i in slots for j in slots if j >= i}

    h = max(model.size, 64)
    strip = [cli.tile(with_hole(original, hole), h), cli.tile(to_uint8(ex_a), h),
             cli.tile(to_uint8(ex_b), h), cli.tile(only_a, h), cli.tile(only_b, h)]
    sheet = grid_sheet(strip, {ij: cli.tile(r, h) for ij, r in results.items()}, slots, h)

    key = cli.rel_stem(os.path.basename(args.image))
    suffixes = ["_mix_grid.png"]
    if args.save_cells:
        suffixes += ["_mix_A.png", "_mix_B.png"] + [f"_mix_{i}-{j}.png" for (i, j) in results]
    if args.save_transform:
        suffixes.append("_transform.json")
    paths = writer.reserve(key, suffixes)
    meta = {"exegan:ckpt": os.path.abspath(args.ckpt), "exegan:image": args.image, "exegan:mask": args.mask,
            "exegan:exemplar_a": args.exemplar_a, "exegan:exemplar_b": args.exemplar_b,
            "exegan:seed": args.seed, "exegan:truncation": args.truncation,
            "exegan:runtime": getattr(model, "runtime", "PyTorch")}
    if record is not None:
        meta["exegan:transform"] = transform_json(record)
        if args.save_transform:
            writer.save_json({**record, "source": args.image}, paths["_transform.json"])
    writer.save(sheet, paths["_mix_grid.png"], {**meta, "exegan:slots": f"{first}..{last}"})
    if args.save_cells:
        writer.save(only_a, paths["_mix_A.png"], {**meta, "exegan:slots_from_b": "none"})
        writer.save(only_b, paths["_mix_B.png"], {**meta, "exegan:slots_from_b": f"{lo}..{hi}"})
        for (i, j), r in results.items():
            writer.save(r, paths[f"_mix_{i}-{j}.png"], {**meta, "exegan:slots_from_b": f"{i}..{j}"})
    print(f"{args.image} -> {paths['_mix_grid.png']} ({len(results)} mixes of slots {first}..{last})")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
