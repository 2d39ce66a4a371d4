"""The EXE-GAN training loop (Lu et al., Neurocomputing 2025; docs/architecture.md draws one step).

One iteration, split by phase as in the StyleGAN2 releases:

    draw:    masks (one per sample by default), exemplars (self with p = exemplar.self_prob,
             else the batch reversed), z noise (two z's with p = train.mixing); exemplar style
             codes and identity features once, without gradient
    D main:  logistic loss on real vs completed            (every step)
    D reg:   lazy R1, gamma/2 * R1 * d_reg_every           (every loss.d_reg_every steps)
    G main:  GeneratorObjective: adversarial + attribute + identity + LPIPS (SVGL-weighted)
    G reg:   lazy path length on batch // path_batch_shrink (every loss.g_reg_every steps)
    EMA:     G_ema <- decay * G_ema + (1 - decay) * G      (decay = 0.5 ** (32 / 10000))

with ``gin = cat(real * (1 - mask), mask - 0.5)`` and ``completed = real * (1 - mask) +
G(gin) * mask`` (``models.exegan.make_gin`` / ``composite``, the one definition of each; the
composite keeps known pixels bit-exact). Steps are counted from 0 (R1 and path length also run at step 0); a checkpoint
"at step s" holds the state after s iterations and resumes with iteration s.

The loop owns data, DDP, phases, EMA, checkpoints and logging; the loss math is in losses/.
"""
from __future__ import annotations

import copy
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from common import seeding as rng
from common.diskfull import DiskFullError
from common.interrupts import raise_or_defer
from common.rundir import RunDirBusyError, RunDirLock, lock_run_dir, unlock_run_dir
from common.seeding import derive_rng
from datasets.augment import DiffAugment
from datasets.demo import make_demo_faces
from datasets.exemplars import TrainingPairing
from datasets.lmdb_dataset import open_dataset
from datasets.masks import batch_masks, make_mask_generator
from losses import GeneratorObjective, PathLengthRegularizer, d_logistic_loss, r1_loss
from metrics.evaluator import HIGHER_IS_BETTER
from models import Discriminator, Generator
from models.checkpoint import make_checkpoint, restore_rng_state
from models.exegan import composite, make_gin
from models.stylegan2 import get_modconv_impl, set_modconv_impl

from . import distributed as dist_utils
from . import pretrained
from .checkpointing import (CheckpointManager, load_training_checkpoint, remove_stale_temporaries,
                            run_dir_of)
from .config import Config, check_resume_model, ema_decay, lazy_ratio, sketch_addon
from .data import StepBatchSampler
from .errors import NonFiniteLossError, Terminated
from .evaluation import InLoopEvaluator
from .rundir import StatsWriter, close_logger, create_run_dir, setup_logger


@dataclass
class RunResult:
    run_dir: Optional[str]
    step: int                                 # iterations completed
    stopped_by: Optional[str] = None          # "SIGTERM" / "SIGINT" when interrupted
    last_stats: dict = field(default_factory=dict)
    evals: list = field(default_factory=list)  # [{"step", metrics...}, ...]
    trainer: Optional["Trainer"] = field(default=None, repr=False)  # networks/optimizers in memory


# torch.compile options of train.compile (tests set the "eager" backend: dynamo without codegen).
COMPILE_OPTIONS: dict = {}


def adam_impl(cfg: Config, device: torch.device) -> dict:
    """Adam's implementation flags: on CUDA the multi-tensor ("foreach") kernels, which is
    PyTorch's own default there, or the single fused kernel with train.fused_adam; the same
    update up to float rounding. On CPU PyTorch's default."""
    if device.type != "cuda":
        return {}
    return {"fused": True} if cfg.train.fused_adam else {"foreach": True}


@torch.no_grad()
def to_channels_last(module: torch.nn.Module) -> None:
    """Every 4-D parameter and buffer of ``module`` in NHWC layout, in place (the Parameter
    objects stay, so optimizers and DDP keep theirs). ``Module.to(memory_format=...)`` refuses
    the modulated convolutions' 5-D weights."""
    for t in list(module.parameters()) + list(module.buffers()):
        if t.ndim == 4:
            t.data = t.data.contiguous(memory_format=torch.channels_last)


def generator_kwargs(cfg: Config) -> dict:
    """The Generator's constructor arguments from the ``model`` section."""
    m = cfg.model
    return dict(size=m.size, style_dim=m.style_dim, n_mlp=m.n_mlp, channel_multiplier=m.channel_multiplier,
                channel_max=m.channel_max, lr_mlp=m.lr_mlp,
                exemplar_slots=tuple(m.exemplar_slots) if m.exemplar_slots else None)


def build_networks(cfg: Config, device, generator_cls=Generator) -> tuple:
    """(G, D) in train mode on ``device``, drawn from the current (seeded) torch RNG, G first."""
    m = cfg.model
    G = generator_cls(**generator_kwargs(cfg)).to(device)
    D = Discriminator(m.size, channel_multiplier=m.channel_multiplier, channel_max=m.channel_max).to(device)
    return G, D


