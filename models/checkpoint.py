"""Checkpoint reading and writing (docs/models.md, Checkpoints): ours and the authors' formats, never
unrestricted unpickling.

Every file is read with ``torch.load(weights_only=True)``. The only pickled class allowed beyond
PyTorch's own safe set is ``argparse.Namespace``, which the authors' training checkpoints carry
under ``args``; a file holding any other pickled global is refused with :class:`UnsafeCheckpointError`
before anything in it is run.

Formats read by :func:`load_generator` / :func:`load_discriminator`:

* **ours** (written by :func:`make_checkpoint` + :func:`save_checkpoint`): a plain dict
  ``{format, g, d, g_ema, g_optim, d_optim, step, rng, config, best_metric, arch}`` with state dicts,
  plain Python values and tensors only; ``arch`` holds the constructor arguments of G and D;
* **the authors' training checkpoints**: ``{g, d, g_ema, g_optim, d_optim, args}`` with ``args`` an
  ``argparse.Namespace`` (size, latent, n_mlp, channel_multiplier, ...);
* **bare generator releases**: the ``g_ema`` state dict itself.

When a file records no usable architecture it is inferred from the state dict
(:mod:`models.checkpoint_arch`): the resolution from the number of ``convs`` (two per resolution
above 4) or of noise buffers, style_dim and n_mlp from the mapping network, channel multiplier and
cap from the layer widths (64x64 layers have 256 * cm channels), and the exemplar slots from the
resolution (docs/architecture.md, Conventions). Loading is strict.
"""
from __future__ import annotations

import argparse
import collections
import os
import pickle
import random
import re
import tempfile
import zipfile
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from common.diskfull import DiskFullError, is_disk_full
from common.errors import UserError
from common.interrupts import uninterruptible
from common.torchfile import not_a_torch_file
from models.checkpoint_arch import infer_discriminator_arch, infer_generator_arch
from models.discriminator import Discriminator
from models.generator import Generator

FORMAT = "exegan-checkpoint-v1"

# Pickled globals we accept on top of PyTorch's weights-only set, and why.
ALLOWED_GLOBALS: dict[str, tuple[type, str]] = {
    "argparse.Namespace": (argparse.Namespace,
                           "the authors' training checkpoints store their command-line args in one"),
}


class CheckpointError(UserError):
    """A checkpoint file cannot be used; the message says which file and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The file pickles a global that is not on the allow-list; it was not unpickled."""


class CheckpointMismatchError(CheckpointError):
    """The file's networks do not have the expected architecture."""


# ---------------------------------------------------------------------------------------- reading
def _refuse(path: str, names: list[str]) -> UnsafeCheckpointError:
    allowed = ", ".join(ALLOWED_GLOBALS)
    return UnsafeCheckpointError(
        f"Refusing to load {path}: it contains the pickled global {', '.join(repr(n) for n in names)}, "
        f"which is not on the allow-list ({allowed}) because unpickling arbitrary objects can run "
        f"arbitrary code; re-save the file with only tensors, numbers, strings and plain containers.")


def safe_load(path: str | os.PathLike, map_location: Any = "cpu", *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with ``argparse.Namespace`` allow-listed.

    Raises :class:`UnsafeCheckpointError` (naming the offending global) for any other pickled
    global, and :class:`CheckpointError` for a missing or unreadable file. ``mmap``: the tensors
    are mapped from the file instead of read into memory (pages are read when first used; a
    file in the legacy, non-zip format is read as usual).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint file {path} does not exist; check the path.")
    why = not_a_torch_file(path)
    if why is not None:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({why}); point at the .pt file "
                              f"that torch.save wrote (a failed download often leaves a text or "
                              f"HTML page under the checkpoint's name).")
    # Fail early with the complete list of offending globals (zip-format files only; older
    # files are still guarded by the weights-only unpickler below).
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:
        found = None
    if found:
        bad = [g for g in found if g not in ALLOWED_GLOBALS]
        if bad:
            raise _refuse(path, bad)
    try:
        with torch.serialization.safe_globals([cls for cls, _ in ALLOWED_GLOBALS.values()]):
            if mmap and zipfile.is_zipfile(path):
                return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"GLOBAL ([\w.]+)", str(e))
        if m:
            raise _refuse(path, [m.group(1)]) from None
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(e))
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (weights-only unpickling "
                              f"failed: {detail.group(1) if detail else 'unsupported content'}).") from None
    except Exception as e:  # a damaged archive or pickle: IndexError, KeyError ... as well
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({first}).") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


def _arch_from_file(ckpt: Mapping, net: str) -> dict:
    """Architecture recorded in the file: our ``arch`` entry or the authors' ``args`` Namespace."""
    if isinstance(ckpt.get("arch"), Mapping) and isinstance(ckpt["arch"].get(net), Mapping):
        return dict(ckpt["arch"][net])
    args = ckpt.get("args")
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    if not isinstance(args, Mapping):
        return {}
    out = {}
    if "size" in args:
        out["size"] = int(args["size"])
    if "channel_multiplier" in args:
        out["channel_multiplier"] = args["channel_multiplier"]
    if net == "g":
        if "latent" in args:
            out["style_dim"] = int(args["latent"])
        if "n_mlp" in args:
            out["n_mlp"] = int(args["n_mlp"])
    return out


