"""test.py's settings and what its two modes share: :class:`TestSettings` (every input, resolved
from the command line and the YAML config by ``evaluation.cli``), the results directory, the
device, the protocol record (weights hashes, versions, git state), the early checks of the files
and the warnings about small or mis-sized test sets.

The modes: :func:`metrics.testrun.run_test` (run a checkpoint under the protocol) and
:func:`metrics.scoring.score_folders` (``--pred``: score completions that already exist).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import platform
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from common.rundir import create_run_dir   # exclusive mkdir, numbered from the highest
from datasets.errors import ProtocolError
from datasets.pairing import parse_pair_by
from datasets.protocols import MaskProtocol

from .eval_loop import names_of, require_file
from .evaluator import ALL_METRICS, DEFAULT_METRICS
from .fid import file_sha256

log = logging.getLogger("exegan.test")


@dataclass
class TestSettings:
    """Every input of one ``test.py`` run (resolved from the CLI and the YAML config)."""
    __test__ = False   # not a pytest test class

    ckpt: str
    data: Optional[str]
    psp: Optional[str] = None
    inception: Optional[str] = None
    lpips_vgg: Optional[str] = None
    allow_random_pretrained: bool = False
    masks: str = "center"
    mask_dir: Optional[str] = None
    hole_value: int = 1
    buckets: Optional[List[str]] = None
    mask_seed: Optional[int] = None
    exemplars: str = "reverse"
    exemplar_dir: Optional[str] = None
    repeats: int = 1
    seed: int = 0
    n_images: Optional[int] = None
    n_images_at_most: bool = False      # n_images from a config: capped at the test set size
    batch: int = 16
    device: str = "cpu"
    truncation: float = 1.0
    metrics: List[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    fid_resize: str = "pytorch_fid"
    which: str = "g_ema"
    out: Optional[str] = None
    out_root: str = os.path.join("runs", "eval")
    save_images: bool = False
    progress: bool = True
    compile: bool = False               # torch.compile G and the style encoder (EXEGAN.compile)
    standin_seed: Optional[int] = None  # seed of the random stand-ins (default: the run's)
    config: Optional[str] = None
    command: Optional[List[str]] = None
    # Where each file setting came from (CLI flag or config key), for error messages.
    sources: Dict[str, str] = field(default_factory=dict)
    # Name pairing across folders (datasets.pairing): ["mask={name}_mask", ...].
    pair_by: List[str] = field(default_factory=list)
    # Scoring existing completions (test.py --pred): one folder per repeat; ``data`` is the
    # ground truth, ``mask_dir`` the optional masks (white = hole, or per ``hole_value``).
    pred: Optional[List[str]] = None
    # With ``pred``: score completions of only part of the ground truth on purpose (recorded);
    # otherwise a ground-truth image without a completion is an error.
    allow_subset: bool = False


def file_record(path: Optional[str]) -> Optional[dict]:
    """Path, size and SHA-256 of a weights file for the record (None when not given)."""
    if not path:
        return None
    return {"path": os.path.abspath(path), "bytes": os.path.getsize(path),
            "sha256": file_sha256(path)}


def _versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__}
    for pkg in ("torchvision", "scipy", "scikit-learn", "lpips", "pillow", "scikit-image"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
        out["gpu"] = torch.cuda.get_device_name()
    return out


def _git() -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return {"commit": None}
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10)
        return {"commit": commit.stdout.strip(),
                "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


def run_record(s: "TestSettings", *, need_inception: bool, random_used, warnings, device,
               started, finished, files: Optional[dict] = None, **extra) -> dict:
    """The part of results.json's protocol record that every test.py run writes: the weight
    files (``files`` first, then Inception and LPIPS when used), stand-ins, warnings, ``extra``
    fields, device, versions, code, command and times."""
    return {
        "files": {**(files or {}),
                  "inception": file_record(s.inception) if need_inception else None,
                  "lpips_vgg16": file_record(s.lpips_vgg) if "lpips" in s.metrics else None},
        "random_standins": random_used,
        "warnings": warnings,
        **extra,
        "device": str(device),
        "versions": _versions(),
        "code": _git(),
        "config": os.path.abspath(s.config) if s.config else None,
        "command": s.command,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "seconds": round((finished - started).total_seconds(), 1),
    }


def check_out_dir(out: Optional[str]) -> None:
    """Refuse an --out that is a file or a folder with something in it (nothing is overwritten)."""
    if out is not None and os.path.exists(out) and not os.path.isdir(out):
        raise ProtocolError(f"Results directory '{out}' is a file, not a folder; choose a new "
                            f"--out (results are never overwritten).")
    if out is not None and os.path.exists(out) and os.listdir(out):
        raise ProtocolError(f"Results directory '{out}' already exists and is not empty; "
                            f"choose a new --out (results are never overwritten).")


def make_out_dir(s: TestSettings, name: str) -> str:
    """The results directory: ``--out`` (created, must be empty) or a new numbered one."""
    if s.out is None:
        return create_run_dir(s.out_root, name)
    check_out_dir(s.out)
    try:
        os.makedirs(s.out, exist_ok=True)
    except OSError as e:
        raise ProtocolError(f"Cannot create the results directory '{s.out}' "
                            f"({e.strerror or e}); choose a writable --out.") from None
    check_out_dir(s.out)
    return s.out


def resolve_device(name: str) -> torch.device:
    """``--device`` as a torch.device; one sentence for a bad name or a missing GPU."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ProtocolError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ProtocolError(f"--device {name} asked for CUDA but no GPU is available; use "
                            f"--device cpu.")
    return dev


