"""Signal handlers that raise, and the writes they must not cut in two.

A checkpoint is written through a Python file object (so that a full disk keeps its OSError):
``torch.save``'s C++ writer calls the object's ``write``, and Python runs a signal handler at the
next bytecode - possibly inside that ``write``. An exception raised there (the abort of a second
Ctrl-C, the stop of a SIGTERM during start-up) would unwind through the C++ writer, which ends the
process with SIGABRT instead of the one-line message. So a handler does not raise inside
:func:`uninterruptible`: it hands its exception to :func:`raise_or_defer`, which raises it when the
outermost ``uninterruptible`` block ends (the write finished, or was cleaned up).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional

_state = threading.local()


def _depth() -> int:
    return getattr(_state, "depth", 0)


@contextlib.contextmanager
def uninterruptible() -> Iterator[None]:
    """A block that signal handlers using :func:`raise_or_defer` do not interrupt; their exception
    is raised when the outermost such block ends."""
    _state.depth = _depth() + 1
    try:
        yield
    finally:
        _state.depth = _depth() - 1
        pending: Optional[BaseException] = getattr(_state, "pending", None)
        if _state.depth == 0 and pending is not None:
            _state.pending = None
            raise pending


def raise_or_defer(exc: BaseException) -> None:
    """Raise ``exc`` now, or, inside :func:`uninterruptible`, when that block ends (the first
    deferred exception wins)."""
    if _depth() == 0:
        raise exc
    if getattr(_state, "pending", None) is None:
        _state.pending = exc
