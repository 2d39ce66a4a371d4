"""LMDB packs of an image folder (faster random access than many small files on network disks).

Layout of a pack made by :func:`pack_folder` (``scripts/prepare_data.py``):

====================  ==========================================================================
key                   value
====================  ==========================================================================
``{size}-{i:07d}``    PNG bytes of image ``i`` at ``size x size`` — already converted, cropped and
                      resized exactly as :class:`~datasets.folder.ImageFolderDataset` does, and
                      stored losslessly, so the pack returns the folder dataset's pixels exactly
``name:{relpath}``    index ``i`` of that source file (ASCII decimal); lets a re-run skip it
``length``            number of images (ASCII decimal) — written last, with ``meta``
``meta``              JSON: format, version, length, complete sizes, names by index, skipped
                      files, source folder, filter, encoding
====================  ==========================================================================

``length`` and ``meta`` are written only after every image is in, so an interrupted pack is
detected (:class:`LMDBDataset` refuses it) and re-running the same command finishes it: images
already present are skipped without decoding. Re-running with another ``--size`` adds that size.
A pack only ever grows: new files in the folder are appended, nothing is changed or deleted —
to rebuild, delete the output folder.
"""
from __future__ import annotations

import io
import json
import os
import struct
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm
from torch.utils.data import Dataset

from datasets.errors import DatasetError
from datasets.folder import FlipMixin, ImageFolderDataset
from datasets.imaging import (ALPHA_BACKGROUND, IMAGE_EXTENSIONS, check_size, first_lines,
                              load_image, pil_to_tensor, scan_images)

FORMAT = "exegan-lmdb"
VERSION = 1
DEFAULT_MAP_SIZE = 1 << 40  # 1 TiB of address space; the file only grows as data is written


def image_key(size: int, index: int) -> bytes:
    return f"{size}-{index:07d}".encode()


def name_key(name: str) -> bytes:
    return f"name:{name}".encode("utf-8")


