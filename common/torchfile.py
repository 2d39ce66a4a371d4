"""Is a file something ``torch.save`` wrote? Decided from its first bytes, before unpickling.

``torch.load`` of another file (a README or an HTML error page saved under the checkpoint's name)
does not fail cleanly: the unpickler reads the text as opcodes and ends in IndexError, KeyError or
a "pickled global" made of the text's letters, which a message would then quote as if the file
held it. Every loader asks :func:`not_a_torch_file` first and reports the file as not a PyTorch
checkpoint instead.
"""
from __future__ import annotations

import os
from typing import Optional

_ZIP = b"PK\x03\x04"          # torch.save since 1.6 (and TorchScript archives)
_PICKLE_PROTO = 0x80           # the legacy format: a pickle, protocol 2 or later
_TAR_AT, _TAR = 257, b"ustar"  # the oldest, tar-based format


def not_a_torch_file(path: str | os.PathLike) -> Optional[str]:
    """None when ``path`` starts like a file of ``torch.save``; else why not, as a short clause
    that quotes nothing from the file."""
    try:
        with open(path, "rb") as f:
            head = f.read(_TAR_AT + len(_TAR))
    except OSError as e:
        return f"it cannot be read: {e.strerror or type(e).__name__}"
    if not head:
        return "the file is empty"
    if head.startswith(_ZIP):
        return None
    if len(head) >= 2 and head[0] == _PICKLE_PROTO and 2 <= head[1] <= 5:
        return None
    if head[_TAR_AT:] == _TAR:
        return None
    try:
        head.decode("utf-8")
        kind = "it holds text"
    except UnicodeDecodeError:
        kind = "its first bytes are neither a zip archive nor a pickle"
    return kind