def requires_grad(module: torch.nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------

def build_datasets(cfg: Config, is_main: bool, log):
    """(train set, test set): image folders or LMDB packs, opened by ``datasets.open_dataset`` as
    test.py opens ``--data``; the demo faces are generated on first use."""
    d = cfg.data
    if d.kind == "demo":
        root = d.demo_root
        if is_main:  # generated on first use, reused after (regenerated if the parameters change)
            log.info("demo faces: %s", root)
            make_demo_faces(root, d.demo_train, cfg.model.size, d.demo_seed, n_test=d.demo_test)
        dist_utils.barrier()
        train_root, test_root = os.path.join(root, "train"), os.path.join(root, "test")
    else:
        train_root, test_root = d.train, d.test
    # Flips are drawn by the loop from its per-step stream (resumable), not by the dataset.
    train = open_dataset(train_root, cfg.model.size, hflip=False)
    test = open_dataset(test_root, cfg.model.size, hflip=False) if test_root else None
    return train, test


def dataset_location(ds) -> str:
    """The folder or LMDB pack a dataset reads (ImageFolderDataset.root, LMDBDataset.path)."""
    return getattr(ds, "root", None) or getattr(ds, "path")


# ----------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------

class Trainer:
    """Networks, optimizers and the four phases of one iteration."""

    def __init__(self, cfg: Config, info: dist_utils.DistInfo, log, *, resuming: bool = False,
                 pretrained_factory=None):
        """``pretrained_factory(cfg, G, device, log) -> pretrained.Pretrained`` replaces
        ``pretrained.build`` (the frozen networks the losses use), e.g. for scripts/benchmark.py."""
        self.cfg, self.info, self.log = cfg, info, log
        self.device = device = info.device
        # training/sketch.py for a sketch fine-tune, else None (a plain run never imports it).
        self.sketch = sketch = sketch_addon(cfg)

        # Identical initial weights on every rank and in every resumed process (DDP would
        # broadcast rank 0's anyway; a resume overwrites them). A sketch fine-tune starts from
        # its base checkpoint instead (training/sketch.py), before the optimizers and DDP exist.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rng.derive_seed(cfg.train.seed, 0x6E))
            if sketch is not None:
                self.G, G_ema, self.D = sketch.build_networks(cfg, device, resuming=resuming, log=log)
            else:
                (self.G, self.D), G_ema = build_networks(cfg, device), None
        self.G_ema = G_ema if G_ema is not None else copy.deepcopy(self.G).eval()
        requires_grad(self.G_ema, False)

        self.pre = (pretrained_factory or pretrained.build)(cfg, self.G, device, log)
        self.objective = GeneratorObjective(cfg.loss, lpips=self.pre.lpips, id_net=self.pre.identity,
                                            style_encoder=self.pre.style_encoder).to(device)
        self.path_reg = PathLengthRegularizer(decay=cfg.loss.path_decay).to(device)
        self.mask_gen = make_mask_generator(dict(cfg.mask.options, kind=cfg.mask.kind))
        self.pairing = TrainingPairing(cfg.exemplar.self_prob, per_sample=cfg.exemplar.per_sample)

        # Lazy regularization: a regularizer every k steps -> c = k / (k + 1) on lr and betas.
        L, o = cfg.loss, cfg.optim
        self.do_r1 = L.r1_gamma > 0
        self.do_pl = L.path_weight > 0
        g_c = lazy_ratio(L.g_reg_every) if self.do_pl else 1.0
        d_c = lazy_ratio(L.d_reg_every) if self.do_r1 else 1.0
        self.adam_impl = adam_impl(cfg, device)
        self.g_optim = torch.optim.Adam(self.G.parameters(), lr=o.lr * g_c,
                                        betas=(o.beta1 ** g_c, o.beta2 ** g_c), **self.adam_impl)
        self.d_optim = torch.optim.Adam(self.D.parameters(), lr=(o.d_lr or o.lr) * d_c,
                                        betas=(o.beta1 ** d_c, o.beta2 ** d_c), **self.adam_impl)
        self.ema_decay = ema_decay(cfg)
        self._ema_pairs = None  # (G_ema params, G params, G_ema buffers, G buffers), built once

        # Opt-in NHWC layout: parameters now (DDP and the optimizers see the converted tensors),
        # images in prepare_step.
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        if cfg.train.channels_last:
            for net in (self.G, self.G_ema, self.D, self.pre.style_encoder):
                to_channels_last(net)

        self.G_ddp = dist_utils.wrap_ddp(self.G, info)
        self.D_ddp = dist_utils.wrap_ddp(self.D, info)
        # What the main phases call: the modules, or (train.compile) their torch.compile'd
        # forwards (same parameters; state dicts unchanged). R1 and path length differentiate
        # through a gradient, which compiled graphs do not support: they call the eager modules.
        self.run_G, self.run_G_ddp, self.run_D, self.run_D_ddp = self.G, self.G_ddp, self.D, self.D_ddp
        self.run_style_encoder = self.pre.style_encoder
        if cfg.train.compile:
            c = lambda m: torch.compile(m, **COMPILE_OPTIONS)  # noqa: E731
            self.run_G, self.run_D = c(self.G), c(self.D)
            self.run_G_ddp = self.run_G if self.G_ddp is self.G else c(self.G_ddp)
            self.run_D_ddp = self.run_D if self.D_ddp is self.D else c(self.D_ddp)
            self.run_style_encoder = c(self.pre.style_encoder)

        self.amp = cfg.train.amp == "bf16"
        self.diffaug = DiffAugment(cfg.train.diffaug_policy if cfg.train.diffaug else "")

    # -- per-step random draws ----------------------------------------------------------------
    def _keys(self, step: int, purpose: int, shared: bool = False):
        seed = self.cfg.train.seed
        return (seed, step, purpose) if shared else (seed, self.info.rank, step, purpose)

    def draw_masks(self, step: int, batch: int) -> torch.Tensor:
        g = derive_rng(*self._keys(step, rng.MASK))
        mask = batch_masks(self.mask_gen, batch, self.cfg.model.size, g,
                           per_sample=self.cfg.mask.per_sample)
        return self._to_device(mask)  # [B, 1, S, S], 1 = hole

    def draw_exemplars(self, step: int, real: torch.Tensor):
        """(exemplar [B,3,S,S], is_self bool [B]) from datasets.exemplars.TrainingPairing.

        The draw leaves out the rank: with the authors' once-per-batch choice every rank makes
        the same decision, so a multi-GPU step means what a single-GPU step means.
        """

        # TrainingPairing's draw, with the self flags kept on the host: the losses select the
        # self-exemplar samples by them, which on the device would be a synchronisation.
        idx, is_self = self.pairing.draw(real.shape[0], derive_rng(*self._keys(step, rng.EXEMPLAR, shared=True)))
        return real[self._to_device(idx)], is_self

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        """A host-drawn tensor on the training device without blocking the host (a blocking
        copy to the GPU is a synchronisation; a non-blocking one from pageable memory is safe)."""
        return t.to(self.device, non_blocking=True)

    def mixing_noise(self, batch: int, g: torch.Generator) -> list:
        """One z, or two with probability train.mixing (StyleGAN2 style mixing)."""
        dim = self.G.style_dim
        n = 2 if self.cfg.train.mixing > 0 and float(torch.rand((), generator=g)) < self.cfg.train.mixing else 1
        return [self._to_device(torch.randn(batch, dim, generator=g)) for _ in range(n)]

    def augment(self, x: torch.Tensor, g) -> torch.Tensor:
        """DiffAugment of a D input (identity when off); `g` is the step's numpy stream."""
        return self.diffaug(x, None, g)[0] if self.diffaug.enabled else x

    def _autocast(self):
        if self.amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return torch.autocast(device_type=self.device.type, enabled=False)

    # -- one iteration, phase by phase ------------------------------------------------------------
    # train_step runs the phases in this order; scripts/benchmark.py times each one on its own.
    def prepare_step(self, step: int, real: torch.Tensor) -> dict:
        """The step's draws (flips, masks, exemplars, z) and the exemplar's codes / identity
        features (once per iteration, no grad), as a dict the other phases read."""
        cfg = self.cfg
        rng.seed_globals(*self._keys(step, rng.GLOBAL))  # dropout, noise maps, mixing cut
        g_aug = derive_rng(*self._keys(step, rng.AUGMENT))      # flips + DiffAugment
        g_noise = rng.generator(*self._keys(step, rng.NOISE))

        real = real.to(self.device, non_blocking=True)          # [B, 3, S, S] in [-1, 1]
        real = real.contiguous(memory_format=self.memory_format)
        B = real.shape[0]
        if cfg.data.hflip:
            flip = self._to_device(torch.from_numpy(g_aug.random(B) < 0.5)).view(B, 1, 1, 1)
            real = torch.where(flip, real.flip(-1), real)
        mask = self.draw_masks(step, B)                          # [B, 1, S, S]
        exemplar, self_mask = self.draw_exemplars(step, real)
        with torch.no_grad():
            codes = self.run_style_encoder(exemplar)             # [B, n_exemplar, style_dim]
            ex_id = (self.objective.identity.exemplar_features(exemplar)
                     if self.objective.identity is not None else None)
        # [B, 4, S, S]; [B, 5, S, S] with the sketch channel of a sketch fine-tune
        if self.sketch is not None:
            gin = self.sketch.gin_with_edges(cfg, real, mask, derive_rng(*self._keys(step, rng.SKETCH)))
        else:
            gin = make_gin(real, mask)
        gin = gin.contiguous(memory_format=self.memory_format)
        styles = self.mixing_noise(B, g_noise)
        return dict(real=real, mask=mask, exemplar=exemplar, self_mask=self_mask, codes=codes,
                    ex_id=ex_id, gin=gin, styles=styles, g_aug=g_aug, g_noise=g_noise)

    def d_main_step(self, s: dict) -> dict:
        """D main: logistic loss on real vs completed."""
        real, mask, g_aug = s["real"], s["mask"], s["g_aug"]
        requires_grad(self.G, False)
        requires_grad(self.D, True)
        with torch.no_grad(), self._autocast():
            pred = self.run_G(s["gin"], s["codes"], s["styles"])  # unwrapped: no gradient, no DDP sync needed
        completed = composite(real, mask, pred.float()).detach()
        with self._autocast():
            fake_pred = self.run_D_ddp(self.augment(completed, g_aug)).float()
            real_pred = self.run_D_ddp(self.augment(real, g_aug)).float()
        d_loss = d_logistic_loss(real_pred, fake_pred)
        self.D.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optim.step()
        return dict(d_loss=d_loss.detach(), real_score=real_pred.detach().mean(),
                    fake_score=fake_pred.detach().mean())

    def r1_step(self, s: dict) -> dict:
        """D reg: lazy R1 (full precision: second-order gradients)."""
        L = self.cfg.loss
        real_r = s["real"].detach().requires_grad_(True)
        real_pred = self.D_ddp(self.augment(real_r, s["g_aug"]))
        r1_term, r1 = r1_loss(real_pred, real_r, L.r1_gamma, L.d_reg_every)
        self.D.zero_grad(set_to_none=True)
        r1_term.backward()
        self.d_optim.step()
        return {"r1": r1.detach()}

    def g_main_step(self, s: dict, *, reuse_exemplar: bool = True) -> dict:
        """G main: adversarial + attribute + identity + LPIPS. ``reuse_exemplar=False`` (the
        benchmark's baseline) lets the losses encode the exemplar again instead of reusing
        ``prepare_step``'s codes and identity features."""
        real, mask = s["real"], s["mask"]
        requires_grad(self.G, True)
        requires_grad(self.D, False)
        styles = self.mixing_noise(real.shape[0], s["g_noise"])  # fresh z for the G phase, as StyleGAN2
        with self._autocast():
            pred = self.run_G_ddp(s["gin"], s["codes"], styles).float()
        completed = composite(real, mask, pred)
        with self._autocast():
            # D is not trained here: the unwrapped module avoids a DDP reduction for D.
            fake_pred = self.run_D(self.augment(completed, s["g_aug"])).float()
        given = dict(exemplar_codes=s["codes"], exemplar_id=s["ex_id"]) if reuse_exemplar else {}
        g_loss, terms = self.objective(fake_pred, completed, real, s["exemplar"], mask, s["self_mask"],
                                       **given)
        self.G.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optim.step()
        return {f"g_{k}": v for k, v in terms.items()}

    def path_length_step(self, s: dict) -> dict:
        """G reg: lazy path length on a shrunk batch."""
        L = self.cfg.loss
        pb = max(1, s["real"].shape[0] // L.path_batch_shrink)
        styles_pl = self.mixing_noise(pb, s["g_noise"])
        # Path length of the raw generator output w.r.t. all n_latent w's, exemplar slots
        # included, as StyleGAN2 regularizes its synthesis network.
        fake_pl, w = self.G_ddp(s["gin"][:pb], s["codes"][:pb], styles_pl, return_latents=True)
        penalty, pl_mean, _ = self.path_reg(fake_pl, w)
        pl_term = PathLengthRegularizer.weighted(penalty, L.path_weight, L.g_reg_every, fake_img=fake_pl)
        self.G.zero_grad(set_to_none=True)
        pl_term.backward()
        self.g_optim.step()
        return dict(path_penalty=penalty.detach(), path_mean=pl_mean)

    def set_amp(self, bf16: bool) -> None:
        """Switch the main phases' bf16 autocast (``train.amp``) on a built trainer; the
        benchmark interleaves variants on one trainer with it (scripts/benchmark.py)."""
        self.amp = bool(bf16)

    def train_step(self, step: int, real: torch.Tensor, *, reuse_exemplar: bool = True) -> dict:
        L = self.cfg.loss
        s = self.prepare_step(step, real)
        stats = self.d_main_step(s)
        if self.do_r1 and step % L.d_reg_every == 0:
            stats.update(self.r1_step(s))
        stats.update(self.g_main_step(s, reuse_exemplar=reuse_exemplar))
        if self.do_pl and step % L.g_reg_every == 0:
            stats.update(self.path_length_step(s))
        requires_grad(self.G, False)
        self.update_ema()
        return stats

    @torch.no_grad()
    def update_ema(self) -> None:
        """G_ema <- d * G_ema + (1 - d) * G, buffers copied: a few multi-tensor kernels instead
        of three per parameter, with the same per-element arithmetic as
        ``p_ema.mul_(d).add_(p, alpha=1 - d)`` (so the same values; tests/training/test_loop.py)."""
        if self._ema_pairs is None:
            # The Parameter objects themselves: they stay valid if their data is replaced.
            self._ema_pairs = (list(self.G_ema.parameters()), list(self.G.parameters()),
                               list(self.G_ema.buffers()), list(self.G.buffers()))
        ema_p, p, ema_b, b = self._ema_pairs
        d = self.ema_decay
        torch._foreach_mul_(ema_p, d)
        torch._foreach_add_(ema_p, p, alpha=1 - d)
        if ema_b:
            torch._foreach_copy_(ema_b, b)

    # -- state ----------------------------------------------------------------------------------
    def gather_pl_mean(self) -> list:
        """Every rank's running path-length mean (each process keeps its own, as in StyleGAN2)."""
        mine = self.path_reg.mean_path_length.detach().reshape(1).float()
        if not dist_utils.is_enabled():
            return [float(mine)]
        out = [torch.zeros_like(mine) for _ in range(self.info.world_size)]
        torch.distributed.all_gather(out, mine)
        return [float(t) for t in out]

    def checkpoint(self, step: int, pl_mean: list, data_pos: dict, best) -> dict:
        return make_checkpoint(
            g=self.G, d=self.D, g_ema=self.G_ema, g_optim=self.g_optim, d_optim=self.d_optim,
            step=step, config=self.cfg.to_dict(), best_metric=best,
            pl_mean=[float(v) for v in pl_mean], data=data_pos,
            augment={"diffaug": self.cfg.train.diffaug, "policy": self.cfg.train.diffaug_policy},
            world_size=self.info.world_size)

    def load(self, ckpt: dict) -> None:
        self.G.load_state_dict(ckpt["g"])
        self.D.load_state_dict(ckpt["d"])
        self.G_ema.load_state_dict(ckpt["g_ema"])
        self.g_optim.load_state_dict(ckpt["g_optim"])
        self.d_optim.load_state_dict(ckpt["d_optim"])
        for group in self.g_optim.param_groups + self.d_optim.param_groups:
            group.update(self.adam_impl)  # this run's implementation, not the writer's
        pl = ckpt["pl_mean"]
        own = pl[self.info.rank] if len(pl) == self.info.world_size else sum(pl) / len(pl)
        self.path_reg.mean_path_length.fill_(own)
        if ckpt.get("rng") is not None:
            restore_rng_state(ckpt["rng"])


# ----------------------------------------------------------------------------------------------
# Signals
# ----------------------------------------------------------------------------------------------

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
    at the same step, see ``_Consensus``); with ``announce`` it also says so on the terminal at
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


class _StartupStop:
    """SIGTERM outside the training steps. Before the first step there is nothing to save, and
    start-up (demo faces, the stand-in encoder's training, the dataset scan, the step-0
    evaluation) can take minutes, longer than a scheduler waits after its SIGTERM: it ends the
    run at once (``Terminated``), and ``run`` cleans up and says what is left. After the steps the
    run is only writing its summary: the signal is ignored. The loop's ``StopFlag`` takes over in
    between and restores this handler after it."""

    def __init__(self, fresh: "_FreshRunDir"):
        self.fresh = fresh
        self._old = None

    def _handler(self, signum, frame):
        if not self.fresh.stepped:
            raise_or_defer(Terminated())

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False


# ----------------------------------------------------------------------------------------------
# Run
# ----------------------------------------------------------------------------------------------

def _is_due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT / SIGTERM to the training process: a Ctrl-C reaches the
    whole process group, and a worker that died of it would break the step being finished."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@dataclass
class _FreshRunDir:
    """The run directory of this session: removed again when a run this session created fails
    before its first training step (so a typo or an unreadable file leaves no empty
    runs/NNNNN-* behind); unlocked when the session ends."""
    path: Optional[str] = None             # set only when this session created the directory
    run_dir: Optional[str] = None          # the directory written, fresh or resumed
    made_outdir: Optional[str] = None      # log.outdir, when this session created it
    stepped: bool = False                  # a training step completed: keep everything
    closers: list = field(default_factory=list)
    lock: Optional[RunDirLock] = None

    def remove_if_unused(self) -> bool:
        """True when the directory was removed."""
        if self.path is None or self.stepped:
            return False
        import shutil

        for close in self.closers:
            try:
                close()
            except Exception:
                pass
        shutil.rmtree(self.path, ignore_errors=True)
        print(f"removed {self.path} (the run ended before its first step; nothing in it to keep)",
              file=sys.stderr)
        if self.made_outdir is not None:
            try:
                os.rmdir(self.made_outdir)  # only if empty
            except OSError:
                pass
        return True


def _interrupted(e: KeyboardInterrupt, fresh: _FreshRunDir, removed: bool) -> "TrainingAborted":
    """The one line of a run ended by a signal without a stop after a step: what stopped it and
    what is left, written after the run directory was (or was not) removed, so it never points
    at a directory that is gone."""
    if isinstance(e, Terminated):
        what = "stopped by SIGTERM before the first training step of this session"
    elif isinstance(e, TrainingAborted) and str(e):
        what = str(e)
    elif fresh.stepped:
        what = "interrupted by Ctrl-C while the run was finishing"
    else:
        what = "interrupted by Ctrl-C before the first training step of this session"
    run_dir = fresh.run_dir
    latest = os.path.join(run_dir, "checkpoints", "latest.pt") if run_dir else None
    if removed:
        kept = f"the run directory {run_dir} was removed (no training step had finished)"
    elif latest and os.path.isfile(latest):
        kept = f"the last checkpoint is {latest} (continue with: python train.py --resume {run_dir})"
    elif run_dir:
        kept = f"there is no checkpoint in {run_dir}"
    else:
        kept = "no run directory was created"
    out = TrainingAborted(f"{what}; nothing was saved, {kept}.")
    out.exit_status = getattr(e, "exit_status", 130)
    return out


def run(cfg: Config, resume: Optional[str] = None, *, stop_at: Optional[int] = None) -> RunResult:
    """Train according to `cfg`; with `resume` (a checkpoint file) continue that run.

    ``stop_at`` stops after that many completed iterations as if interrupted (checkpoint, exit),
    e.g. to split a run over time-limited jobs; the run continues with ``--resume``.
    """
    info = dist_utils.init(cfg.train.device, cfg.dist.backend, cfg.dist.timeout_min)
    modconv = get_modconv_impl()
    fresh = _FreshRunDir()
    try:
        with _StartupStop(fresh):
            return _run(cfg, info, resume, stop_at, fresh)
    except KeyboardInterrupt as e:
        close_logger()  # release log.txt before the directory goes
        removed = fresh.remove_if_unused()
        raise _interrupted(e, fresh, removed) from None
    except DiskFullError as e:  # a checkpoint, stats.jsonl, summary.json ...
        close_logger()
        removed = fresh.remove_if_unused()
        latest = os.path.join(fresh.run_dir, "checkpoints", "latest.pt") if fresh.run_dir else None
        if latest and not removed and os.path.isfile(latest):
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


def _run(cfg: Config, info: dist_utils.DistInfo, resume: Optional[str], stop_at: Optional[int],
         fresh: _FreshRunDir) -> RunResult:
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    set_modconv_impl(cfg.train.modconv)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False

    pretrained.check_files(cfg)  # before a run directory exists
    if not resume and sketch_addon(cfg) is not None:
        sketch_addon(cfg).check_base(cfg)
    # Run directory: fresh and numbered, or the resumed run's own.
    ckpt = load_training_checkpoint(resume) if resume else None
    if ckpt is not None:
        check_resume_model(cfg, ckpt.get("config"), resume)  # before anything is written
    run_dir, refusal = None, None
    if info.is_main:
        try:
            if resume:
                run_dir = fresh.run_dir = run_dir_of(resume) or create_run_dir(cfg.log.outdir, cfg.name)
            else:
                fresh.made_outdir = None if os.path.isdir(cfg.log.outdir) else cfg.log.outdir
                run_dir = fresh.path = fresh.run_dir = create_run_dir(cfg.log.outdir, cfg.name)
            fresh.lock = lock_run_dir(run_dir)  # one writer per run directory (rank 0 writes)
        except RunDirBusyError as e:
            refusal = str(e)
    # The other ranks learn of a refusal here instead of waiting for rank 0 until the timeout.
    run_dir, refusal = dist_utils.broadcast_object((run_dir, refusal))
    if refusal is not None:
        raise RunDirBusyError(refusal)
    log = setup_logger(run_dir if info.is_main else None, info.is_main)
    if info.is_main:
        stale = remove_stale_temporaries(os.path.join(run_dir, "checkpoints"))
        if stale:
            log.warning("removed %d temporary file(s) of checkpoint writes that never finished "
                        "(an earlier process was killed while saving), %.1f MB: %s", len(stale),
                        sum(size for _, size in stale) / 1e6, ", ".join(name for name, _ in stale))
        with open(os.path.join(run_dir, "config.yaml" if not resume else "config.resumed.yaml"), "w") as f:
            yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)

    start_step = int(ckpt["step"]) if ckpt else 0
    log.info("%s run %s at step %d (world size %d, device %s, per-process batch %d, global batch %d)",
             "resuming" if resume else "starting", run_dir, start_step, info.world_size,
             info.device, cfg.train.batch, cfg.train.batch * info.world_size)

    train_set, test_set = build_datasets(cfg, info.is_main, log)
    trainer = Trainer(cfg, info, log, resuming=ckpt is not None)
    best = None
    if ckpt:
        trainer.load(ckpt)
        best = ckpt.get("best_metric")
        if ckpt.get("world_size", info.world_size) != info.world_size:
            log.warning("the checkpoint was written by %d processes, this run has %d: data order and "
                        "per-rank noise differ from an uninterrupted run", ckpt["world_size"], info.world_size)
    del ckpt

    iters = cfg.train.iters
    sampler = StepBatchSampler(len(train_set), cfg.train.batch, info.world_size, info.rank,
                               cfg.train.seed, start_step, iters)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.data.num_workers,
                        pin_memory=info.device.type == "cuda", worker_init_fn=_ignore_stop_signals,
                        generator=torch.Generator().manual_seed(cfg.train.seed))
    ckpts = CheckpointManager(run_dir, cfg.train.keep_last) if info.is_main else None
    stats_w = StatsWriter(run_dir, info.is_main, cfg.log.tensorboard, purge_step=start_step if resume else None)
    fresh.closers.append(stats_w.close)

    if resume:
        # Rows after this step from the interrupted session stay in stats.jsonl (nothing is
        # deleted); this marker tells readers that the steps that follow replace them.
        stats_w.scalars(start_step, {"resumed_from": resume}, kind="resume")
    evaluator = InLoopEvaluator(cfg, test_set or train_set, trainer, info, log)
    result = RunResult(run_dir=run_dir, step=start_step, trainer=trainer)

    def save(step: int) -> None:
        pl_mean = trainer.gather_pl_mean()  # collective: every rank
        if info.is_main:
            state = trainer.checkpoint(step, pl_mean, sampler.position(step), best)
            path = ckpts.save(state, step)
            ckpts.export(trainer.G_ema.state_dict(), trainer.G_ema.kwargs, step, cfg.to_dict())
            log.info("saved %s", path)
        dist_utils.barrier()

    def evaluate(step: int) -> None:
        nonlocal best
        metrics = evaluator.evaluate(step)  # rank 0 computes; others get the numbers
        if metrics is None:
            return
        result.evals.append({"step": step, **metrics})
        stats_w.scalars(step, metrics, kind="eval")
        key = cfg.eval.best_metric
        improved = key in metrics and math.isfinite(metrics[key]) and (
            best is None or _better(key, metrics[key], best["value"]))
        if improved:
            best = {"metric": key, "value": float(metrics[key]), "step": step}
        save(step)
        if improved and info.is_main:
            ckpts.mark_best(step)
            log.info("new best %s = %.4f at step %d -> checkpoints/best.pt", key, metrics[key], step)

    pbar = tqdm(total=iters, initial=start_step, disable=not (info.is_main and cfg.log.progress),
                dynamic_ncols=True, smoothing=0.05, unit="it")
    acc: dict = {}
    counts: dict = {}
    t_log, n_log = time.perf_counter(), 0
    step = start_step
    if start_step == 0 and cfg.eval.at_start and cfg.eval.every > 0:
        evaluate(0)
    last_samples = None
    if start_step == 0 and cfg.log.sample_every > 0:
        last_samples = evaluator.save_samples(0, stats_w)

    consensus = _Consensus(cfg.log.log_every)
    d_mean = g_mean = float("nan")
    try:
        with StopFlag(announce=info.is_main) as stop:
            data_iter = iter(loader)
            while step < iters:
                real = next(data_iter)
                stats = trainer.train_step(step, real)
                step += 1
                n_log += 1
                fresh.stepped = True

                stop_at_reached = stop_at is not None and step >= stop_at
                stop_requested = _stop_code(stop.signal, stop_at_reached)
                consensus.add(step, stats)
                stopping = None
                # Read the device only where the loop has to decide, the same steps on every
                # rank (_Consensus): a log step, a step that saves / evaluates / samples, the
                # last step, stop_at; a signal at once only without DDP.
                if consensus.due(step, stop_at_reached or (stop.signal is not None and not dist_utils.is_enabled())
                                 or step == iters or _is_due(step, cfg.eval.every)
                                 or _is_due(step, cfg.train.ckpt_every) or _is_due(step, cfg.log.sample_every)):
                    d_mean, g_mean, first_bad, stopping = consensus.read(stop_requested)
                    if first_bad is not None:
                        bad = sorted(k for k, v in stats.items() if not torch.isfinite(v).all())
                        latest = os.path.join(run_dir, "checkpoints", "latest.pt")
                        detail = [", ".join(bad), "on another rank" if not bad and first_bad == step else "",
                                  f"seen at step {step}" if first_bad != step else ""]
                        raise NonFiniteLossError(
                            f"Non-finite loss at step {first_bad} ({'; '.join(d for d in detail if d)}); "
                            f"the run stopped without saving this state, the last good checkpoint is {latest} "
                            f"(lower optim.lr or turn off train.amp, then --resume).")
                for k, v in stats.items():
                    acc[k] = acc.get(k, 0.0) + v.float()
                    counts[k] = counts.get(k, 0) + 1
                pbar.update(1)
                if info.is_main and cfg.log.progress:
                    img_s = n_log * cfg.train.batch * info.world_size / max(time.perf_counter() - t_log, 1e-9)
                    pbar.set_postfix(d=f"{d_mean:.3f}", g=f"{g_mean:.3f}", img_s=f"{img_s:.1f}",
                                     refresh=False)

                if _is_due(step, cfg.log.log_every) or step == iters:
                    means = dist_utils.reduce_dict({k: acc[k] / counts[k] for k in acc}, info.device)
                    dt = time.perf_counter() - t_log
                    means["images_per_s"] = n_log * cfg.train.batch * info.world_size / max(dt, 1e-9)
                    means["sec_per_it"] = dt / max(n_log, 1)
                    stats_w.scalars(step, means)
                    log.info("step %d  %s", step, "  ".join(f"{k} {v:.4g}" for k, v in sorted(means.items())))
                    result.last_stats = means
                    acc, counts, t_log, n_log = {}, {}, time.perf_counter(), 0
                if _is_due(step, cfg.log.sample_every) or (step == iters and cfg.log.sample_every > 0):
                    last_samples = evaluator.save_samples(step, stats_w)
                if _is_due(step, cfg.eval.every) or (step == iters and cfg.eval.every > 0):
                    evaluate(step)  # saves a checkpoint at this step too
                elif _is_due(step, cfg.train.ckpt_every) or step == iters:
                    save(step)

                if stopping and step < iters:
                    if not (_is_due(step, cfg.eval.every) or _is_due(step, cfg.train.ckpt_every)):
                        save(step)
                    result.stopped_by = stopping  # the same on every rank
                    log.info("stopped at step %d (%s); continue with: python train.py --resume %s",
                             step, result.stopped_by, run_dir)
                    break
    except TrainingAborted:
        # run() adds what is left, once it knows whether the run directory stays.
        raise TrainingAborted(f"aborted by a second Ctrl-C during step {step + 1}") from None
    finally:
        pbar.close()
        stats_w.close()
    result.step = step
    if info.is_main:
        standin_psp = None
        if "style encoder" in trainer.pre.random:
            # So that scripts/inpaint.py --psp / test.py can run this run's models with the encoder
            # it was trained with (seeded: the same file on a resume). Written with the summary, at
            # the end of a session, so the periodic checkpoint writes stay the only saves in a run.
            standin_psp = pretrained.save_standin_style_encoder(
                trainer.pre.style_encoder, os.path.join(run_dir, "checkpoints", pretrained.STANDIN_PSP_FILE))
        _write_summary(run_dir, result, last_samples, dataset_location(train_set),
                       dataset_location(test_set or train_set), standin_psp)
    if step >= iters:
        log.info("finished %d iterations; run directory %s", step, run_dir)
    return result