def is_lmdb(path: str) -> bool:
    """True if ``path`` is an LMDB environment folder (holds ``data.mdb``)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "data.mdb"))


def _encode_one(job: Tuple[str, str, Tuple[int, ...], Tuple[int, int, int], int]):
    """Worker: decode one file and return PNG bytes per size, or the error sentence."""
    path, name, sizes, background, compress_level = job
    out = {}
    try:
        for size in sizes:
            img = load_image(path, size, background)
            buf = io.BytesIO()
            img.save(buf, format="PNG", compress_level=compress_level)
            out[size] = buf.getvalue()
    except DatasetError as e:
        return name, None, str(e)
    return name, out, None


# py-lmdb allows one handle per environment and process, so readers share one (per process:
# handles must not cross fork/spawn into DataLoader workers).
_READERS: Dict[Tuple[str, int], object] = {}


def reader_env(path: str):
    """The shared read-only handle of the LMDB at ``path`` for this process."""
    import lmdb  # optional: lmdb is only needed for LMDB packs
    key = (os.path.abspath(path), os.getpid())
    env = _READERS.get(key)
    if env is None:
        # A handle of another pid was inherited through fork (DataLoader workers). py-lmdb
        # still counts it as open here, so close this process's copy before opening anew
        # (readonly + lock=False: closing the copy does not disturb the parent).
        for other in [k for k in _READERS if k[0] == key[0]]:
            _READERS.pop(other).close()
        env = _READERS[key] = lmdb.open(key[0], readonly=True, lock=False, readahead=False,
                                        meminit=False)
    return env


def close_reader(path: str) -> None:
    env = _READERS.pop((os.path.abspath(path), os.getpid()), None)
    if env is not None:
        env.close()


# --------------------------------------------------------------------------------- validation
# LMDB maps data.mdb into memory and reads pages through the map: a page past the end of a
# truncated file is a SIGBUS that kills the process without a word. So the file's size is checked
# against the environment's own record (its meta pages, read with plain file reads) before
# py-lmdb maps anything; flipped bytes then surface as lmdb errors or undecodable images, which
# the opener turns into one sentence too.
_META_MAGIC = 0xBEEFC0DE
_META_AT = 16                   # the page header before MDB_meta
_META = struct.Struct("<IIQQ")  # magic, version, address, map size
_DB = struct.Struct("<IHHQQQQQ")  # pad (the page size, in the free DB), flags, depth, 4 counts, root
_TAIL = struct.Struct("<QQ")    # last page used, transaction id
SAMPLED_DECODES = 5             # images decoded when a pack is opened (first, last, middle, 2 more)


def _parse_meta(page: bytes) -> Optional[Tuple[int, int, int]]:
    """(page size, last page, txn id) of one meta page, None when it is not one."""
    if len(page) < _META_AT + _META.size + 2 * _DB.size + _TAIL.size:
        return None
    magic, version, _, _ = _META.unpack_from(page, _META_AT)
    if magic != _META_MAGIC or version != 1:
        return None
    psize = _DB.unpack_from(page, _META_AT + _META.size)[0]
    last, txn = _TAIL.unpack_from(page, _META_AT + _META.size + 2 * _DB.size)
    return psize, last, txn


def pack_damage(path: str) -> Optional[str]:
    """Why ``path/data.mdb`` cannot be mapped safely (empty, not LMDB, shorter than its own
    record of the pages in use), as a short clause; None when its size and header agree."""
    f = os.path.join(path, "data.mdb")
    try:
        size = os.path.getsize(f)
        with open(f, "rb") as fh:
            head = fh.read(256)
            first = _parse_meta(head)
            second = None
            if first is not None and 512 <= first[0] <= 65536 and first[0] & (first[0] - 1) == 0:
                fh.seek(first[0])
                second = _parse_meta(fh.read(256))
    except OSError as e:
        return f"data.mdb cannot be read: {e.strerror or type(e).__name__}"
    if size == 0:
        return "data.mdb is empty"
    if first is None or not (512 <= first[0] <= 65536 and first[0] & (first[0] - 1) == 0):
        return "data.mdb does not start with an LMDB header"
    psize = first[0]
    # LMDB uses the meta page of the later transaction; a damaged second one counts as absent.
    last = max((m for m in (first, second) if m is not None and m[0] == psize), key=lambda m: m[2])[1]
    needed = (last + 1) * psize
    if size < needed:
        return (f"data.mdb is {size} bytes but its header records {needed} bytes of pages in use; "
                f"the file was cut short")
    return None


def _damaged(path: str, what: str, source: Optional[str] = None, size: Optional[int] = None) -> DatasetError:
    src = source or "<image folder>"
    sizes = f" --size {size}" if size else ""
    return DatasetError(f"LMDB pack '{path}' is damaged ({what}); rebuild it: delete the folder and "
                        f"run python scripts/prepare_data.py {src} --out {path}{sizes}.")


def read_meta(env) -> Optional[dict]:
    with env.begin() as txn:
        raw = txn.get(b"meta")
    return None if raw is None else json.loads(raw.decode("utf-8"))


def pack_folder(root: str, out: str, sizes: Sequence[int], *, workers: int = 0,
                commit_every: int = 256, compress_level: int = 6,
                background: Sequence[int] = ALPHA_BACKGROUND,
                extensions: Sequence[str] = IMAGE_EXTENSIONS,
                map_size: int = DEFAULT_MAP_SIZE, progress: bool = True,
                limit: Optional[int] = None) -> dict:
    """Pack the images under ``root`` into the LMDB folder ``out`` at each of ``sizes``.

    Safe to re-run (resumes; see the module docstring). Unreadable files are skipped and listed
    in one warning and in ``meta['skipped']``. ``limit`` stops after that many newly written
    images without writing the metadata (used to test resuming). Returns the metadata dict
    (or ``None`` when stopped by ``limit``).
    """
    import lmdb  # optional: lmdb is only needed for LMDB packs

    sizes = sorted({check_size(s) for s in sizes})
    if not sizes:
        raise ValueError("give at least one size")
    names = scan_images(root, extensions)
    if not names:
        raise DatasetError(f"Image folder '{root}' contains no images; nothing to pack.")
    if os.path.exists(out) and not os.path.isdir(out):
        raise DatasetError(f"Output '{out}' exists and is not a folder; choose another --out.")
    os.makedirs(out, exist_ok=True)
    close_reader(out)  # a reader handle in this process would block the writer
    env = lmdb.open(out, map_size=map_size, readahead=False, meminit=False)
    try:
        old_meta = read_meta(env)
        if old_meta is not None and old_meta.get("format") != FORMAT:
            raise DatasetError(f"LMDB '{out}' was not written by prepare_data.py; "
                               "choose an empty output folder.")
        index_of = _packed_names(env)
        jobs = _pack_jobs(env, root, names, sizes, tuple(background), compress_level, index_of)
        skipped = _write_images(env, root, jobs, index_of, workers=workers,
                                commit_every=commit_every, limit=limit, progress=progress)
        if skipped is None:
            return None
        if skipped:
            warnings.warn(f"Skipped {len(skipped)} unreadable image(s) in '{root}': "
                          f"{first_lines(skipped)}", stacklevel=2)
        return _write_meta(env, root, out, sizes, index_of, skipped, old_meta, background)
    finally:
        env.close()


def _packed_names(env) -> Dict[str, int]:
    """What the pack already holds: source name -> index."""
    index_of: Dict[str, int] = {}
    with env.begin() as txn:
        cur = txn.cursor()
        if cur.set_range(b"name:"):
            for k, v in cur:
                if not k.startswith(b"name:"):
                    break
                index_of[k[5:].decode("utf-8")] = int(v)
    return index_of


def _pack_jobs(env, root: str, names: Sequence[str], sizes: Sequence[int], background: tuple,
               compress_level: int, index_of: Dict[str, int]) -> list:
    """One :func:`_encode_one` job per source file that lacks one of ``sizes`` in the pack."""
    jobs = []
    with env.begin() as txn:
        for name in names:
            idx = index_of.get(name)
            todo = tuple(s for s in sizes
                         if idx is None or txn.get(image_key(s, idx)) is None)
            if todo:
                jobs.append((os.path.join(root, name), name, todo, background, compress_level))
    return jobs


def _write_images(env, root: str, jobs: list, index_of: Dict[str, int], *, workers: int,
                  commit_every: int, limit: Optional[int], progress: bool) -> Optional[List[str]]:
    """Encode the jobs (in ``workers`` processes when > 1) and write them, committing every
    ``commit_every`` images; new names get the next indices in ``index_of``. Returns the
    unreadable files, or None when stopped by ``limit``."""
    next_index = max(index_of.values()) + 1 if index_of else 0
    skipped: List[str] = []
    written = 0
    bar = tqdm(total=len(jobs), desc=f"packing {os.path.basename(os.path.normpath(root))}",
               unit="img", disable=not progress or not jobs)
    pool = ProcessPoolExecutor(workers) if workers and workers > 1 else None
    results: Iterable = (pool.map(_encode_one, jobs, chunksize=8) if pool
                         else map(_encode_one, jobs))
    txn = env.begin(write=True)
    try:
        for name, encoded, error in results:
            bar.update(1)
            if error is not None:
                skipped.append(os.path.join(root, name))
                continue
            idx = index_of.get(name)
            if idx is None:
                idx = index_of[name] = next_index
                next_index += 1
            for size, data in encoded.items():
                txn.put(image_key(size, idx), data)
            txn.put(name_key(name), str(idx).encode())
            written += 1
            if written % commit_every == 0:
                txn.commit()
                txn = env.begin(write=True)
            if limit is not None and written >= limit:
                txn.commit()
                txn = None
                return None
        txn.commit()
        txn = None
    finally:
        if txn is not None:
            txn.abort()
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return skipped


def _write_meta(env, root: str, out: str, sizes: Sequence[int], index_of: Dict[str, int],
                skipped: List[str], old_meta: Optional[dict], background: Sequence[int]) -> dict:
    """Check that every packed image has each of ``sizes`` and write the pack's metadata."""
    n = max(index_of.values()) + 1 if index_of else 0
    if n == 0:
        raise DatasetError(f"No image in '{root}' could be decoded; nothing was packed.")
    by_index = [None] * n
    for name, idx in index_of.items():
        by_index[idx] = name
    candidate = sorted(set(sizes) | set(old_meta["sizes"] if old_meta else []))
    complete = []
    with env.begin() as txn:
        for s in candidate:
            missing = [i for i in range(n) if txn.get(image_key(s, i)) is None]
            if not missing:
                complete.append(s)
            elif s in sizes:
                raise DatasetError(
                    f"LMDB '{out}' lacks size {s} for {len(missing)} packed image(s) whose "
                    f"source files are gone (first: '{by_index[missing[0]]}'); "
                    "delete the output folder and pack again.")
    meta = {
        "format": FORMAT, "version": VERSION, "length": n, "sizes": complete,
        "names": by_index,
        "skipped": sorted(set(skipped) | set(old_meta.get("skipped", []) if old_meta else [])
                          - {os.path.join(root, nm) for nm in index_of}),
        "source": os.path.abspath(root), "filter": "lanczos", "encoding": "png",
        "background": list(background),
    }
    with env.begin(write=True) as txn:
        txn.put(b"meta", json.dumps(meta).encode("utf-8"))
        txn.put(b"length", str(n).encode())
    env.sync()
    return meta