def _select(ckpt: Any, path: str, which: str, bare_ok: bool) -> tuple[dict, dict]:
    """(state dict, recorded architecture) of entry ``which`` of the file."""
    if _is_state_dict(ckpt):
        if bare_ok:
            return dict(ckpt), {}
        raise CheckpointError(f"{path} is a bare state dict (a generator release), not a training "
                              f"checkpoint with a '{which}' entry; load it with load_generator.")
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict.")
    if which not in ckpt or not _is_state_dict(ckpt[which]):
        entries = sorted(k for k, v in ckpt.items() if _is_state_dict(v))
        raise CheckpointError(f"{path} has no '{which}' state dict (state dicts in it: {entries}); "
                              f"choose one of those with which= (--which on the command line).")
    net = "d" if which == "d" else "g"
    return dict(ckpt[which]), _arch_from_file(ckpt, net)


def _strict_load(model: nn.Module, sd: Mapping[str, torch.Tensor], path: str, which: str,
                 found: Mapping) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        exp_ch = getattr(model, "channels", {})
        raise CheckpointMismatchError(
            f"{path} ['{which}'] does not fit the {type(model).__name__} it is loaded into: expected "
            f"resolution {model.size} with channels {dict(exp_ch)}, found resolution "
            f"{found.get('size', '?')} with channels {dict(found.get('channels', {}))}; first missing keys "
            f"{missing[:5]}, first unexpected keys {unexpected[:5]}, first shape mismatches (file vs "
            f"model) {shapes[:3]} — load it with the settings it was trained with.")
    model.load_state_dict(sd, strict=True)


_G_KEYS = ("size", "style_dim", "n_mlp", "channel_multiplier", "channel_max", "lr_mlp",
           "blur_kernel", "exemplar_slots")
_D_KEYS = ("size", "channel_multiplier", "channel_max", "blur_kernel", "stddev_group")


def _build_kwargs(found: Mapping, recorded: Mapping, expected: Mapping, keys) -> dict:
    kwargs = {k: found[k] for k in keys if k in found}
    kwargs.update({k: recorded[k] for k in keys if k in recorded and recorded[k] is not None})
    kwargs.update({k: v for k, v in expected.items() if v is not None})
    if "exemplar_slots" in kwargs and kwargs["exemplar_slots"] is not None:
        kwargs["exemplar_slots"] = tuple(kwargs["exemplar_slots"])
    if "blur_kernel" in kwargs:
        kwargs["blur_kernel"] = tuple(kwargs["blur_kernel"])
    return kwargs


def load_generator(path: str | os.PathLike, device: torch.device | str = "cpu", *,
                   which: str = "g_ema", size: int | None = None, style_dim: int | None = None,
                   channel_multiplier: float | None = None, channel_max: int | None = None,
                   n_mlp: int | None = None, exemplar_slots: tuple[int, int] | None = None,
                   checkpoint: Any = None) -> Generator:
    """Build a :class:`Generator` from a checkpoint (ours, the authors' or a bare release) and load
    entry ``which`` strictly. Keyword settings, when given, are what the caller expects; a file that
    does not match raises :class:`CheckpointMismatchError`. Returned on ``device`` in ``eval()`` mode.
    ``checkpoint``: the file's contents when the caller has read it already (``safe_load(path)``),
    so that a run reads the file once; ``path`` then only names it in messages.
    """
    path = os.fspath(path)
    ckpt = safe_load(path) if checkpoint is None else checkpoint
    sd, recorded = _select(ckpt, path, which, bare_ok=which in ("g_ema", "g"))
    try:
        found = infer_generator_arch(sd)
    except KeyError as e:
        raise CheckpointError(f"{path} ['{which}'] is not an EXE-GAN generator state dict ({e.args[0]}; "
                              f"first keys {list(sd)[:5]}).") from None
    w_in = sd.get("down_from_big.0.weight")
    if recorded.get("sketch_channels") or (torch.is_tensor(w_in) and w_in.ndim == 4 and w_in.shape[1] > 4):
        # A sketch fine-tune (models/sketch.py): its first layer reads 4 + k input channels, which
        # a plain Generator cannot hold; its own loader builds the right class.
        raise CheckpointError(f"{path} ['{which}'] is a sketch-guided generator (extra sketch input "
                              f"channels); load it with models.sketch.load_sketch_generator (or "
                              f"SketchEXEGAN.from_checkpoints / scripts/inpaint.py --sketch).")
    expected = dict(size=size, style_dim=style_dim, channel_multiplier=channel_multiplier,
                    channel_max=channel_max, n_mlp=n_mlp, exemplar_slots=exemplar_slots)
    kwargs = _build_kwargs(found, recorded, expected, _G_KEYS)
    try:
        model = Generator(**kwargs)
    except ValueError as e:
        raise CheckpointMismatchError(f"{path} ['{which}'] cannot build a generator with {kwargs}: {e}") from None
    _strict_load(model, sd, path, which, found)
    return model.to(device).eval()


