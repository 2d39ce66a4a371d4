"""Training of EXE-GAN (Lu et al., Neurocomputing 2025). Entry point: ``train.py``; see
docs/training.md and docs/architecture.md (the training/ section).

The config: ``config`` (the schema and ``load_config``), ``configload`` (YAML, overrides),
``validation`` (ranges, choices, cross-field rules), ``errors``. The step: ``trainer`` (the
phases), ``builders`` (G, D, Adam), ``pretrained`` (the frozen networks, or their stand-ins from
``metrics/standins.py``), ``timing`` (opt-in phase timer). The run: ``run`` (its life),
``signals`` (stop handling), ``consensus`` (what the ranks agree on), ``checkpointing``,
``outputs`` (run directory, logs, stats, samples, summary), ``in_loop_eval`` (the in-training
evaluation: sample grids, periodic metrics), ``data``, ``distributed``, ``cli``.
Add-ons: ``sketch`` (the sketch fine-tune, imported only when enabled), ``demo_encoder``.
"""
