"""The in-training evaluation (not test.py's): sample grids and periodic metrics on G_ema.

test.py's command line is the ``evaluation/`` package; both run the shared evaluation core,
``metrics/eval_loop.py``, so the loop's numbers are test.py's numbers for the same protocol.

Sample grids (shown at >= 128 px per image: smaller images are zoomed with nearest neighbour)
use a fixed set of test images with fixed, seeded masks (the ``eval.mask`` protocol),
the batch reversed as exemplars and a fixed z, so grids of different steps are comparable; the
generator's stored noise maps are used (``randomize_noise=False``).

Metrics go through ``metrics.eval_loop.evaluate`` and ``metrics.Evaluator``, the code ``test.py``
runs, on the first ``eval.n_images`` test images with masks, z and noise fixed by ``eval.seed``:
the Evaluator's metrics plus ``l1_hole`` / ``psnr_hole`` (the hole pixels only). Rank 0
evaluates; the other ranks wait and receive the numbers.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from common import seeding
from common.errors import UserError, sentence
from datasets.errors import ProtocolError
from datasets.protocols import as_pairing, make_mask_protocol
from metrics.eval_loop import build_evaluator, evaluate
from metrics.results import summary_means
from models.exegan import composite, make_gin

from . import distributed as dist_utils
from .outputs import sample_grid, save_grid


class InLoopEvaluator:
    """Sample grids and metrics of ``trainer.G_ema``. ``sketch``: the sketch add-on the Trainer
    chose (``Trainer.sketch``, the module training/sketch.py) or None for a plain run."""

    def __init__(self, cfg, test_set, trainer, info, log, *, sketch=None):
        self.cfg, self.test_set, self.trainer, self.info, self.log = cfg, test_set, trainer, info, log
        self.sketch = sketch
        self._samples = None
        self._metrics = None
        # Rank 0 checks; the others learn of a refusal here instead of waiting for rank 0 at
        # the first step's collectives until the timeout.
        problem = None
        if info.is_main:
            try:
                self.check()
            except UserError as e:
                problem = e
        refusal = dist_utils.broadcast_object(None if problem is None else sentence(problem))
        if problem is not None:
            raise problem
        if refusal is not None:
            raise ProtocolError(refusal)

    def check(self) -> None:
        """Build the eval.mask protocol and the eval.exemplar pairing against the test images
        now, so that a missing mask folder or unpaired file fails before the first step, not at
        the first evaluation thousands of steps later."""
        cfg = self.cfg
        n = max(cfg.log.n_samples if cfg.log.sample_every > 0 else 0,
                cfg.eval.n_images if cfg.eval.every > 0 else 0)
        n = min(n, len(self.test_set))
        if n == 0:
            return
        names = list(getattr(self.test_set, "names", [f"{i:06d}.png" for i in range(n)]))[:n]
        paths = getattr(self.test_set, "paths", None)
        protocol = make_mask_protocol(cfg.eval.mask, cfg.eval.mask_dir)
        protocol.check(names, cfg.model.size, list(paths)[:n] if paths is not None else None)
        if cfg.eval.every > 0 and cfg.eval.exemplar == "folder":
            as_pairing(("folder", cfg.eval.exemplar_folder), cfg.model.size).folder_for(
                cfg.model.size).check(names)

    # -- sample grids -----------------------------------------------------------------------------
    def _sample_inputs(self):
        if self._samples is None:
            cfg = self.cfg
            n = min(cfg.log.n_samples, len(self.test_set))
            real = torch.stack([self.test_set[i] for i in range(n)])
            protocol = make_mask_protocol(cfg.eval.mask, cfg.eval.mask_dir)
            names = list(getattr(self.test_set, "names", [f"{i:06d}.png" for i in range(n)]))[:n]
            # Their own stream key: not the evaluation's masks, z or noise (eval.seed's streams).
            mask, _ = protocol.masks(protocol.buckets[0], list(range(n)), names, cfg.model.size,
                                     seeding.derive_seed(cfg.eval.seed, seeding.SAMPLE_GRID_KEY, 0))
            g = seeding.generator(cfg.eval.seed, seeding.SAMPLE_GRID_KEY, 1)
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
        addon = self.sketch
        # with a sketch: the edges, never dropped
        gin = make_gin(real, mask) if addon is None else addon.gin_with_edges(self.cfg, real, mask)
        pred = G_ema(gin, codes, [z], randomize_noise=False)
        completed = composite(real, mask, pred)
        grid = sample_grid(real, mask, exemplar, completed).cpu()
        k = max(1, 128 // self.cfg.model.size)  # small (demo) images: nearest-neighbour zoom to view
        if k > 1:
            grid = torch.nn.functional.interpolate(grid[None], scale_factor=k, mode="nearest")[0]
        path = os.path.join(stats_w.run_dir, "samples", f"step-{step:07d}.png")
        save_grid(grid, path)
        stats_w.image(step, "samples/input_mask_exemplar_output_gt", grid)
        return path

    # -- metrics ----------------------------------------------------------------------------------
    def _build_metrics(self):
        """metrics.Evaluator with the networks of eval.metrics, built as test.py builds them
        (random stand-ins seeded from train.seed when pretrained.allow_random)."""
        cfg = self.cfg
        rand = cfg.pretrained.allow_random
        ev, random_used = build_evaluator(
            cfg.eval.metrics, self.info.device, allow_random=rand, seed=cfg.train.seed,
            inception=None if rand else cfg.pretrained.inception,
            lpips_vgg=None if rand else cfg.loss.lpips_vgg_path,
            inception_key="pretrained.inception", lpips_key="loss.lpips_vgg_path")
        if random_used:
            self.log.warning("EVALUATION USES RANDOM STAND-INS (%s): these metric values are "
                             "meaningless.", ", ".join(random_used))
        return ev

    def _compute(self) -> dict:
        cfg = self.cfg
        if self._metrics is None:
            self._metrics = self._build_metrics()
        exemplars = ("folder", cfg.eval.exemplar_folder) if cfg.eval.exemplar == "folder" else cfg.eval.exemplar
        addon = self.sketch
        model = (self.trainer.G_ema, self.trainer.pre.style_encoder)
        if addon is not None:
            model = addon.eval_model(cfg, *model)
        result = evaluate(model, self.test_set,
                          masks=make_mask_protocol(cfg.eval.mask, cfg.eval.mask_dir),
                          exemplars=exemplars, evaluator=self._metrics,
                          n_images=min(cfg.eval.n_images, len(self.test_set)),
                          batch=cfg.eval.batch, seed=cfg.eval.seed)
        return {k: float(v) for k, v in summary_means(result).items()}

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
