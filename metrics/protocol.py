"""The old name of ``metrics/eval_loop.py`` (the evaluation loop), kept only for the importers
under ``training/`` that have not switched yet (``training/evaluation.py``); new code imports
``metrics.eval_loop``. ``datasets/protocols.py`` is the other "protocol": which mask and which
exemplar each test image gets.
"""
from datasets.protocols import make_mask_protocol

from .eval_loop import build_evaluator, evaluate
from .results import summary_means

__all__ = ["build_evaluator", "evaluate", "make_mask_protocol", "summary_means"]
