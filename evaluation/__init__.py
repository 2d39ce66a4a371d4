"""test.py's evaluation: its command line (``evaluation.cli``: flags, config resolution, ``--pred``).

Three modules run an evaluation; this package is only test.py's front end. The shared core, one
batch loop and one protocol record, is ``metrics/eval_loop.py`` (test.py's run itself is
``metrics/testrun.py``); the evaluation during training (sample grids and periodic metrics on
G_ema) is ``training/in_loop_eval.py``. docs/evaluation.md describes them.
"""
