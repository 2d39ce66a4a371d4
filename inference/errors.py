"""The error type of the inference library: an input a user can fix (a file that cannot be read, a
mask of the wrong size, a hole outside the face crop, ...). Its message is one sentence; every entry
point prints it without a traceback and exits with status 2 (:mod:`common.errors`)."""
from __future__ import annotations

from common.errors import UserError


class InferenceInputError(UserError, ValueError):
    """An input a user can fix; printed as one sentence without a traceback."""
