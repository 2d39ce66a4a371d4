"""The tiled upfirdn2d kernel's self-check at first use (op/_selfcheck.py), on a machine without a
GPU: the compiled extension's CPU emulation of the tiled kernel's whole grid stands in for the
device (op/csrc/ops.cpp). A correct tile is picked; a wrong one (an injected halo offset, or an
error) falls back to the general kernel with one warning and gives the general kernel's values;
DDP ranks (gloo processes) reach the same verdicts. Skipped only without a CUDA toolkit."""
import logging
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import op
from op import _impl, _loader, _selfcheck

pytestmark = pytest.mark.skipif(_loader.find_cuda_home() is None,
                                reason='no CUDA toolkit (nvcc) on this machine')

K1 = torch.tensor([1.0, 3, 3, 1])
K4 = K1[:, None] * K1[None, :] / 64
# The networks' three cases: blur (case 0), ToRGB up 2 (case 1), down 2 (case 2).
CALLS = [(K4, dict(pad=(2, 1))), (K4 * 4, dict(up=2, pad=(2, 1))), (K4, dict(down=2, pad=(1, 1)))]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='module')
def module():
    return _loader.build()[0]


class Recording:
    """The real extension, recording the kernel (tile argument) of every call; ``wrong_case``
    shifts that tiled case's input by one sample (a halo off by one: wrong values, right shape),
    ``failing_case`` makes it raise."""

    def __init__(self, module, wrong_case=None, failing_case=None):
        self.module, self.wrong_case, self.failing_case = module, wrong_case, failing_case
        self.upfirdn2d_tiled_plan = module.upfirdn2d_tiled_plan
        self.fused_bias_act = module.fused_bias_act
        self.tiles = []

    def upfirdn2d(self, x, k, ux, uy, dx, dy, px0, px1, py0, py1, tile):
        self.tiles.append(tile)
        if tile >= 0 and tile == self.failing_case:
            raise RuntimeError('CUDA error: an illegal memory access was encountered')
        if tile >= 0 and tile == self.wrong_case:
            px0, px1 = px0 + 1, px1 - 1
        return self.module.upfirdn2d(x, k, ux, uy, dx, dy, px0, px1, py0, py1, tile)


def _run_all(ext, monkeypatch, kernel):
    """Forward and gradient of the three cases through op.upfirdn2d with ``ext``."""
    monkeypatch.setattr(_impl, 'cuda_extension', lambda *t: ext)
    op.set_upfirdn2d_kernel(kernel)
    g = torch.Generator().manual_seed(3)
    out = []
    for k, args in CALLS:
        x = torch.randn(2, 3, 37, 35, generator=g).requires_grad_()
        y = op.upfirdn2d(x, k, **args)
        (gx,) = torch.autograd.grad((y * y).sum(), x)
        out += [y.detach(), gx]
    return out


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_a_correct_tile_is_picked(module, monkeypatch):
    ext = Recording(module)
    log, handler = logging.getLogger('exegan.train.ops'), _Lines()
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)  # setLevel, not the attribute: it clears the logger's cache
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error')  # no warning
            auto = _run_all(ext, monkeypatch, 'auto')
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    # One line per verdict in the run's log (logger exegan.train.ops, under exegan.train).
    assert len(handler.lines) == 3 and all('passed' in line for line in handler.lines)
    verdicts = _selfcheck.verdicts()
    assert {(v['case'], v['dtype'], v['passed'], v['device']) for v in verdicts} == {
        (c, 'float32', True, 'cpu') for c in (0, 1, 2)}
    ext.tiles.clear()
    again = _run_all(ext, monkeypatch, 'auto')
    assert sorted(set(ext.tiles)) == [0, 1, 2]  # every call of these cases ran tiled
    general = _run_all(Recording(module), monkeypatch, 'general')
    for a, b, c in zip(auto, again, general):
        assert torch.equal(a, b) and torch.equal(a, c)  # bit for bit (docs/ops.md)