class LMDBDataset(FlipMixin, Dataset):
    """Images of a pack made by :func:`pack_folder`, as tensors ``[3, size, size]`` in [-1, 1].

    Returns exactly the pixels :class:`~datasets.folder.ImageFolderDataset` gives for the same
    source folder. ``names[i]`` is the source file of item ``i`` (relative), ``paths[i]`` its
    path in the original folder. The LMDB handle is opened lazily in each process (and shared
    by datasets on the same file), so the dataset works inside DataLoader workers.
    """

    def __init__(self, path: str, size: int, hflip: bool = False, *, seed: Optional[int] = None):
        self.path = os.path.abspath(path)
        self.size = check_size(size)
        self.hflip = bool(hflip)
        self.seed = seed
        if not is_lmdb(path):
            raise DatasetError(f"'{path}' is not an LMDB folder (no data.mdb); "
                               "create it with scripts/prepare_data.py.")
        why = pack_damage(path)
        if why is not None:
            raise _damaged(self.path, why, size=self.size)
        import lmdb  # optional: lmdb is only needed for LMDB packs
        try:
            meta = read_meta(reader_env(path))
        except (lmdb.Error, UnicodeDecodeError, ValueError) as e:
            close_reader(path)
            raise _damaged(self.path, f"its metadata cannot be read: {_first(e)}",
                           size=self.size) from None
        if meta is None:
            raise DatasetError(f"LMDB '{path}' is incomplete (packing was interrupted or it was "
                               "not made by prepare_data.py); re-run scripts/prepare_data.py "
                               "with the same arguments to finish it.")
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise DatasetError(f"LMDB '{path}' has format {meta.get('format')!r} version "
                               f"{meta.get('version')!r}, expected {FORMAT!r} {VERSION}; "
                               "re-pack it with scripts/prepare_data.py.")
        if self.size not in meta["sizes"]:
            raise DatasetError(f"LMDB '{path}' holds sizes {meta['sizes']}, not {self.size}; "
                               f"add it with scripts/prepare_data.py --size {self.size}.")
        self.meta = meta
        self.names: List[str] = list(meta["names"])
        self.paths: List[str] = [os.path.join(meta["source"], n) for n in self.names]
        self._validate()

    def _validate(self) -> None:
        """Every image key of this size present (the index), and a few images decoded."""
        import lmdb  # optional: lmdb is only needed for LMDB packs
        n, source = len(self.names), self.meta.get("source")
        if int(self.meta.get("length", n)) != n:
            raise _damaged(self.path, f"its metadata lists {n} names for {self.meta.get('length')} "
                                      f"images", source, self.size)
        prefix = f"{self.size}-".encode()
        found = 0
        try:
            with reader_env(self.path).begin() as txn:
                cur = txn.cursor()
                if cur.set_range(prefix):
                    for key in cur.iternext(keys=True, values=False):
                        if not key.startswith(prefix):
                            break
                        found += 1
        except lmdb.Error as e:
            raise _damaged(self.path, f"its key index cannot be read: {_first(e)}", source,
                           self.size) from None
        if found != n:
            raise _damaged(self.path, f"its index holds {found} images of size {self.size}, its "
                                      f"metadata {n}", source, self.size)
        picks = sorted({0, n - 1, n // 2} | set(np.random.default_rng(n).integers(0, n, 2).tolist()))
        for i in picks[:SAMPLED_DECODES]:
            self.load(i)

    def _decode_error(self, index: int, e: BaseException) -> DatasetError:
        name = self.names[index] if 0 <= index < len(self.names) else index
        return _damaged(self.path, f"image {index} ('{name}') cannot be decoded: {_first(e)}",
                        self.meta.get("source"), self.size)

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> torch.Tensor:
        import lmdb  # optional: lmdb is only needed for LMDB packs
        try:
            with reader_env(self.path).begin() as txn:
                data = txn.get(image_key(self.size, index))
        except lmdb.Error as e:
            raise self._decode_error(index, e) from None
        if data is None:
            raise DatasetError(f"LMDB '{self.path}' lacks key {image_key(self.size, index)!r}; "
                               "re-run scripts/prepare_data.py to repair it.")
        try:
            with Image.open(io.BytesIO(data)) as img:
                img = img.convert("RGB")
        except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for damaged image data
            raise self._decode_error(index, e) from None
        if img.size != (self.size, self.size):
            raise self._decode_error(index, ValueError(f"it is {img.size[0]}x{img.size[1]}"))
        return pil_to_tensor(img)

    def __getitem__(self, index: int) -> torch.Tensor:
        n = len(self.names)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        return self.maybe_flip(self.load(index), index)

    def __repr__(self) -> str:
        return f"LMDBDataset(path='{self.path}', size={self.size}, n={len(self)})"


def _first(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0][:160] if text else type(e).__name__).rstrip(".")


def open_dataset(path: str, size: int, hflip: bool = False, *, seed: Optional[int] = None,
                 **folder_kwargs) -> Dataset:
    """An :class:`LMDBDataset` if ``path`` is an LMDB folder, else an :class:`ImageFolderDataset`.

    ``folder_kwargs`` (``on_error``, ``validate``, ...) apply to image folders only.
    """
    if is_lmdb(path):
        return LMDBDataset(path, size, hflip, seed=seed)
    return ImageFolderDataset(path, size, hflip, seed=seed, **folder_kwargs)
