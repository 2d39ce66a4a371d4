"""Command line of train.py: --config, --set (repeatable), --dry-run, --resume, --outdir.

Errors a user can fix (bad config key, missing file, unusable checkpoint, batch that does not
fit the data) are printed as one sentence and exit with status 2, without a traceback.

Exit status: 0 the run finished its train.iters; 75 (EX_TEMPFAIL of sysexits.h, "try again")
stopped early by SIGTERM / Ctrl-C after saving a checkpoint, continue with --resume; 130 aborted
by a second Ctrl-C (or a Ctrl-C before the first step) without saving; 143 (128 + SIGTERM) stopped
by SIGTERM before the first step, without saving; 2 a user error; 1 a crash.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Optional, Sequence

from .errors import Terminated


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train EXE-GAN (exemplar-guided facial inpainting). Launch with torchrun for "
                    "several GPUs / nodes; train.batch is the per-GPU batch.")
    p.add_argument("--config", help="YAML config, e.g. configs/celebahq_256.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set loss.lambda_id=0.1 (repeatable; the "
                        "value is read as YAML)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--resume", metavar="RUN_DIR_OR_FILE",
                   help="continue a run from its checkpoints/latest.pt (or the given .pt file), in "
                        "the same run directory, with the run's own config")
    p.add_argument("--outdir", help="parent of the run directories (default: log.outdir, 'runs')")
    return p


def resolve_config(args):
    """The Config of this invocation and, when resuming, the checkpoint (a ``Resume``: its path
    and its content, read here once and handed to the run)."""
    # Imported here, not at the top: main() has the SIGTERM handler in place before torch loads.
    from .checkpointing import Resume, load_training_checkpoint, resolve_resume  # after the handler
    from .config import ConfigError, check_resume_model, load_config  # after the handler

    overrides = list(args.overrides)
    if args.outdir:
        overrides.append(f"log.outdir={args.outdir}")
    if args.resume:
        if args.config:
            raise ConfigError("--resume continues with the config stored in the run; drop --config "
                              "(change single values with --set).")
        ckpt_path = resolve_resume(args.resume)
        ckpt = load_training_checkpoint(ckpt_path)
        cfg = load_config(None, overrides, base=ckpt["config"])
        check_resume_model(cfg, ckpt["config"], args.resume)
        return cfg, Resume(ckpt_path, ckpt)
    if not args.config:
        raise ConfigError("No config given; pass --config configs/<name>.yaml (or --resume RUN_DIR).")
    return load_config(args.config, overrides), None


EXIT_FINISHED = 0
EXIT_STOPPED = 75      # stopped by a signal with a checkpoint saved; resume later
EXIT_ABORTED = 130     # 128 + SIGINT, the shell's status for a process ended by Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM: stopped by SIGTERM before the first step, nothing saved


def _terminate_now(signum, frame):
    raise Terminated()


def main(argv: Optional[Sequence[str]] = None) -> int:
    old = None
    if threading.current_thread() is threading.main_thread():
        # From the first line on (imports and config included), so that a SIGTERM never ends
        # the process without a word; the loop takes the signal over while steps run.
        old = signal.signal(signal.SIGTERM, _terminate_now)
    try:
        return _main(argv)
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _main(argv: Optional[Sequence[str]]) -> int:
    args = build_parser().parse_args(argv)
    try:
        from common.errors import UserError, report  # as above: after the SIGTERM handler

        try:
            cfg, resume = resolve_config(args)
            if args.dry_run:
                sys.stdout.write(cfg.to_yaml())
                return 0
            from .run import run  # as above: after the SIGTERM handler
            result = run(cfg, resume=resume)
            del resume
        except UserError as e:
            return report(e)
    except KeyboardInterrupt as e:
        # TrainingAborted carries its own sentence; a bare KeyboardInterrupt is a Ctrl-C before
        # the loop took over the signals (start-up): nothing was trained, no run directory is left.
        what = "stopped by SIGTERM" if isinstance(e, Terminated) else "interrupted by Ctrl-C"
        msg = str(e) or f"{what} before training started; nothing was saved."
        print(f"\n{msg}", file=sys.stderr)
        return getattr(e, "exit_status", EXIT_ABORTED)
    return EXIT_STOPPED if result.stopped_by else EXIT_FINISHED