@pytest.mark.parametrize('how', ['wrong', 'failing'])
def test_a_wrong_tile_falls_back_warns_once_and_gives_the_general_result(module, monkeypatch,
                                                                         how):
    ext = Recording(module, **{f'{how}_case': 1})  # up 2
    with pytest.warns(RuntimeWarning) as record:
        got = _run_all(ext, monkeypatch, 'auto')
        got2 = _run_all(ext, monkeypatch, 'auto')  # cached: no second warning
    messages = [str(w.message) for w in record if 'self-check' in str(w.message)]
    assert len(messages) == 1, messages
    detail = 'max error' if how == 'wrong' else 'illegal memory access'
    assert 'up 2' in messages[0] and 'cpu' in messages[0] and detail in messages[0]
    passed = {v['case']: v['passed'] for v in _selfcheck.verdicts()}
    assert passed == {0: True, 1: False, 2: True}
    # Up 2 (and down 2, its gradient, which needs the up 2 verdict too) ran the general
    # kernel; the blur stayed tiled.
    ext.tiles.clear()
    _run_all(ext, monkeypatch, 'auto')
    assert 1 not in ext.tiles and 0 in ext.tiles
    general = _run_all(Recording(module), monkeypatch, 'general')
    for a, b, c in zip(got, got2, general):
        assert torch.equal(a, c) and torch.equal(b, c)
    # The debugging switch still forces the (here wrong) tile: the check is what protects.
    forced = _run_all(Recording(module, wrong_case=1), monkeypatch, 'tiled')
    assert not torch.equal(forced[2], general[2])


def test_the_check_covers_the_dtype_in_use_and_runs_once(module, monkeypatch):
    ext = Recording(module)
    monkeypatch.setattr(_impl, 'cuda_extension', lambda *t: ext)
    x = torch.randn(1, 2, 9, 9, dtype=torch.float64)
    op.upfirdn2d(x, K4.double(), up=2, pad=(2, 1))
    op.upfirdn2d(x, K4.double(), up=2, pad=(2, 1))
    keys = sorted((v['case'], v['dtype']) for v in _selfcheck.verdicts())
    # The case and the case of its gradient, in float32 and in the dtype in use, once each.
    assert keys == [(1, 'float32'), (1, 'float64'), (2, 'float32'), (2, 'float64')]


def test_tolerance_scales_with_the_data_and_catches_a_wrong_tap():
    """2 * taps * eps * max|value| (+ the output's rounding): a term of a typical sum is far
    larger, a float32 rounding error far smaller."""
    tol = _selfcheck.tolerance(torch.float32, 16, 5.0)
    assert 1e-6 < tol < 1e-4
    assert _selfcheck.tolerance(torch.float32, 16, 50.0) == pytest.approx(10 * tol)
    assert _selfcheck.tolerance(torch.bfloat16, 16, 5.0) < 0.2


GLOO_WORKER = textwrap.dedent('''
    import os, sys, torch, torch.distributed as dist
    sys.path.insert(0, os.environ['REPO'])
    sys.path.insert(0, os.path.join(os.environ['REPO'], 'tests', 'op'))
    from op import _loader, _selfcheck
    from test_selfcheck import Recording
    rank = int(sys.argv[1])
    dist.init_process_group('gloo', init_method='file://' + sys.argv[2], rank=rank, world_size=2)
    ext = Recording(_loader.build()[0], wrong_case=2)
    cpu = torch.device('cpu')
    mine = [_selfcheck.tile_for(ext, cpu, dt, 4, 4, u, u, d, d)
            for dt in (torch.float32, torch.float64) for u, d in ((1, 1), (2, 1), (1, 2))]
    mine.append(sorted((v['case'], v['dtype'], v['passed'], v['error']) for v in _selfcheck.verdicts()))
    every = [None, None]
    dist.all_gather_object(every, mine)
    if rank == 0:
        print(repr(every))
    dist.destroy_process_group()
''')


def test_ddp_ranks_reach_the_same_verdicts_without_a_collective(tmp_path):
    """Two gloo processes, each with its own self-check (seeded by the case only): the same
    choices and verdicts, errors included, on both ranks."""
    worker = tmp_path / 'worker.py'
    worker.write_text(GLOO_WORKER)
    env = dict(os.environ, REPO=REPO, OMP_NUM_THREADS='1')
    store = str(tmp_path / 'store')
    procs = [subprocess.Popen([sys.executable, str(worker), str(r), store], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    rank0, rank1 = eval(outs[0][0].strip().splitlines()[-1])
    assert rank0 == rank1
    # Down 2 was wrong (injected on both ranks): it and up 2 (whose gradient it is) run the
    # general kernel; the blur runs tiled.
    assert rank0[:6] == [0, -1, -1, 0, -1, -1]
    assert any(not passed and case == 2 for case, _, passed, _ in rank0[6])
