"""Errors a user can fix, raised by the data pipeline (image folders, LMDB files, mask files).

Each one carries a single sentence that names the file or folder, says what is wrong and what
to do, so that entry points can print it without a traceback from deep inside the loaders
(both derive from :class:`common.errors.UserError`).
"""
from common.errors import UserError


class DatasetError(UserError, ValueError):
    """A data file or folder cannot be used as given (missing, empty, corrupt, wrong layout)."""


class MaskError(UserError, ValueError):
    """A mask (tensor or file) has the wrong size, shape or values."""


class ProtocolError(UserError, ValueError):
    """An evaluation that cannot run as asked (bad option, too few images, output dir exists)."""
