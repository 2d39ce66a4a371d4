"""The training loop's speed options and per-step overhead: multi-tensor EMA equal to the
per-parameter formula, train.compile without recompiles and with eager's results,
train.channels_last, the Adam implementation flags, and (on a GPU only) no host synchronisation
inside train_step.

What a CPU can show about synchronisations is limited: a CPU tensor never waits for a device.
The CPU tests check the pieces that make the step sync-free (self flags kept on the host, the
mixing cut kept a tensor); the CUDA test runs a whole step under
``torch.cuda.set_sync_debug_mode('error')``, which turns any synchronisation into an error.
"""
import logging

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from training import distributed as dist_utils
from common import seeding
from training import trainer as trainer_mod
from training.builders import adam_impl
from training.trainer import Trainer
from trainutil import tiny_config


def _trainer(face_dirs, tmp_path, device="cpu", **train):
    cfg = tiny_config(face_dirs, tmp_path, train=dict(train, device=device))
    info = dist_utils.DistInfo(device=torch.device(device)) if device != "cpu" else dist_utils.DistInfo()
    return Trainer(cfg, info, logging.getLogger("test"))


def _batch(seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(4, 3, 16, 16, generator=g) * 2 - 1).to(device)


def test_ema_update_equals_the_per_parameter_formula(face_dirs, tmp_path):
    t = _trainer(face_dirs, tmp_path)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in list(t.G.parameters()) + list(t.G.buffers()):
            p.add_(torch.randn(p.shape, generator=g))
    want_p = [p.clone() for p in t.G_ema.parameters()]
    d = t.ema_decay
    for p_ema, p in zip(want_p, t.G.parameters()):
        p_ema.mul_(d).add_(p.detach(), alpha=1 - d)  # the formula the loop used before
    for _ in range(2):  # the second call reuses the cached tensor lists
        t.update_ema()
        for a, b in zip(t.G_ema.parameters(), want_p):
            assert torch.equal(a, b)
        for a, b in zip(t.G_ema.buffers(), t.G.buffers()):
            assert torch.equal(a, b)
        for p_ema, p in zip(want_p, t.G.parameters()):
            p_ema.mul_(d).add_(p.detach(), alpha=1 - d)


def test_adam_implementation_flags(face_dirs, tmp_path):
    cfg = tiny_config(face_dirs, tmp_path)
    assert adam_impl(cfg, torch.device("cpu")) == {}  # PyTorch's default on CPU
    assert adam_impl(cfg, torch.device("cuda")) == {"foreach": True}
    cfg.train.fused_adam = True
    assert adam_impl(cfg, torch.device("cuda")) == {"fused": True}


def test_self_flags_stay_on_the_host(face_dirs, tmp_path):
    """The losses select the self-exemplar samples with them; on the device that selection
    (nonzero) would wait for the GPU every step."""
    t = _trainer(face_dirs, tmp_path)
    real = _batch()
    for step in range(4):
        exemplar, is_self = t.draw_exemplars(step, real)
        ex2, is_self2 = t.pairing(real, seeding.derive_rng(*t._keys(step, seeding.EXEMPLAR, shared=True)))
        assert torch.equal(exemplar, ex2) and torch.equal(is_self, is_self2.cpu())
        assert is_self.device.type == "cpu" and is_self.dtype == torch.bool


def _stats(t, steps, seed=0):
    out = []
    for step in steps:
        out.append({k: v.detach().clone() for k, v in t.train_step(step, _batch(seed + step)).items()})
    return out


def test_compiled_training_steps_do_not_recompile_and_equal_eager(face_dirs, tmp_path, monkeypatch):
    """train.compile with dynamo's 'eager' backend (its tracing and guards, without code
    generation): after the first steps have seen every phase, further steps with new data of
    the same shape compile nothing, and the losses equal those of an uncompiled trainer."""
    monkeypatch.setattr(trainer_mod, "COMPILE_OPTIONS", {"backend": "eager", "fullgraph": True})
    torch._dynamo.reset()
    counters.clear()
    try:
        # mixing 0: one z per forward (two z's are a second graph of G, compiled once as well)
        eager = _trainer(face_dirs, tmp_path / "a", mixing=0.0)
        compiled = _trainer(face_dirs, tmp_path / "b", mixing=0.0, compile=True)
        assert compiled.run_G is not compiled.G and compiled.run_D is not compiled.D
        want = _stats(eager, range(6))
        got = _stats(compiled, range(2))  # step 0: R1 and path length too (eager modules)
        graphs = counters["stats"]["unique_graphs"]
        assert graphs >= 3  # G, D, style encoder
        with torch._dynamo.config.patch(error_on_recompile=True):
            got += _stats(compiled, range(2, 6))
        assert counters["stats"]["unique_graphs"] == graphs
        for a, b in zip(got, want):
            assert a.keys() == b.keys()
            for k in a:
                torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
        # Same parameters: the compiled forwards train the modules the checkpoints save.
        for (n, p), q in zip(compiled.G.named_parameters(), eager.G.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=n)
    finally:
        torch._dynamo.reset()


def test_channels_last_keeps_the_layout_and_the_losses(face_dirs, tmp_path):
    nchw = _trainer(face_dirs, tmp_path / "a", modconv="batched")
    nhwc = _trainer(face_dirs, tmp_path / "b", modconv="batched", channels_last=True)
    for net in (nhwc.G, nhwc.D, nhwc.G_ema):
        for p in net.parameters():
            if p.ndim == 4 and p.shape[2] > 1:
                assert p.is_contiguous(memory_format=torch.channels_last)
    s = nhwc.prepare_step(0, _batch())
    assert s.real.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(_stats(nhwc, range(2)), _stats(nchw, range(2))):
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_train_step_has_no_host_synchronisation_on_cuda(face_dirs, tmp_path):
    """Every phase of a step (R1 and path length included) under sync debug mode 'error'."""
    t = _trainer(face_dirs, tmp_path, device="cuda")
    t.train_step(1, _batch(1))  # warm-up: cuDNN / allocator set-up may synchronise once
    real = _batch(0).pin_memory()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        stats = t.train_step(0, real)  # step 0: every phase
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert "r1" in stats and "path_penalty" in stats
    assert all(torch.isfinite(v).all() for v in stats.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_multi_tensor_ema_equals_the_per_parameter_formula_on_cuda():
    """The multi-tensor kernels must round like the per-parameter ones on the GPU too (the same
    values, not just close ones: G_ema is what every evaluation and export uses)."""
    g = torch.Generator().manual_seed(3)
    shapes = [(512, 512, 3, 3), (1, 3, 512, 1, 1), (512,), (3,), (1,)]
    ema = [torch.randn(s, generator=g).cuda() for s in shapes]
    cur = [torch.randn(s, generator=g).cuda() for s in shapes]
    d = 0.5 ** (32 / 10000)
    want = [e.clone().mul_(d).add_(p, alpha=1 - d) for e, p in zip(ema, cur)]
    torch._foreach_mul_(ema, d)
    torch._foreach_add_(ema, cur, alpha=1 - d)
    for a, b in zip(ema, want):
        assert torch.equal(a, b)
