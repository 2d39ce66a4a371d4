"""The EXE-GAN training step (Lu et al., Neurocomputing 2025; docs/architecture.md draws one step).

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
composite keeps known pixels bit-exact). Steps are counted from 0 (R1 and path length also run
at step 0); a checkpoint "at step s" holds the state after s iterations and resumes with
iteration s. The run around the steps (directories, checkpoints, evaluation) is
``training/run.py``; the loss math is in losses/.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from common import seeding as rng
from common.seeding import derive_rng
from datasets.augment import DiffAugment
from datasets.exemplars import TrainingPairing
from datasets.masks import batch_masks, make_mask_generator
from losses import GeneratorObjective, PathLengthRegularizer, d_logistic_loss, r1_loss
from models.exegan import composite, make_gin

from . import distributed as dist_utils
from . import pretrained
from .builders import adam_impl, build_networks, requires_grad, set_memory_format
from .config import Config, ema_decay, lazy_ratio
from .timing import PhaseTimer

# torch.compile options of train.compile (tests set the "eager" backend: dynamo without codegen).
COMPILE_OPTIONS: dict = {}


def sketch_addon(cfg: Config):
    """The module ``training.sketch`` when ``cfg.sketch.enabled``, else None. The Trainer calls
    it once and hands the result on (``Trainer.sketch``)."""
    if not cfg.sketch.enabled:
        return None
    from . import sketch  # optional add-on: a plain run never imports it (nor models/sketch.py)
    return sketch


@dataclass
class StepInputs:
    """What ``prepare_step`` draws for one iteration and every phase reads."""
    real: torch.Tensor                  # [B, 3, S, S] in [-1, 1], flipped where drawn
    mask: torch.Tensor                  # [B, 1, S, S], 1 = hole
    exemplar: torch.Tensor              # [B, 3, S, S]
    self_mask: torch.Tensor             # [B] bool, on the host: the exemplar is the image itself
    codes: torch.Tensor                 # [B, n_exemplar, style_dim], no grad
    ex_id: Optional[torch.Tensor]       # [B, D] identity features of the exemplar (None: no id loss)
    gin: torch.Tensor                   # [B, 4, S, S] (5 with the sketch channel)
    styles: list                        # one or two z [B, style_dim] of the D phase
    g_aug: np.random.Generator          # the step's stream for flips and DiffAugment
    g_noise: torch.Generator            # the step's stream for z


class Trainer:
    """Networks, optimizers and the four phases of one iteration."""

    def __init__(self, cfg: Config, info: dist_utils.DistInfo, log, *, resuming: bool = False,
                 base: Optional[dict] = None):
        """``base``: a sketch fine-tune's base checkpoint, already read (else it is read here)."""
        self.cfg, self.info, self.log = cfg, info, log
        self.device = device = info.device
        # training/sketch.py for a sketch fine-tune, else None (a plain run never imports it);
        # chosen here, once, and handed to the evaluator and the sample grids.
        self.sketch = sketch = sketch_addon(cfg)
        self.timer = PhaseTimer(device, cfg.train.time_phases)

        # Identical initial weights on every rank and in every resumed process (DDP would
        # broadcast rank 0's anyway; a resume overwrites them). A sketch fine-tune starts from
        # its base checkpoint instead (training/sketch.py), before the optimizers and DDP exist.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rng.derive_seed(cfg.train.seed, rng.INITIAL_WEIGHTS_KEY))
            if sketch is not None:
                self.G, G_ema, self.D = sketch.build_networks(cfg, device, resuming=resuming, log=log,
                                                              base=base)
            else:
                (self.G, self.D), G_ema = build_networks(cfg, device), None
        self.G_ema = G_ema if G_ema is not None else copy.deepcopy(self.G).eval()
        requires_grad(self.G_ema, False)

        self.pre = pretrained.build(cfg, self.G, device, log)
        self.objective = GeneratorObjective(cfg.loss, lpips=self.pre.lpips, id_net=self.pre.identity,
                                            style_encoder=self.pre.style_encoder).to(device)
        self.path_reg = PathLengthRegularizer(decay=cfg.loss.path_decay).to(device)
        self.mask_gen = make_mask_generator(dict(cfg.mask.options, kind=cfg.mask.kind))
        self.pairing = TrainingPairing(cfg.exemplar.self_prob, per_sample=cfg.exemplar.per_sample)

        self._build_optimizers()
        self.ema_decay = ema_decay(cfg)
        self._ema_pairs = None  # (G_ema params, G params, G_ema buffers, G buffers), built once

        # Opt-in NHWC layout: parameters now (DDP and the optimizers see the converted tensors),
        # images in prepare_step.
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        if cfg.train.channels_last:
            for net in (self.G, self.G_ema, self.D, self.pre.style_encoder):
                set_memory_format(net, torch.channels_last)
        self._wrap_for_the_phases()
        self.amp = cfg.train.amp == "bf16"
        self.diffaug = DiffAugment(cfg.train.diffaug_policy if cfg.train.diffaug else "")

    def _build_optimizers(self) -> None:
        """Adam for G and D. Lazy regularization: a regularizer every k steps -> c = k / (k + 1)
        on lr and betas."""
        L, o = self.cfg.loss, self.cfg.optim
        self.do_r1 = L.r1_gamma > 0
        self.do_pl = L.path_weight > 0
        g_c = lazy_ratio(L.g_reg_every) if self.do_pl else 1.0
        d_c = lazy_ratio(L.d_reg_every) if self.do_r1 else 1.0
        self.adam_impl = adam_impl(self.cfg, self.device)
        self.g_optim = torch.optim.Adam(self.G.parameters(), lr=o.lr * g_c,
                                        betas=(o.beta1 ** g_c, o.beta2 ** g_c), **self.adam_impl)
        self.d_optim = torch.optim.Adam(self.D.parameters(), lr=(o.d_lr or o.lr) * d_c,
                                        betas=(o.beta1 ** d_c, o.beta2 ** d_c), **self.adam_impl)

    def _wrap_for_the_phases(self) -> None:
        """DDP wrappers, and what the main phases call: the modules, or (train.compile) their
        torch.compile'd forwards (same parameters; state dicts unchanged). R1 and path length
        differentiate through a gradient, which compiled graphs do not support: they call the
        eager modules."""
        self.G_ddp = dist_utils.wrap_ddp(self.G, self.info)
        self.D_ddp = dist_utils.wrap_ddp(self.D, self.info)
        self.run_G, self.run_G_ddp, self.run_D, self.run_D_ddp = self.G, self.G_ddp, self.D, self.D_ddp
        self.run_style_encoder = self.pre.style_encoder
        if self.cfg.train.compile:
            c = lambda m: torch.compile(m, **COMPILE_OPTIONS)  # noqa: E731
            self.run_G, self.run_D = c(self.G), c(self.D)
            self.run_G_ddp = self.run_G if self.G_ddp is self.G else c(self.G_ddp)
            self.run_D_ddp = self.run_D if self.D_ddp is self.D else c(self.D_ddp)
            self.run_style_encoder = c(self.pre.style_encoder)

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
    # train_step runs the phases in this order; with train.time_phases each one is timed.
    def prepare_step(self, step: int, real: torch.Tensor) -> StepInputs:
        """The step's draws (flips, masks, exemplars, z) and the exemplar's codes / identity
        features (once per iteration, no grad), which the other phases read."""
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
        return StepInputs(real=real, mask=mask, exemplar=exemplar, self_mask=self_mask, codes=codes,
                          ex_id=ex_id, gin=gin, styles=styles, g_aug=g_aug, g_noise=g_noise)

    def d_main_step(self, s: StepInputs) -> dict:
        """D main: logistic loss on real vs completed."""
        real, mask, g_aug = s.real, s.mask, s.g_aug
        requires_grad(self.G, False)
        requires_grad(self.D, True)
        with torch.no_grad(), self._autocast():
            pred = self.run_G(s.gin, s.codes, s.styles)  # unwrapped: no gradient, no DDP sync needed
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

    def r1_step(self, s: StepInputs) -> dict:
        """D reg: lazy R1 (full precision: second-order gradients)."""
        L = self.cfg.loss
        real_r = s.real.detach().requires_grad_(True)
        real_pred = self.D_ddp(self.augment(real_r, s.g_aug))
        r1_term, r1 = r1_loss(real_pred, real_r, L.r1_gamma, L.d_reg_every)
        self.D.zero_grad(set_to_none=True)
        r1_term.backward()
        self.d_optim.step()
        return {"r1": r1.detach()}

    def g_main_step(self, s: StepInputs) -> dict:
        """G main: adversarial + attribute + identity + LPIPS, with ``prepare_step``'s exemplar
        codes and identity features (the losses do not encode the exemplar again)."""
        real, mask = s.real, s.mask
        requires_grad(self.G, True)
        requires_grad(self.D, False)
        styles = self.mixing_noise(real.shape[0], s.g_noise)  # fresh z for the G phase, as StyleGAN2
        with self._autocast():
            pred = self.run_G_ddp(s.gin, s.codes, styles).float()
        completed = composite(real, mask, pred)
        with self._autocast():
            # D is not trained here: the unwrapped module avoids a DDP reduction for D.
            fake_pred = self.run_D(self.augment(completed, s.g_aug)).float()
        g_loss, terms = self.objective(fake_pred, completed, real, s.exemplar, mask, s.self_mask,
                                       exemplar_codes=s.codes, exemplar_id=s.ex_id)
        self.G.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optim.step()
        return {f"g_{k}": v for k, v in terms.items()}

    def path_length_step(self, s: StepInputs) -> dict:
        """G reg: lazy path length on a shrunk batch."""
        L = self.cfg.loss
        pb = max(1, s.real.shape[0] // L.path_batch_shrink)
        styles_pl = self.mixing_noise(pb, s.g_noise)
        # Path length of the raw generator output w.r.t. all n_latent w's, exemplar slots
        # included, as StyleGAN2 regularizes its synthesis network.
        fake_pl, w = self.G_ddp(s.gin[:pb], s.codes[:pb], styles_pl, return_latents=True)
        penalty, pl_mean, _ = self.path_reg(fake_pl, w)
        pl_term = PathLengthRegularizer.weighted(penalty, L.path_weight, L.g_reg_every, fake_img=fake_pl)
        self.G.zero_grad(set_to_none=True)
        pl_term.backward()
        self.g_optim.step()
        return dict(path_penalty=penalty.detach(), path_mean=pl_mean)

    def train_step(self, step: int, real: torch.Tensor) -> dict:
        """One iteration: the phases in order, each under ``self.timer`` (a no-op unless
        ``train.time_phases``); returns the step's losses as device tensors."""
        L, t = self.cfg.loss, self.timer
        with t.phase("iteration"):
            with t.phase("prep"):
                s = self.prepare_step(step, real)
            with t.phase("d_main"):
                stats = self.d_main_step(s)
            if self.do_r1 and step % L.d_reg_every == 0:
                with t.phase("d_reg"):
                    stats.update(self.r1_step(s))
            with t.phase("g_main"):
                stats.update(self.g_main_step(s))
            if self.do_pl and step % L.g_reg_every == 0:
                with t.phase("g_reg"):
                    stats.update(self.path_length_step(s))
            requires_grad(self.G, False)
            with t.phase("ema"):
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
