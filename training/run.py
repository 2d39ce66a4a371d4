"""The life of one training run: its directory, start-up checks, the loop over steps around
``Trainer.train_step``, checkpoints, evaluation, logging and the summary (docs/training.md).

``run(cfg)`` starts a fresh, numbered run directory; ``run(cfg, resume=path)`` continues the run
a checkpoint belongs to. The step itself is ``training/trainer.py``, stop handling
``training/signals.py``, what all ranks agree on after a step ``training/consensus.py``.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Optional, Union

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.diskfull import DiskFullError
from common.rundir import unlock_run_dir
from metrics.evaluator import HIGHER_IS_BETTER
from metrics.standins import STANDIN_PSP_FILE, save_standin_style_encoder
from models.stylegan2 import get_modconv_impl, set_modconv_impl

from . import distributed as dist_utils
from . import pretrained
from .checkpointing import CheckpointManager, Resume, restore_training_state, training_state
from .config import Config, check_resume_model
from .consensus import Consensus, stop_code
from .data import StepBatchSampler, build_datasets, dataset_location
from .errors import NonFiniteLossError
from .in_loop_eval import InLoopEvaluator
from .outputs import FreshRunDir, StatsWriter, close_logger, open_run_dir, write_summary
from .signals import StartupStop, StopFlag, TrainingAborted, ignore_stop_signals, interrupted
from .trainer import Trainer


@dataclass
class RunResult:
    run_dir: Optional[str]
    step: int                                 # iterations completed
    stopped_by: Optional[str] = None          # "SIGTERM" / "SIGINT" when interrupted
    last_stats: dict = field(default_factory=dict)
    evals: list = field(default_factory=list)  # [{"step", metrics...}, ...]
    trainer: Optional[Trainer] = field(default=None, repr=False)  # networks/optimizers in memory


@dataclass
class RunState:
    """What a run changes besides the networks, in one place: the best evaluation so far (saved
    in every checkpoint as ``best_metric``), the last checkpoint and the last sample grid."""
    best: Optional[dict] = None               # {"metric", "value", "step"}
    last_checkpoint: Optional[str] = None
    last_samples: Optional[str] = None


def run(cfg: Config, resume: Union[str, Resume, None] = None, *,
        stop_at: Optional[int] = None) -> RunResult:
    """Train according to `cfg`; with `resume` (a checkpoint file, or a ``Resume`` holding the
    file already read by train.py's command line) continue that run.

    ``stop_at`` stops after that many completed iterations as if interrupted (checkpoint, exit),
    e.g. to split a run over time-limited jobs; the run continues with ``--resume``.
    """
    info = dist_utils.init(cfg.train.device, cfg.dist.backend, cfg.dist.timeout_min)
    modconv = get_modconv_impl()
    fresh = FreshRunDir()
    try:
        with StartupStop(lambda: fresh.stepped):
            return _run(cfg, info, Resume.of(resume), stop_at, fresh)
    except KeyboardInterrupt as e:
        close_logger()  # release log.txt before the directory goes
        removed = fresh.remove_if_unused()
        raise interrupted(e, fresh, removed) from None
    except DiskFullError as e:  # a checkpoint, stats.jsonl, summary.json ...
        close_logger()
        removed = fresh.remove_if_unused()
        latest = None if removed else fresh.latest()
        if latest:
            then = (f"the last good checkpoint {latest} is kept; free some space, then continue "
                    f"with: python train.py --resume {fresh.run_dir}")
        else:
            then = "no checkpoint of this run was written; free some space and start it again"
        raise e.advise(then) from None
    except BaseException:
        close_logger()
        fresh.remove_if_unused()
        raise
    finally:
        set_modconv_impl(modconv)  # a process-wide switch: leave it as found
        close_logger()
        unlock_run_dir(fresh.lock)
        dist_utils.shutdown(info)


def _configure_torch(cfg: Config) -> None:
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    set_modconv_impl(cfg.train.modconv)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def _run(cfg: Config, info: dist_utils.DistInfo, resume: Optional[Resume], stop_at: Optional[int],
         fresh: FreshRunDir) -> RunResult:
    _configure_torch(cfg)
    pretrained.check_files(cfg, resuming=resume is not None)  # before a run directory exists
    ckpt = resume.take() if resume else None  # read once (train.py's command line may have read it)
    if ckpt is not None:
        check_resume_model(cfg, ckpt.get("config"), resume.path)  # before anything is written
    run_dir, log = open_run_dir(cfg, info, resume, fresh)
    start_step = int(ckpt["step"]) if ckpt else 0
    log.info("%s run %s at step %d (world size %d, device %s, per-process batch %d, global batch %d)",
             "resuming" if resume else "starting", run_dir, start_step, info.world_size,
             info.device, cfg.train.batch, cfg.train.batch * info.world_size)

    train_set, test_set = build_datasets(cfg, info.is_main, log)
    trainer = Trainer(cfg, info, log, resuming=ckpt is not None)
    state = RunState()
    if ckpt:
        restore_training_state(trainer, ckpt)
        state.best = ckpt.get("best_metric")
        if ckpt.get("world_size", info.world_size) != info.world_size:
            log.warning("the checkpoint was written by %d processes, this run has %d: data order and "
                        "per-rank noise differ from an uninterrupted run", ckpt["world_size"], info.world_size)
    del ckpt

    session = _Session(cfg, info, log, run_dir, trainer, state, train_set, test_set or train_set,
                       start_step, resume.path if resume else None, fresh)
    result = session.train(stop_at)
    if info.is_main:
        standin_psp = None
        if "style encoder" in trainer.pre.random:
            # So that scripts/inpaint.py --psp / test.py can run this run's models with the encoder
            # it was trained with (seeded: the same file on a resume). Written with the summary, at
            # the end of a session, so the periodic checkpoint writes stay the only saves in a run.
            standin_psp = save_standin_style_encoder(
                trainer.pre.style_encoder, os.path.join(run_dir, "checkpoints", STANDIN_PSP_FILE))
        write_summary(run_dir, result, state.last_samples, dataset_location(train_set),
                       dataset_location(test_set or train_set), standin_psp)
    if result.step >= cfg.train.iters:
        log.info("finished %d iterations; run directory %s", result.step, run_dir)
    return result


def _is_due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _better(metric: str, new: float, old: float) -> bool:
    return new > old if metric in HIGHER_IS_BETTER else new < old


class _Session:
    """The steps of one process's session, from ``start_step`` to train.iters (or a stop), with
    the writes around them; the run's mutable state is ``self.state`` (a RunState)."""

    def __init__(self, cfg, info, log, run_dir, trainer, state, train_set, eval_set, start_step,
                 resumed: Optional[str], fresh):
        """``resumed``: the checkpoint this session continues from, None for a fresh run."""
        self.cfg, self.info, self.log, self.run_dir = cfg, info, log, run_dir
        self.trainer, self.state, self.fresh, self.start_step = trainer, state, fresh, start_step
        self.sampler = StepBatchSampler(len(train_set), cfg.train.batch, info.world_size, info.rank,
                                        cfg.train.seed, start_step, cfg.train.iters)
        self.loader = DataLoader(train_set, batch_sampler=self.sampler, num_workers=cfg.data.num_workers,
                                 pin_memory=info.device.type == "cuda", worker_init_fn=ignore_stop_signals,
                                 generator=torch.Generator().manual_seed(cfg.train.seed))
        self.ckpts = CheckpointManager(run_dir, cfg.train.keep_last) if info.is_main else None
        self.stats_w = StatsWriter(run_dir, info.is_main, cfg.log.tensorboard,
                                   purge_step=start_step if resumed else None)
        fresh.closers.append(self.stats_w.close)
        if resumed:
            # Rows after this step from the interrupted session stay in stats.jsonl (nothing is
            # deleted); this marker tells readers that the steps that follow replace them.
            self.stats_w.scalars(start_step, {"resumed_from": resumed}, kind="resume")
        self.evaluator = InLoopEvaluator(cfg, eval_set, trainer, info, log, sketch=trainer.sketch)
        self.result = RunResult(run_dir=run_dir, step=start_step, trainer=trainer)
        self.acc, self.counts = {}, {}
        self.t_log, self.n_log = time.perf_counter(), 0

    # -- writes ---------------------------------------------------------------------------------
    def save(self, step: int) -> None:
        pl_mean = self.trainer.gather_pl_mean()  # collective: every rank
        if self.info.is_main:
            state = training_state(self.trainer, step, pl_mean, self.sampler.position(step), self.state.best)
            path = self.state.last_checkpoint = self.ckpts.save(state, step)
            G_ema = self.trainer.G_ema
            self.ckpts.export(G_ema.state_dict(), G_ema.kwargs, step, self.cfg.to_dict())
            self.log.info("saved %s", path)
        dist_utils.barrier()

    def evaluate(self, step: int) -> None:
        """Metrics of G_ema (rank 0 computes), the best so far, and a checkpoint at this step."""
        metrics = self.evaluator.evaluate(step)
        if metrics is None:
            return
        self.result.evals.append({"step": step, **metrics})
        self.stats_w.scalars(step, metrics, kind="eval")
        key, best = self.cfg.eval.best_metric, self.state.best
        improved = key in metrics and math.isfinite(metrics[key]) and (
            best is None or _better(key, metrics[key], best["value"]))
        if improved:
            self.state.best = {"metric": key, "value": float(metrics[key]), "step": step}
        self.save(step)
        if improved and self.info.is_main:
            self.ckpts.mark_best(step)
            self.log.info("new best %s = %.4f at step %d -> checkpoints/best.pt", key, metrics[key], step)

    def log_stats(self, step: int) -> None:
        """Mean losses since the last log step (over ranks), speed and (train.time_phases) the
        mean time of each phase, to stats.jsonl, TensorBoard and the log."""
        cfg = self.cfg
        means = dist_utils.reduce_dict({k: self.acc[k] / self.counts[k] for k in self.acc}, self.info.device)
        dt = time.perf_counter() - self.t_log
        means["images_per_s"] = self.n_log * cfg.train.batch * self.info.world_size / max(dt, 1e-9)
        means["sec_per_it"] = dt / max(self.n_log, 1)
        means.update(self.trainer.timer.means_ms())  # this rank's own (rank 0 writes)
        self.stats_w.scalars(step, means)
        self.log.info("step %d  %s", step, "  ".join(f"{k} {v:.4g}" for k, v in sorted(means.items())))
        self.result.last_stats = means
        self.acc, self.counts, self.t_log, self.n_log = {}, {}, time.perf_counter(), 0

    # -- the steps ------------------------------------------------------------------------------
    def train(self, stop_at: Optional[int]) -> RunResult:
        cfg, info, result = self.cfg, self.info, self.result
        iters, step = cfg.train.iters, self.start_step
        pbar = tqdm(total=iters, initial=step, disable=not (info.is_main and cfg.log.progress),
                    dynamic_ncols=True, smoothing=0.05, unit="it")
        if step == 0 and cfg.eval.at_start and cfg.eval.every > 0:
            self.evaluate(0)
        if step == 0 and cfg.log.sample_every > 0:
            self.state.last_samples = self.evaluator.save_samples(0, self.stats_w)
        consensus = Consensus(cfg.log.log_every)
        self.d_mean = self.g_mean = float("nan")
        try:
            with StopFlag(announce=info.is_main) as stop:
                data_iter = iter(self.loader)
                while step < iters:
                    stats = self.trainer.train_step(step, next(data_iter))
                    step += 1
                    self.n_log += 1
                    self.fresh.stepped = True
                    stopping = self._agree(step, stats, consensus, stop, stop_at)
                    pbar.update(1)
                    if info.is_main and cfg.log.progress:
                        img_s = self.n_log * cfg.train.batch * info.world_size / max(
                            time.perf_counter() - self.t_log, 1e-9)
                        pbar.set_postfix(d=f"{self.d_mean:.3f}", g=f"{self.g_mean:.3f}",
                                         img_s=f"{img_s:.1f}", refresh=False)
                    self._periodic(step)
                    if stopping and step < iters:
                        if not (_is_due(step, cfg.eval.every) or _is_due(step, cfg.train.ckpt_every)):
                            self.save(step)
                        result.stopped_by = stopping  # the same on every rank
                        self.log.info("stopped at step %d (%s); continue with: python train.py --resume %s",
                                      step, stopping, self.run_dir)
                        break
        except TrainingAborted:
            # run() adds what is left, once it knows whether the run directory stays.
            raise TrainingAborted(f"aborted by a second Ctrl-C during step {step + 1}") from None
        finally:
            pbar.close()
            self.stats_w.close()
        result.step = step
        return result

    def _agree(self, step: int, stats: dict, consensus: Consensus, stop: StopFlag,
               stop_at: Optional[int]) -> Optional[str]:
        """Fold the step's losses in; where the loop must decide, read the device once (the same
        steps on every rank): a log step, a step that saves / evaluates / samples, the last step,
        stop_at; a signal at once only without DDP. Returns why the run stops, or None."""
        cfg = self.cfg
        stop_at_reached = stop_at is not None and step >= stop_at
        requested = stop_code(stop.signal, stop_at_reached)
        consensus.add(step, stats)
        stopping = None
        if consensus.due(step, stop_at_reached or (stop.signal is not None and not dist_utils.is_enabled())
                         or step == cfg.train.iters or _is_due(step, cfg.eval.every)
                         or _is_due(step, cfg.train.ckpt_every) or _is_due(step, cfg.log.sample_every)):
            self.d_mean, self.g_mean, first_bad, stopping = consensus.read(requested)
            self.trainer.timer.collect()  # the device was just read: the phase times are ready
            if first_bad is not None:
                bad = sorted(k for k, v in stats.items() if not torch.isfinite(v).all())
                latest = os.path.join(self.run_dir, "checkpoints", "latest.pt")
                detail = [", ".join(bad), "on another rank" if not bad and first_bad == step else "",
                          f"seen at step {step}" if first_bad != step else ""]
                raise NonFiniteLossError(
                    f"Non-finite loss at step {first_bad} ({'; '.join(d for d in detail if d)}); "
                    f"the run stopped without saving this state, the last good checkpoint is {latest} "
                    f"(lower optim.lr or turn off train.amp, then --resume).")
        for k, v in stats.items():
            self.acc[k] = self.acc.get(k, 0.0) + v.float()
            self.counts[k] = self.counts.get(k, 0) + 1
        return stopping

    def _periodic(self, step: int) -> None:
        """The log row, sample grid, evaluation and checkpoint due at ``step``."""
        cfg, iters = self.cfg, self.cfg.train.iters
        if _is_due(step, cfg.log.log_every) or step == iters:
            self.log_stats(step)
        if _is_due(step, cfg.log.sample_every) or (step == iters and cfg.log.sample_every > 0):
            self.state.last_samples = self.evaluator.save_samples(step, self.stats_w)
        if _is_due(step, cfg.eval.every) or (step == iters and cfg.eval.every > 0):
            self.evaluate(step)  # saves a checkpoint at this step too
        elif _is_due(step, cfg.train.ckpt_every) or step == iters:
            self.save(step)
