"""Training of EXE-GAN (Lu et al., Neurocomputing 2025): config schema (``config``), the loop
split by phase (``loop``), run directories and logging (``rundir``), checkpoints
(``checkpointing``), torchrun/DDP helpers (``distributed``), the seeded data order (``data``)
and per-step random streams (``rng``), pretrained networks and their random stand-ins
(``pretrained``) and the in-loop evaluation (``evaluation``). Entry point: ``train.py``;
see docs/training.md.

Importing the package is cheap: ``training.config`` does not pull in the networks.
"""
