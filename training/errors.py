"""Training's own user errors. Every user error derives from :class:`common.errors.UserError`,
which train.py (training/cli.py), test.py and the scripts catch to print one sentence.

A leaf module: every other module of training/ may import it, it imports none of them.
"""
from __future__ import annotations

from common.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration the user can fix (unknown key, wrong type, unreadable file)."""


class NonFiniteLossError(UserError, RuntimeError):
    """A loss became NaN/inf; the run stops and keeps its last good checkpoint."""


class Terminated(KeyboardInterrupt):
    """SIGTERM before the first training step (start-up) or before the loop took over the
    signals: the run ends at once without saving (exit status 143, 128 + SIGTERM). A
    KeyboardInterrupt, so that it passes ``except Exception`` on its way out, as a Ctrl-C does."""

    exit_status = 143
