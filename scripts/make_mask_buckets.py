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
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.errors import UserError, report  # noqa: E402
from datasets.errors import MaskError  # noqa: E402
from datasets.imaging import scan_images  # noqa: E402
from datasets.mask_files import (BUCKET_LABELS, COPIES_MARKER, INDEX_FILE, compute_ratios,  # noqa: E402
                                 without_bucket_copies)

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

    try:
        out, stats = index_masks(args)
    except UserError as e:
        return report(e)
    counts = {label: 0 for label in BUCKET_LABELS + ("60-100",)}
    for s in stats.values():
        counts[s["bucket"]] += 1
    print(f"{out}: {len(stats)} masks")
    for label, c in counts.items():
        print(f"  {label:>6} %: {c}")
    if sorted(s["ratio"] for s in stats.values())[len(stats) // 2] > 0.5:
        print(f"warning: most masks are more than 50% hole; if white marks the known region, "
              f"re-run with --hole-value {1 - args.hole_value}", file=sys.stderr)
    return 0


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _check_outputs(args, out: str) -> None:
    """--out and --copy-into can be written, before any mask is read (one sentence each)."""
    if os.path.isdir(out):
        raise MaskError(f"--out '{out}' is a folder; give the index file's path (e.g. "
                        f"{os.path.join(out, 'mask_ratios.json')}).")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise MaskError(f"The folder of --out '{out}' does not exist; create it or choose "
                        f"another --out.")
    if not os.access(parent, os.W_OK | os.X_OK) or \
            (os.path.exists(out) and not os.access(out, os.W_OK)):
        raise MaskError(f"--out '{out}' cannot be written; choose a writable --out.")
    if args.copy_into:
        if _inside(args.root, args.copy_into):
            raise MaskError(f"--copy-into '{args.copy_into}' is the mask folder or holds it; "
                            f"give a folder of its own (e.g. {os.path.join(args.root, 'by_ratio')}).")
        if os.path.exists(args.copy_into) and not os.path.isdir(args.copy_into):
            raise MaskError(f"--copy-into '{args.copy_into}' exists and is not a folder; choose "
                            f"another folder.")


def _copy(args, stats) -> None:
    """Copy the files into DIR/<bucket>/, marking DIR (datasets.mask_files.COPIES_MARKER) so that a
    scan of a root that holds DIR skips the copies; on failure the copies of this run are
    removed."""
    made_dirs, made_files = [], []
    try:
        head = os.path.abspath(args.copy_into)
        while not os.path.exists(head):
            made_dirs.insert(0, head)
            head = os.path.dirname(head)
        os.makedirs(args.copy_into, exist_ok=True)
        marker = os.path.join(args.copy_into, COPIES_MARKER)
        if not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write("copies made by scripts/make_mask_buckets.py --copy-into; mask folder "
                        "scans skip this folder\n")
            made_files.append(marker)
        for name, s in stats.items():
            dst = os.path.join(args.copy_into, s["bucket"], name)
            d = os.path.dirname(dst)
            if not os.path.isdir(d):
                top = d
                while not os.path.isdir(os.path.dirname(top)):
                    top = os.path.dirname(top)
                os.makedirs(d)
                made_dirs.append(top)
            if not os.path.exists(dst):
                made_files.append(dst)
            shutil.copy2(os.path.join(args.root, name), dst)
    except OSError as e:
        for path in reversed(made_files):
            if os.path.exists(path):
                os.remove(path)
        for d in reversed(made_dirs):
            shutil.rmtree(d, ignore_errors=True)
        raise MaskError(f"Cannot copy the masks into --copy-into '{args.copy_into}' "
                        f"({e.strerror or e}); choose a writable folder with free space.") from None


def _stage_index(out: str, doc: dict) -> str:
    """The index written whole to a temporary file next to ``out`` (renamed over it last)."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".mask_ratios.", suffix=".tmp",
                                   dir=os.path.dirname(os.path.abspath(out)))
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=0)
        return tmp
    except OSError as e:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        raise MaskError(f"Cannot write the index --out '{out}' ({e.strerror or e}); choose a "
                        f"writable --out.") from None


def index_masks(args):
    """(index path, stats per file): every check first, then the index staged, the copies, and
    the index renamed into place."""

    out = args.out or os.path.join(args.root, INDEX_FILE)
    if not os.path.isdir(args.root):
        raise MaskError(f"Mask folder '{args.root}' "
                        f"{'is not a folder' if os.path.exists(args.root) else 'does not exist'}; "
                        f"give the folder of mask images.")
    _check_outputs(args, out)
    names = without_bucket_copies(args.root, scan_images(args.root))
    if not names:
        raise MaskError(f"Mask folder '{args.root}' contains no image files.")
    try:
        stats = compute_ratios(args.root, names, args.hole_value, progress=True)
    except ValueError as e:                 # MaskError is one; other ValueErrors: one sentence
        raise MaskError(str(e)) from None
    tmp = _stage_index(out, {"hole_value": args.hole_value, "files": stats})
    try:
        if args.copy_into:
            _copy(args, stats)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return out, stats

if __name__ == "__main__":
    sys.exit(main())
