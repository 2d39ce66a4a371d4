#!/usr/bin/env python
"""Pack an image folder into an LMDB file at one or several resolutions (optional step).

Training and evaluation read image folders directly; an LMDB pack is faster on network disks and
with many DataLoader workers. Any `dataset.path` in a config may point at either.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EPILOG = r"""workflow:
  1. Lay out the images as train/test folders (any nesting; png, jpg, jpeg, bmp, webp, tif):
       data/celebahq/train/*.jpg   (28000 images)   data/celebahq/test/*.jpg   (2000 images)
       data/ffhq/train/*.png       (60000 images)   data/ffhq/test/*.png       (10000 images)
  2. Pack each split at the model size(s):
       python scripts/prepare_data.py data/celebahq/train --out data/celebahq/train_lmdb --size 256
       python scripts/prepare_data.py data/ffhq/train --out data/ffhq/train_lmdb \
           --size 256 512 --workers 8
  3. Point the config at the pack (a folder works the same way):
       --set data.train=data/celebahq/train_lmdb

  Each image is converted to RGB, centre-cropped to a square and resized with Lanczos, then
  stored losslessly as PNG under the key '{size}-{index:07d}'; the pack returns exactly the
  pixels the folder dataset gives. The metadata ('length', 'meta': names by index, sizes) is
  written last: an interrupted run leaves a pack that the loader refuses, and running the same
  command again resumes it (images already stored are skipped). Running again with another
  --size adds that size; files added to the folder are appended. Unreadable images are skipped
  and listed. To rebuild from scratch, delete the output folder.
"""


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="image folder to pack (scanned recursively)")
    parser.add_argument("--out", required=True, help="output LMDB folder (created if missing)")
    parser.add_argument("--size", type=int, nargs="+", default=[256],
                        help="one or more output resolutions (default: 256)")
    parser.add_argument("--workers", type=int, default=0,
                        help="decoding processes (default: 0 = in this process)")
    parser.add_argument("--compress-level", type=int, default=6, choices=range(10),
                        metavar="0-9", help="PNG compression level (lossless either way)")
    parser.add_argument("--map-size-gb", type=float, default=1024,
                        help="LMDB address space in GiB (the file only grows as needed)")
    args = parser.parse_args(argv)

    from datasets.errors import DatasetError
    from datasets.lmdb_dataset import pack_folder

    try:
        meta = pack_folder(args.root, args.out, args.size, workers=args.workers,
                           compress_level=args.compress_level,
                           map_size=int(args.map_size_gb * (1 << 30)))
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.out}: {meta['length']} images at sizes {meta['sizes']}"
          + (f", {len(meta['skipped'])} unreadable file(s) skipped" if meta["skipped"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
