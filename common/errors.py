"""The base class of every error a user can fix.

Each package defines its own error types (``datasets.errors.DatasetError``,
``models.checkpoint.CheckpointError``, ``training.config.ConfigError``, ...) and derives them
from :class:`UserError` as well as from the built-in type it used before (``ValueError``,
``RuntimeError``), so existing ``except`` clauses keep working. Their message is one complete
sentence (which file or key, what is wrong, what to do). Every entry point (train.py, test.py,
scripts/) catches :class:`UserError`, prints ``error: <sentence>`` without a traceback and exits
with status 2 (:func:`report`).
"""
from __future__ import annotations

import re
import sys

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An input a user can fix; its message is one sentence, printed without a traceback."""


def sentence(e: BaseException) -> str:
    """The one sentence of ``e``. A DataLoader worker's error reaches the training process
    re-raised as the same type with the worker's whole traceback for its message ("Caught
    DatasetError in DataLoader worker process 0. Original Traceback ..."): its last line holds
    the sentence."""
    text = str(e)
    if text.startswith("Caught ") and "Original Traceback" in text:
        lines = [line for line in text.splitlines() if line.strip()]
        m = re.match(rf"^[\w.]*\b{re.escape(type(e).__name__)}: (.+)$", lines[-1]) if lines else None
        if m:
            return m.group(1)
    return text


def report(e: BaseException) -> int:
    """Print ``error: <sentence>`` on stderr; returns the exit status of a user error (2)."""
    print(f"error: {sentence(e)}", file=sys.stderr)
    return EXIT_USER_ERROR
