#!/usr/bin/env python
"""Pack an image folder into an LMDB file at one or several resolutions (optional step).

Training and evaluation read image folders directly; an LMDB pack is faster on network disks and
with many DataLoader workers. Any `dataset.path` in a config may point at either.
"""
import argparse
import math
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.errors import UserError, report  # noqa: E402
from datasets.errors import DatasetError  # noqa: E402
from datasets.lmdb_dataset import pack_folder  # noqa: E402

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

    try:
        meta = pack(args)
    except UserError as e:
        return report(e)
    print(f"{args.out}: {meta['length']} images at sizes {meta['sizes']}"
          + (f", {len(meta['skipped'])} unreadable file(s) skipped" if meta["skipped"] else ""))
    return 0


#: Largest --size accepted (a 8192 x 8192 RGB image is 200 MB before encoding).
MAX_SIZE = 8192


def check_args(args) -> None:
    """Every flag checked before anything is read or written (one sentence each)."""
    bad = [s for s in args.size if not 1 <= s <= MAX_SIZE]
    if bad:
        raise DatasetError(f"--size must be a whole number of pixels from 1 to {MAX_SIZE}, got "
                           f"{bad[0]}; e.g. --size 256.")
    if args.workers < 0:
        raise DatasetError(f"--workers must be 0 (decode in this process) or more, got "
                           f"{args.workers}.")
    if not math.isfinite(args.map_size_gb) or args.map_size_gb <= 0 or \
            args.map_size_gb * (1 << 30) >= 2 ** 63:
        raise DatasetError(f"--map-size-gb must be a finite number of GiB above 0, got "
                           f"{args.map_size_gb}; the default is 1024 (the file only grows as "
                           f"needed).")


def _prepare_out(out: str) -> list:
    """Check that ``out`` can hold the pack, creating it if missing; returns what this run
    created (folders, deepest last) so that a failed run can remove it."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise DatasetError(f"Output '{out}' exists and is not a folder; choose another --out.")
    created, head = [], os.path.abspath(out)
    while not os.path.exists(head):
        created.insert(0, head)
        head = os.path.dirname(head)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"Cannot create the output folder '{out}' ({e.strerror or e}); "
                           f"choose a writable --out.") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise DatasetError(f"Output folder '{out}' is not writable; choose a writable --out.")
    return created


def pack(args) -> dict:
    """Pack ``args.root`` into ``args.out``. On a user error, what this run created (the output
    folder, or the pack files in a folder that was empty) is removed: a failed run leaves
    nothing half-made. An interrupted run (Ctrl-C) keeps its pack, which the same command
    resumes."""
    import lmdb  # optional: lmdb is only needed for LMDB packs

    check_args(args)
    existed = os.path.isdir(args.out)
    before = set(os.listdir(args.out)) if existed else set()
    created = _prepare_out(args.out)

    def undo():
        if created:
            shutil.rmtree(created[0], ignore_errors=True)
        elif not before:                      # an empty folder: remove the files made in it
            for name in set(os.listdir(args.out)) - before:
                path = os.path.join(args.out, name)
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
    try:
        return pack_folder(args.root, args.out, args.size, workers=args.workers,
                           compress_level=args.compress_level,
                           map_size=int(args.map_size_gb * (1 << 30)))
    except DatasetError:
        undo()
        raise
    except (OSError, lmdb.Error) as e:
        undo()
        raise DatasetError(f"Cannot write the pack '{args.out}' ({e}); choose a writable --out "
                           f"with free space.") from None

if __name__ == "__main__":
    sys.exit(main())