def banner(text: str) -> None:
    """Log ``text`` between two rows of ``!`` (the stand-in warnings)."""
    bar = "!" * 78
    log.warning(bar)
    for line in text.split("\n"):
        log.warning(line)
    log.warning(bar)


#: Below this many images FID and U-IDS / P-IDS get a warning: under the 2048 Inception feature
#: dimensions the covariance is singular and a linear SVM separates the sets almost trivially.
#: The threshold is the paper's smallest evaluation set (the 2000 CelebA-HQ test images), so the
#: paper's own protocol does not warn; numbers are comparable only between equal image counts.
MIN_IMAGES_FID_IDS = 2000


def warn_small_sets(n: int, metrics: Sequence[str]) -> Optional[str]:
    """Log (and return) a warning when FID / IDS are computed from too few images."""
    which = [label for m, label in (("fid", "FID"), ("ids", "U-IDS / P-IDS"))
             if m in metrics]
    if not which or n >= MIN_IMAGES_FID_IDS:
        return None
    msg = (f"{' and '.join(which)} from {n} images: fewer than {MIN_IMAGES_FID_IDS} (the "
           f"Inception features have 2048 dimensions) give strongly biased FIDs and trivially "
           f"separable U-IDS / P-IDS; such numbers are not comparable with the paper's or with "
           f"other image counts")
    log.warning("%s.", msg)
    return msg


def warn_resolution(dataset, size: int, where: str, k: int = 8) -> Optional[str]:
    """Log (and return) a warning when the first ``k`` images of ``dataset`` (image files whose
    headers can be read) are not ``size`` x ``size``: they are resized to the model's size."""
    paths = [p for p in list(getattr(dataset, "paths", None) or [])[:k] if os.path.isfile(p)]
    sizes = []
    for path in paths:
        try:
            with Image.open(path) as im:
                sizes.append(im.size)
        except OSError:
            continue
    other = [(w, h) for w, h in sizes if (w, h) != (size, size)]
    if not other:
        return None
    w, h = other[0]
    if min(w, h) < size:
        how = (f"upsampled x{size / min(w, h):.3g} (centre crop + Lanczos) before inpainting, so "
               f"the numbers do not describe {size}-px results; evaluate a checkpoint on test "
               f"images of its own resolution")
    else:
        how = (f"centre-cropped and resized to the checkpoint's {size}x{size} (Lanczos, as "
               f"training reads them); for the paper's protocol use the {size}-px test split")
    msg = f"Images in {where} are {w}x{h} but the evaluation size is {size}x{size}: they are {how}"
    log.warning("%s.", msg)
    return msg


#: Roles of test.py's name pairing (``--pair-by ROLE=PATTERN``); ``gt`` is another name of
#: ``image`` (the test images, i.e. the ground truth).
TEST_ROLES = ("image", "mask", "exemplar", "pred")
_ROLE_ALIASES = {"gt": "image"}


def pair_patterns(s: TestSettings) -> dict:
    """``--pair-by`` parsed: the name pattern of every role (image, mask, exemplar, pred)."""
    try:
        return parse_pair_by(s.pair_by, TEST_ROLES, _ROLE_ALIASES)
    except ValueError as e:
        raise ProtocolError(str(e)) from None


def check_metric_files(s: TestSettings) -> bool:
    """Check the metric networks' files before anything runs; True when Inception is needed."""
    src = s.sources
    bad = [m for m in s.metrics if m not in ALL_METRICS]
    if bad:
        raise ProtocolError(f"Unknown metric(s) {bad}; choose from {', '.join(ALL_METRICS)}.")
    need_inc = "fid" in s.metrics or "ids" in s.metrics
    if need_inc and (s.inception is not None or not s.allow_random_pretrained):
        require_file(s.inception, "FID Inception weights file", src.get("inception", "--inception"),
                 "it is pt_inception-2015-12-05-6726825d.pth, see checkpoints/README.md")
    if "lpips" in s.metrics and (s.lpips_vgg is not None or not s.allow_random_pretrained):
        require_file(s.lpips_vgg, "LPIPS VGG16 weights file", src.get("lpips_vgg", "--lpips-vgg"),
                 "it is torchvision's vgg16-397923af.pth, see checkpoints/README.md")
    return need_inc


def precheck(mask_spec: MaskProtocol, pairing, dataset, n: Optional[int], size: int) -> None:
    """The protocol's masks and exemplars against the test images, before anything is written."""
    total = len(dataset)
    if n is not None and n > total:
        raise ProtocolError(f"Asked for {n} test images but the test set has {total}; lower "
                            f"--n-images or use a larger test set.")
    n = total if n is None else n
    names = names_of(dataset, n)
    paths = getattr(dataset, "paths", None)
    mask_spec.check(names, size, list(paths)[:n] if paths is not None else None)
    if pairing.mode == "folder":
        pairing.folder_for(size).check(names)


def settings_dict(s: TestSettings) -> dict:
    """The settings as a plain dict (for logs and --dry-run)."""
    return dataclasses.asdict(s)
