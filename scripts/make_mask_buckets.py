#!/usr/bin/env python
"""Group a folder of mask files (e.g. the NVIDIA irregular mask test set) by hole ratio.

Writes a JSON index with each file's hole ratio and bucket (0-10 %, 10-20 %, ..., 50-60 %,
and 60-100 % for anything larger) that the `files` mask generator reads instead of decoding
every file again, and prints the count per bucket.
"""
import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EPILOG = """\
examples:
  # NVIDIA irregular mask test set (white = hole): index it in place
  python scripts/make_mask_buckets.py data/irregular_masks
  # black = hole files, index written elsewhere, copies sorted into data/masks_by_ratio/<bucket>/
  python scripts/make_mask_buckets.py data/my_masks --hole-value 0 \\
      --out data/my_masks.json --copy-into data/masks_by_ratio

  The ratio is measured at each file's own resolution after thresholding at half of the value
  range; buckets are (low, high] intervals (ratio 0 goes to 0-10). Evaluate on one bucket with
  the mask config {kind: files, root: data/irregular_masks, bucket: "10-20"}.
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="folder of mask images (scanned recursively)")
    parser.add_argument("--hole-value", type=int, choices=(0, 1), default=1,
                        help="1 = white is hole (default, NVIDIA convention), 0 = black is hole")
    parser.add_argument("--out", help="index file (default: <root>/mask_ratios.json)")
    parser.add_argument("--copy-into", metavar="DIR",
                        help="also copy the files into DIR/<bucket>/ (e.g. DIR/10-20/x.png)")
    args = parser.parse_args(argv)

    from datasets.errors import MaskError
    from datasets.imaging import scan_images
    from datasets.masks import BUCKET_LABELS, INDEX_FILE, compute_ratios

    try:
        names = scan_images(args.root)
        if not names:
            raise MaskError(f"Mask folder '{args.root}' contains no image files.")
        stats = compute_ratios(args.root, names, args.hole_value, progress=True)
    except (MaskError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = args.out or os.path.join(args.root, INDEX_FILE)
    with open(out, "w") as f:
        json.dump({"hole_value": args.hole_value, "files": stats}, f, indent=0)
    counts = {label: 0 for label in BUCKET_LABELS + ("60-100",)}
    for s in stats.values():
        counts[s["bucket"]] += 1
    if args.copy_into:
        for name, s in stats.items():
            dst = os.path.join(args.copy_into, s["bucket"], name)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(os.path.join(args.root, name), dst)
    print(f"{out}: {len(stats)} masks")
    for label, c in counts.items():
        print(f"  {label:>6} %: {c}")
    if sorted(s["ratio"] for s in stats.values())[len(stats) // 2] > 0.5:
        print(f"warning: most masks are more than 50% hole; if white marks the known region, "
              f"re-run with --hole-value {1 - args.hole_value}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
