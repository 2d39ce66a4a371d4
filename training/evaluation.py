"""Evaluation inside the training loop: sample grids and periodic metrics on G_ema.

Sample grids use a fixed set of test images with fixed, seeded masks (the ``eval.mask`` protocol),
the batch reversed as exemplars and a fixed z, so grids of different steps are comparable; the
generator's stored noise maps are used (``randomize_noise=False``).

Metrics go through ``metrics.evaluator``, the same code ``test.py`` runs, on ``eval.n_images``
test images with masks and exemplars fixed by ``eval.seed``. Rank 0 evaluates; the other ranks
wait at a barrier and receive the numbers.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from . import distributed as dist_utils
from .rundir import sample_grid, save_grid

SAMPLE_KEY = 0x5A  # seed-stream key of the sample-grid masks and z


class InLoopEvaluator:
    def __init__(self, cfg, test_set, trainer, info, log):
        self.cfg, self.test_set, self.trainer, self.info, self.log = cfg, test_set, trainer, info, log
        self._samples = None
        self._metrics = None

    # -- sample grids -----------------------------------------------------------------------------
    def _sample_inputs(self):
        if self._samples is None:
            from datasets.masks import batch_masks, make_mask_generator
            from datasets.rng import derive_rng

            n = min(self.cfg.log.n_samples, len(self.test_set))
            real = torch.stack([self.test_set[i] for i in range(n)])
            gen = make_mask_generator(self.cfg.eval.mask)
            mask = batch_masks(gen, n, self.cfg.model.size, derive_rng(self.cfg.eval.seed, SAMPLE_KEY))
            g = torch.Generator().manual_seed(self.cfg.eval.seed)
            z = torch.randn(n, self.trainer.G.style_dim, generator=g)
            self._samples = (real, mask, real.flip(0), z)
        return self._samples

    @torch.no_grad()
    def save_samples(self, step: int, stats_w) -> Optional[str]:
        """Write samples/step-<step>.png (rank 0) and the TensorBoard image."""
        if not self.info.is_main:
            return None
        dev = self.info.device
        real, mask, exemplar, z = (t.to(dev) for t in self._sample_inputs())
        G_ema, E = self.trainer.G_ema, self.trainer.pre.style_encoder
        codes = E(exemplar)
        gin = torch.cat([real * (1 - mask), mask - 0.5], 1)
        pred = G_ema(gin, codes, [z], randomize_noise=False)
        completed = real * (1 - mask) + pred * mask
        grid = sample_grid(real, mask, exemplar, completed).cpu()
        path = os.path.join(stats_w.run_dir, "samples", f"step-{step:07d}.png")
        save_grid(grid, path)
        stats_w.image(step, "samples/input_mask_exemplar_output_gt", grid)
        return path

    # -- metrics ----------------------------------------------------------------------------------
    def _build_metrics(self):
        """metrics.Evaluator with the networks its metric list needs (built once, reused)."""
        from metrics.evaluator import Evaluator

        cfg, dev = self.cfg, self.info.device
        names = tuple(cfg.eval.metrics)
        inception = lp = None
        if "fid" in names or "ids" in names:
            if cfg.pretrained.allow_random:
                from metrics.inception import FIDInceptionV3
                from .pretrained import _seeded
                from . import rng
                self.log.warning("FID/IDS use a RANDOMLY INITIALISED Inception (pretrained.allow_random): "
                                 "their values are meaningless.")
                with _seeded(rng.derive_seed(cfg.train.seed, 0x1C)):
                    inception = FIDInceptionV3().eval().requires_grad_(False)
            else:
                from metrics.inception import load_inception
                inception = load_inception(cfg.pretrained.inception, dev, config_key="pretrained.inception")
        if "lpips" in names:
            lp = self.trainer.pre.lpips  # the loss network when there is one: one VGG in memory
            if lp is None:
                if cfg.pretrained.allow_random:
                    from .pretrained import standin_lpips
                    lp = standin_lpips(cfg.train.seed, dev)
                else:
                    from losses.perceptual import load_lpips
                    lp = load_lpips(cfg.loss.lpips_vgg_path, allow_random_backbone=cfg.loss.allow_random_backbone,
                                    device=dev)
        return Evaluator(inception, lp, names, dev)

    def _eval_batches(self):
        """Fixed evaluation inputs: (real, mask, exemplar, z) per batch, on the CPU."""
        from datasets.exemplars import EvalPairing
        from datasets.masks import batch_masks, make_mask_generator
        from datasets.rng import derive_rng

        cfg = self.cfg
        n = min(cfg.eval.n_images, len(self.test_set))
        gen = make_mask_generator(cfg.eval.mask)
        pairing = EvalPairing(cfg.eval.exemplar, folder=cfg.eval.exemplar_folder, size=cfg.model.size)
        names = getattr(self.test_set, "names", None)
        for k, start in enumerate(range(0, n, cfg.eval.batch)):
            idx = list(range(start, min(n, start + cfg.eval.batch)))
            real = torch.stack([self.test_set[i] for i in idx])
            mask = batch_masks(gen, len(idx), cfg.model.size, derive_rng(cfg.eval.seed, k))
            exemplar = pairing(real, [names[i] for i in idx] if names is not None else None)
            z = torch.randn(len(idx), self.trainer.G.style_dim,
                            generator=torch.Generator().manual_seed(cfg.eval.seed * 100003 + k))
            yield real, mask, exemplar, z

    @torch.no_grad()
    def _compute(self) -> dict:
        from metrics.image_metrics import quantize_8bit, to_unit

        if self._metrics is None:
            self._metrics = self._build_metrics()
        ev = self._metrics
        ev.reset()
        dev = self.info.device
        G_ema, E = self.trainer.G_ema, self.trainer.pre.style_encoder
        hole_abs, hole_sq, hole_px = [], [], []
        for real, mask, exemplar, z in self._eval_batches():
            real, mask, exemplar, z = real.to(dev), mask.to(dev), exemplar.to(dev), z.to(dev)
            gin = torch.cat([real * (1 - mask), mask - 0.5], 1)
            pred = G_ema(gin, E(exemplar), [z], randomize_noise=False)
            completed = real * (1 - mask) + pred.float() * mask
            ev.update(completed.clamp(-1, 1), real)
            # Hole-only L1 / PSNR, on the same 8-bit [0, 1] scale as the Evaluator's numbers.
            diff = to_unit(quantize_8bit(completed)) - to_unit(quantize_8bit(real))  # [B,3,H,W]
            m = mask.to(diff.dtype)
            hole_abs.append((diff.abs() * m).flatten(1).sum(1))
            hole_sq.append((diff.pow(2) * m).flatten(1).sum(1))
            hole_px.append(m.flatten(1).sum(1) * 3)
        res = {k: float(v) for k, v in ev.compute().items()}
        px = torch.cat(hole_px).clamp_min(1)
        res["l1_hole"] = float((torch.cat(hole_abs) / px).mean())
        res["psnr_hole"] = float((10 * torch.log10(px / torch.cat(hole_sq))).mean())
        return res

    def evaluate(self, step: int) -> Optional[dict]:
        """Metrics of G_ema at `step` (computed on rank 0, returned on every rank)."""
        if self.cfg.eval.every <= 0:
            return None
        res = None
        if self.info.is_main:
            self.log.info("evaluating G_ema at step %d on %d test images", step,
                          min(self.cfg.eval.n_images, len(self.test_set)))
            res = self._compute()
            self.log.info("eval step %d  %s", step, "  ".join(f"{k} {v:.4g}" for k, v in res.items()))
        return dist_utils.broadcast_object(res)
