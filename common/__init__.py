"""Small helpers every layer may use (below datasets/, models/, metrics/ and training/).

``common.seeding``: the one home of seed derivation and RNG state (data pipeline, training
loop, evaluation protocol); ``common.errors``: :class:`UserError`, the base of every error an
entry point prints as one sentence; ``common.rundir``: numbered run / evaluation directories.
"""
