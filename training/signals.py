"""Stopping a training run by signal: SIGTERM / Ctrl-C ask the loop to save a checkpoint and
stop after the current step (``StopFlag``); a second Ctrl-C aborts without saving
(``TrainingAborted``); before the first step SIGTERM ends start-up at once (``StartupStop``).
train.py's exit statuses for each case are in training/cli.py.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Optional

from common.interrupts import raise_or_defer

from .errors import Terminated


STOP_MESSAGE = ("stopping after this step, saving a checkpoint \u2014 press Ctrl-C again to abort "
                "without saving")


class TrainingAborted(KeyboardInterrupt):
    """A second Ctrl-C (or a Ctrl-C before the first step): the run ends without saving.

    A KeyboardInterrupt, so that code which handles Ctrl-C handles it; ``str()`` is the one line
    train.py prints (exit status 130).
    """


class StopFlag:
    """SIGTERM / SIGINT ask the loop to save a checkpoint and exit cleanly after this step.

    The first signal only sets the flag (the loop checks it after every step, and all ranks stop
    at the same step, see ``training.consensus.Consensus``); with ``announce`` it also says so on the terminal at
    once, since a step can take a while. A second SIGINT aborts at once (``TrainingAborted``),
    for a user who does not want to wait; a repeated SIGTERM changes nothing.
    """

    def __init__(self, announce: bool = True):
        self.signal: Optional[str] = None
        self.announce = announce
        self._old = {}

    def _handler(self, signum, frame):
        name = signal.Signals(signum).name
        if self.signal is not None:
            if signum == signal.SIGINT:
                raise_or_defer(TrainingAborted("aborted by a second Ctrl-C; nothing was saved after the last "
                                               "checkpoint"))
            return
        self.signal = name
        if self.announce:
            # os.write, not print: the handler may interrupt a write to sys.stderr (tqdm, logging),
            # and a buffered stream refuses reentrant calls.
            os.write(2, f"\n{name}: {STOP_MESSAGE}\n".encode("utf-8", "replace"))

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


class StartupStop:
    """SIGTERM outside the training steps. Before the first step there is nothing to save, and
    start-up (demo faces, the stand-in encoder's training, the dataset scan, the step-0
    evaluation) can take minutes, longer than a scheduler waits after its SIGTERM: it ends the
    run at once (``Terminated``), and ``run`` cleans up and says what is left. After the steps the
    run is only writing its summary: the signal is ignored. The loop's ``StopFlag`` takes over in
    between and restores this handler after it. ``stepped()`` says whether a step completed."""

    def __init__(self, stepped):
        self.stepped = stepped
        self._old = None

    def _handler(self, signum, frame):
        if not self.stepped():
            raise_or_defer(Terminated())

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT / SIGTERM to the training process: a Ctrl-C reaches the
    whole process group, and a worker that died of it would break the step being finished."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def interrupted(e: KeyboardInterrupt, fresh, removed: bool) -> TrainingAborted:
    """The one line of a run ended by a signal without a stop after a step: what stopped it and
    what is left, written after the run directory was (or was not) removed, so it never points
    at a directory that is gone. ``fresh``: the session's ``training.outputs.FreshRunDir``."""
    if isinstance(e, Terminated):
        what = "stopped by SIGTERM before the first training step of this session"
    elif isinstance(e, TrainingAborted) and str(e):
        what = str(e)
    elif fresh.stepped:
        what = "interrupted by Ctrl-C while the run was finishing"
    else:
        what = "interrupted by Ctrl-C before the first training step of this session"
    run_dir, latest = fresh.run_dir, fresh.latest()
    if removed:
        kept = f"the run directory {run_dir} was removed (no training step had finished)"
    elif latest:
        kept = f"the last checkpoint is {latest} (continue with: python train.py --resume {run_dir})"
    elif run_dir:
        kept = f"there is no checkpoint in {run_dir}"
    else:
        kept = "no run directory was created"
    out = TrainingAborted(f"{what}; nothing was saved, {kept}.")
    out.exit_status = getattr(e, "exit_status", 130)
    return out
