"""test.py's command line (``evaluation.cli``); the evaluation code itself is in metrics/."""
