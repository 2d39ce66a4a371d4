"""The exception types train.py reports as one sentence (no traceback).

Collected here so that the entry point names them in one place; each package defines its own.
"""
from __future__ import annotations

from datasets.errors import DatasetError, MaskError
from losses.perceptual import LPIPSWeightsError
from metrics.evaluator import EvaluatorError
from metrics.inception import InceptionWeightsError
from metrics.protocol import ProtocolError
from models.checkpoint import CheckpointError
from models.irse import WeightsFileError

from .config import ConfigError
from .data import DataError


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/inf; the run stops and keeps its last good checkpoint."""


USER_ERRORS: tuple = (ConfigError, CheckpointError, DataError, NonFiniteLossError, DatasetError,
                      MaskError, WeightsFileError, LPIPSWeightsError, InceptionWeightsError,
                      EvaluatorError, ProtocolError)
