"""train.time_phases: the loop's opt-in per-phase timer (training/timing.py). Off, it records
nothing and hands out one shared no-op context; on, a run writes time_<phase>_ms to stats.jsonl
and TensorBoard at every log step, and the networks are what they are without it."""
import json
import os

import torch

from training.run import run
from training.timing import PhaseTimer
from trainutil import tiny_config

PHASES = {"prep", "d_main", "d_reg", "g_main", "g_reg", "ema", "iteration"}


def test_the_timer_off_costs_nothing_and_on_times_nested_phases():
    off = PhaseTimer(torch.device("cpu"), enabled=False)
    assert off.phase("a") is off.phase("b")  # one shared no-op context, nothing allocated
    with off.phase("a"):
        pass
    assert off.read() == {} and off.means_ms() == {}
    on = PhaseTimer(torch.device("cpu"), enabled=True)
    with on.phase("outer"):
        for _ in range(2):
            with on.phase("inner"):
                sum(range(10000))
    t = on.read()
    assert len(t["inner"]) == 2 and t["outer"][0] >= sum(t["inner"]) > 0
    assert on.read() == {}  # read once
    # The loop folds each read into running means (nothing held grows between log rows).
    for _ in range(3):
        with on.phase("step"):
            pass
        on.collect()
    assert on.pending == [] and on._sums["step"][1] == 3
    means = on.means_ms()
    assert set(means) == {"time_step_ms"} and means["time_step_ms"] >= 0 and on.means_ms() == {}


def _rows(run_dir):
    with open(os.path.join(run_dir, "stats.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_a_timed_run_logs_every_phase_and_trains_the_same_networks(face_dirs, tmp_path):
    reg = {"d_reg_every": 2, "g_reg_every": 2}  # both regularisers run in each logged window
    timed = run(tiny_config(face_dirs, tmp_path / "a", train={"iters": 4, "time_phases": True},
                            loss=reg, log={"log_every": 2, "tensorboard": True}))
    plain = run(tiny_config(face_dirs, tmp_path / "b", train={"iters": 4}, loss=reg, log={"log_every": 2}))
    rows = [r for r in _rows(timed.run_dir) if r["kind"] == "train"]
    assert [r["step"] for r in rows] == [2, 4]
    for r in rows:
        assert {k[5:-3] for k in r if k.startswith("time_")} == PHASES
        assert r["time_iteration_ms"] >= r["time_d_main_ms"] + r["time_g_main_ms"] > 0
    assert not any(k.startswith("time_") for r in _rows(plain.run_dir) for k in r)
    for net in ("G", "D", "G_ema"):
        a, b = getattr(timed.trainer, net).state_dict(), getattr(plain.trainer, net).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), net
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return
    ev = EventAccumulator(timed.run_dir)
    ev.Reload()
    assert "train/time_iteration_ms" in ev.Tags()["scalars"]
