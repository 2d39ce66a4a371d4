"""Training's own user error. Every user error derives from :class:`common.errors.UserError`,
which train.py (training/cli.py), test.py and the scripts catch to print one sentence.
"""
from __future__ import annotations

from common.errors import UserError


class NonFiniteLossError(UserError, RuntimeError):
    """A loss became NaN/inf; the run stops and keeps its last good checkpoint."""
