"""The exception types train.py reports as one sentence (no traceback).

Collected here so the entry point names them in one place; each package defines its own.
"""
from __future__ import annotations

from .checkpointing import CheckpointError
from .config import ConfigError
from .data import DataError


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/inf; the run stops and keeps its last good checkpoint."""


class PretrainedError(ValueError):
    """A pretrained-network file named in the config is missing or unusable."""


def _optional(module: str, names: tuple[str, ...]) -> tuple:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError:
        return ()
    return tuple(getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type))


USER_ERRORS: tuple = (ConfigError, CheckpointError, DataError, NonFiniteLossError, PretrainedError) \
    + _optional("datasets.errors", ("DatasetError", "MaskError")) \
    + _optional("models.irse", ("WeightsFileError",)) \
    + _optional("models.checkpoint", ("CheckpointError",)) \
    + _optional("losses.perceptual", ("LPIPSWeightsError",))