def _write_summary(run_dir: str, result: RunResult, last_samples: Optional[str], train_root: str,
                   test_root: str, standin_psp: Optional[str] = None) -> None:
    """summary.json: where things are and the first / last evaluation (for scripts and humans).

    On resume the evaluations of the earlier sessions are read back from stats.jsonl.
    """

    evals = []
    with open(os.path.join(run_dir, "stats.jsonl"), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row.get("kind") == "eval":
                evals.append({k: v for k, v in row.items() if k != "kind"})
    ck = os.path.join(run_dir, "checkpoints")
    summary = {
        "run_dir": run_dir, "step": result.step, "stopped_by": result.stopped_by,
        "train_data": train_root, "test_data": test_root,
        "latest_checkpoint": os.path.join(ck, "latest.pt"), "export": os.path.join(ck, "export.pt"),
        "best_checkpoint": os.path.join(ck, "best.pt") if os.path.exists(os.path.join(ck, "best.pt")) else None,
        "final_samples": last_samples, "first_eval": evals[0] if evals else None,
        "last_eval": evals[-1] if evals else None, "last_train_stats": result.last_stats,
        # pretrained.allow_random only: the random stand-in pSp encoder in the pSp file layout
        # (for scripts/inpaint.py --psp and test.py on this run's models); null otherwise.
        "standin_psp": standin_psp,
    }
    tmp = os.path.join(run_dir, ".summary.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    os.replace(tmp, os.path.join(run_dir, "summary.json"))


# Stop requests as numbers for one max-reduction over ranks (the largest wins on every rank).
_STOP_CODES = {0: None, 1: "stop_at", 2: "SIGINT", 3: "SIGTERM"}


def _stop_code(signal_name: Optional[str], stop_at_reached: bool) -> int:
    if signal_name is not None:
        return {v: k for k, v in _STOP_CODES.items()}[signal_name]
    return 1 if stop_at_reached else 0


class _Consensus:
    """What every rank must agree on after a step, read from the device only where needed.

    Per step, ``add`` folds the step's losses into device tensors (no host read): whether any
    loss was non-finite since the last read, the first such step, the last d / g losses.
    ``read`` (one collective, one device -> host read: ``_host_read``) returns (mean d loss, mean
    g loss over ranks, the first step with a non-finite loss on any rank or None, why the run
    stops: None or "SIGTERM" / "SIGINT" / "stop_at" when any rank was asked to). The loop reads
    every ``every`` steps (log.log_every; 100 when logging is off) and at the steps where it must
    decide anyway: before a checkpoint, an evaluation or samples (so a non-finite state is never
    saved), at the last step and at stop_at. All of these are the same steps on every rank, so
    all ranks stop at the same step for the same reason. The delay this buys: a non-finite loss
    is reported up to ``every - 1`` steps after it happened (naming its step), and under DDP a
    signal stops the run at the next read step, up to ``every - 1`` steps later (without DDP, at
    once). The GPU queue is drained there and nowhere else.
    """

    def __init__(self, every: int):
        self.every = every if every > 0 else 100
        self.bad = self.first_bad = self.last = None

    def add(self, step: int, stats: dict) -> None:
        total = sum(v.detach().float() for v in stats.values())
        bad = ~torch.isfinite(total)
        at = torch.where(bad, float(step), float("inf"))
        if self.bad is None:
            self.bad, self.first_bad = bad, at
        else:
            self.first_bad = torch.minimum(self.first_bad, at)
            self.bad = self.bad | bad
        self.last = (stats["d_loss"].detach().float(), stats["g_total"].detach().float())

    def due(self, step: int, forced: bool) -> bool:
        return forced or step % self.every == 0

    def read(self, stop_code: int) -> tuple:
        d, g = self.last
        flags = torch.stack([d.reshape(()), g.reshape(()), -self.first_bad.reshape(()),
                             torch.tensor(float(stop_code), device=d.device)])
        if dist_utils.is_enabled():
            # max of -first = -(earliest step any rank saw a non-finite loss)
            flags = torch.cat([dist_utils.reduce_mean(flags[:2]), dist_utils.reduce_max(flags[2:])])
        d, g, neg_first, stop = _host_read(flags)
        self.bad = self.first_bad = None
        first = None if math.isinf(neg_first) else int(-neg_first)
        return d, g, first, _STOP_CODES[int(round(stop))]


def _host_read(flags: torch.Tensor) -> list:
    """The training loop's one device -> host read of its step flags (tests count the calls)."""
    return flags.cpu().tolist()


def _better(metric: str, new: float, old: float) -> bool:
    return new > old if metric in HIGHER_IS_BETTER else new < old