def load_discriminator(path: str | os.PathLike, device: torch.device | str = "cpu", *,
                       which: str = "d", size: int | None = None,
                       channel_multiplier: float | None = None,
                       channel_max: int | None = None) -> Discriminator:
    """Build a :class:`Discriminator` from a training checkpoint (ours or the authors') and load
    entry ``which`` strictly; returned on ``device`` in ``eval()`` mode."""
    path = os.fspath(path)
    ckpt = safe_load(path)
    sd, recorded = _select(ckpt, path, which, bare_ok=False)
    try:
        found = infer_discriminator_arch(sd)
    except KeyError as e:
        raise CheckpointError(f"{path} ['{which}'] is not an EXE-GAN discriminator state dict "
                              f"({e.args[0]}; first keys {list(sd)[:5]}).") from None
    expected = dict(size=size, channel_multiplier=channel_multiplier, channel_max=channel_max)
    kwargs = _build_kwargs(found, recorded, expected, _D_KEYS)
    model = Discriminator(**kwargs)
    _strict_load(model, sd, path, which, found)
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------- writing
def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)  # DistributedDataParallel / DataParallel


def capture_rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) RNG states as weights-only-loadable values."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_checkpoint(*, g: nn.Module, d: nn.Module, g_ema: nn.Module,
                    g_optim: torch.optim.Optimizer | None = None,
                    d_optim: torch.optim.Optimizer | None = None, step: int = 0,
                    config: Mapping | None = None, best_metric: Any = None,
                    rng: bool = True, **extra: Any) -> dict:
    """Our checkpoint dict: state dicts, step, RNG states, plain-dict config, best metric, and the
    constructor arguments of G and D (``arch``) so the file rebuilds its networks by itself."""
    g, d, g_ema = _unwrap(g), _unwrap(d), _unwrap(g_ema)
    return {
        "format": FORMAT,
        "g": g.state_dict(), "d": d.state_dict(), "g_ema": g_ema.state_dict(),
        "g_optim": g_optim.state_dict() if g_optim is not None else None,
        "d_optim": d_optim.state_dict() if d_optim is not None else None,
        "step": int(step),
        "rng": capture_rng_state() if rng else None,
        "config": dict(config) if config is not None else {},
        "best_metric": best_metric,
        "arch": {"g": dict(getattr(g_ema, "kwargs", {})), "d": dict(getattr(d, "kwargs", {}))},
        **extra,
    }


# Exact types: e.g. numpy.float64 subclasses float but pickles as a numpy global.
_SCALARS = (str, int, float, bool, type(None), torch.Size, torch.dtype, torch.device)


def _check_plain(obj: Any, where: str) -> None:
    if type(obj) in _SCALARS or isinstance(obj, torch.Tensor):
        return
    if type(obj) in (dict, collections.OrderedDict):
        for k, v in obj.items():
            if type(k) not in (str, int, float, bool, type(None), tuple):
                raise TypeError(f"{where} has a key of type {type(k).__name__}")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if type(obj) in (list, tuple, set):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}")


def fsync_dir(folder: str) -> None:
    """fsync a directory (makes a rename durable); skipped where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(obj: Mapping, path: str | os.PathLike) -> None:
    """Write ``obj`` to ``path`` atomically (temp file in the same folder, then ``os.replace``).

    Only tensors, numbers, strings and plain containers are accepted, so the file always loads
    back with ``weights_only=True``; anything else is refused before writing.
    """
    path = os.fspath(path)
    try:
        _check_plain(obj, "checkpoint")
    except TypeError as e:
        raise CheckpointError(f"Refusing to save {path}: {e}, which torch.load(weights_only=True) "
                              f"cannot read back; convert it to tensors or plain Python values.") from None
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    # A signal handler's exception (a second Ctrl-C) waits until the write is whole or cleaned up:
    # raised inside the file object's write it would unwind through torch's C++ writer (SIGABRT).
    with uninterruptible():
        try:
            # Through a Python file object: a failed write keeps its OSError (ENOSPC), which a
            # path would lose inside the C++ writer.
            with _open_for_write(fd) as f:
                torch.save(obj, f)
                f.flush()
                # The bytes reach the disk before the rename, so that after a power loss the new
                # name never points at a partly written file; then the directory entry (best effort).
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(folder)
        except BaseException as e:
            if os.path.exists(tmp):
                os.unlink(tmp)
            if isinstance(e, Exception) and is_disk_full(e, folder, _payload_bytes(obj)):
                raise DiskFullError(path, _payload_bytes(obj)) from None
            raise


def _open_for_write(fd: int):
    return os.fdopen(fd, "wb")


def _payload_bytes(obj: Any) -> int:
    """Bytes of the tensors in ``obj``: about what its file takes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(_payload_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return sum(_payload_bytes(v) for v in obj)
    return 0
