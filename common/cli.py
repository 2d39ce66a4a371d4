"""Command-line helpers shared by every entry point (train.py, test.py, scripts/)."""
from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's ArgumentDefaultsHelpFormatter, but "(default: X)" is appended only where X is a
    value and the help text does not already say what the default is (no "(default: the preset's)
    (default: None)")."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)
