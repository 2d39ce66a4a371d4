"""Implementation switch (auto | cuda | ref, EXEGAN_OPS) and the loader's logic that needs no
compiler: dispatch, fallback warning, failure caching, cache key, build environment."""
import os
import subprocess
import sys
import types
import warnings

import pytest
import torch

import op
from op import _impl, _loader
from op.fused_act import fused_bias_act_ref
from op.upfirdn2d import upfirdn2d_ref


class _FakeCudaTensor:
    """Stands in for a CUDA tensor in dispatch decisions (no GPU needed)."""
    is_cuda = True


# ---- the switch ------------------------------------------------------------------------------

def test_set_impl_and_env_var(monkeypatch):
    monkeypatch.delenv(_impl.ENV_VAR, raising=False)
    assert op.get_impl() == 'auto'
    monkeypatch.setenv(_impl.ENV_VAR, 'REF')
    assert op.get_impl() == 'ref'
    op.set_impl('cuda')  # an explicit choice (e.g. from a config) beats the environment
    assert op.get_impl() == 'cuda'
    op.set_impl(None)
    assert op.get_impl() == 'ref'
    with pytest.raises(op.OpImplError, match='not one of'):
        op.set_impl('fast')
    monkeypatch.setenv(_impl.ENV_VAR, 'gpu')
    with pytest.raises(op.OpImplError, match='EXEGAN_OPS'):
        op.get_impl()


def _case_plan(n, h, w, kh, kw, ux, uy, dx, dy, *pads):
    """Stand-in for the extension's upfirdn2d_tiled_plan: the case of these parameters."""
    cases = {(1, 1): 0, (2, 1): 1, (1, 2): 2}
    ok = (kh, kw) == (4, 4) and ux == uy and dx == dy
    return [cases.get((ux, dx), -1) if ok else -1]


def test_upfirdn2d_kernel_switch_and_env_var(monkeypatch, emulated_ext):
    monkeypatch.delenv(_impl.KERNEL_ENV_VAR, raising=False)
    assert op.get_upfirdn2d_kernel() == 'auto'  # the self-checked tiled kernel is the default
    monkeypatch.setenv(_impl.KERNEL_ENV_VAR, ' Tiled ')
    assert op.get_upfirdn2d_kernel() == 'tiled'
    op.set_upfirdn2d_kernel('general')
    assert op.get_upfirdn2d_kernel() == 'general'
    op.set_upfirdn2d_kernel(None)
    assert op.get_upfirdn2d_kernel() == 'tiled'
    with pytest.raises(op.OpImplError, match='not one of'):
        op.set_upfirdn2d_kernel('default')
    monkeypatch.setenv(_impl.KERNEL_ENV_VAR, 'smem')
    with pytest.raises(op.OpImplError, match='EXEGAN_UPFIRDN2D_KERNEL'):
        op.get_upfirdn2d_kernel()
    # The switch picks the kernel the extension runs, forward (up 2: case 1) and backward (its
    # adjoint, down 2: case 2); 'auto' runs the self-check first (on 3 planes, not recorded).
    calls = []

    def upfirdn2d(x, k, *params):
        if x.shape[0] == 2:
            calls.append(params[-1])
        return emulated_ext.upfirdn2d(x, k, *params[:-1])

    ext = types.SimpleNamespace(upfirdn2d=upfirdn2d, upfirdn2d_tiled_plan=_case_plan)
    monkeypatch.setattr(_impl, 'cuda_extension', lambda *t: ext)
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    for kernel, want in (('tiled', [1, 2]), ('general', [-1, -1]), ('auto', [1, 2])):
        calls.clear()
        op.set_upfirdn2d_kernel(kernel)
        op.upfirdn2d(x, torch.ones(4, 4), up=2, pad=(2, 1)).sum().backward()
        assert calls == want, kernel
    # A kernel the tiled code is not specialised for runs the general kernel under any switch.
    calls.clear()
    op.upfirdn2d(x, torch.ones(3, 3), up=2, pad=(2, 1))
    assert calls == [-1]


def test_cpu_tensors_always_take_the_reference(monkeypatch):
    def no_loader(*a, **k):
        raise AssertionError('the loader must not be reached for CPU tensors')
    monkeypatch.setattr(_loader, 'load_extension', no_loader)
    op.set_impl('cuda')
    x = torch.randn(1, 2, 5, 5)
    k = torch.ones(3, 3)
    torch.testing.assert_close(op.upfirdn2d(x, k, up=2, pad=(1, 1)),
                               upfirdn2d_ref(x, k, up=2, pad=(1, 1)))
    torch.testing.assert_close(op.fused_leaky_relu(x, torch.ones(2)),
                               fused_bias_act_ref(x, torch.ones(2)))


def test_dispatch_modes_for_cuda_tensors(monkeypatch):
    sentinel = object()
    calls = []

    def failing_loader(name=_loader.EXTENSION):
        calls.append(name)
        raise _loader.OpBuildError('compiler exploded; log in /x/build.log')

    monkeypatch.setattr(_impl, '_warned', [])
    monkeypatch.setattr(_loader, 'load_extension', lambda name=None: sentinel)
    for impl, want in (('ref', None), ('cuda', sentinel), ('auto', sentinel)):
        op.set_impl(impl)
        assert _impl.cuda_extension(_FakeCudaTensor()) is want
        assert _impl.cuda_extension(None, _FakeCudaTensor()) is want  # any CUDA argument counts

    monkeypatch.setattr(_loader, 'load_extension', failing_loader)
    op.set_impl('cuda')
    with pytest.raises(_loader.OpBuildError, match='build.log'):
        _impl.cuda_extension(_FakeCudaTensor())
    op.set_impl('auto')
    with pytest.warns(RuntimeWarning, match='compiler exploded'):
        assert _impl.cuda_extension(_FakeCudaTensor()) is None
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # only one warning per process
        assert _impl.cuda_extension(_FakeCudaTensor()) is None


def test_ops_route_through_the_extension_when_dispatch_returns_one(monkeypatch, emulated_ext):
    """The public functions hand their parsed arguments to the extension correctly (pads order,
    (x, y) factors, separable kernels, default gain)."""
    monkeypatch.setattr(_impl, 'cuda_extension', lambda *tensors: emulated_ext)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, generator=g)
    for k in (torch.randn(3, 2, dtype=torch.float64, generator=g),
              torch.randn(4, dtype=torch.float64, generator=g)):
        for up, down, pad in ((2, 1, (2, 1)), ((2, 1), (1, 2), (1, -1, 2, 0))):
            torch.testing.assert_close(op.upfirdn2d(x, k, up, down, pad),
                                       upfirdn2d_ref(x, k, up, down, pad))
    b = torch.randn(3, dtype=torch.float64, generator=g)
    torch.testing.assert_close(op.fused_bias_act(x, b), fused_bias_act_ref(x, b))
    torch.testing.assert_close(op.fused_bias_act(x, None, act='linear', gain=3.0),
                               fused_bias_act_ref(x, None, act='linear', gain=3.0))


def test_import_never_compiles():
    code = ("import sys, torch, op; x = torch.randn(1, 2, 4, 4);"
            "op.upfirdn2d(x, torch.ones(2, 2), up=2); op.fused_leaky_relu(x);"
            "assert 'op._loader' not in sys.modules, 'loader imported';"
            "assert 'torch.utils.cpp_extension' not in sys.modules, 'cpp_extension imported'")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    res = subprocess.run([sys.executable, '-c', code], cwd=root, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# ---- loader logic ------------------------------------------------------------------------------

def test_load_extension_caches_a_failure(monkeypatch):
    calls = []

    def failing_build(name=_loader.EXTENSION):
        calls.append(name)
        raise _loader.OpBuildError('boom')

    monkeypatch.setattr(_loader, '_loaded', {})
    monkeypatch.setattr(_loader, 'build', failing_build)
    for _ in range(3):
        with pytest.raises(_loader.OpBuildError, match='boom'):
            _loader.load_extension()
    assert len(calls) == 1  # auto mode must not recompile on every call


def test_build_key_tracks_sources_gpu_and_arch(tmp_path, monkeypatch):
    for f in _loader.SOURCES[_loader.EXTENSION] + _loader.HEADERS:
        with open(os.path.join(_loader.CSRC, f), 'rb') as src:
            (tmp_path / f).write_bytes(src.read())
    key = _loader.build_key(csrc=str(tmp_path), arch_list='9.0')
    assert key == _loader.build_key(csrc=_loader.CSRC, arch_list='9.0')  # content, not path
    assert key != _loader.build_key(csrc=str(tmp_path), arch_list='8.0')
    header = tmp_path / 'upfirdn2d.h'
    header.write_bytes(header.read_bytes() + b'\n// edited\n')
    assert key != _loader.build_key(csrc=str(tmp_path), arch_list='9.0')
    monkeypatch.setattr(_loader, 'gpu_tag', lambda: 'NVIDIA Imaginary sm_99')
    assert key != _loader.build_key(csrc=_loader.CSRC, arch_list='9.0')


def test_find_cuda_home_sees_through_an_nvcc_wrapper(tmp_path, monkeypatch):
    """A wrapper script's parent folder is not a toolkit; the root it execs is."""
    toolkit = tmp_path / 'cuda-99.0'
    (toolkit / 'bin').mkdir(parents=True)
    (toolkit / 'include').mkdir()
    (toolkit / 'bin' / 'nvcc').write_text('binary')
    (toolkit / 'include' / 'cuda_runtime.h').write_text('')
    wrapper_dir = tmp_path / 'wrapbin'
    wrapper_dir.mkdir()
    wrapper = wrapper_dir / 'nvcc'
    wrapper.write_text(f'#!/bin/sh\nexec {toolkit}/bin/nvcc "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.delenv('CUDA_HOME', raising=False)
    monkeypatch.delenv('CUDA_PATH', raising=False)
    monkeypatch.setenv('PATH', str(wrapper_dir))
    assert _loader.find_cuda_home() == os.path.realpath(toolkit)
    monkeypatch.setenv('CUDA_HOME', str(tmp_path))  # not a toolkit: ignored
    assert _loader.find_cuda_home() == os.path.realpath(toolkit)


def test_prepare_build_env_on_a_copy():
    env = {'PATH': os.environ.get('PATH', ''), 'CPATH': '/already/there'}
    changed = _loader.prepare_build_env(env)
    if not torch.cuda.is_available():
        assert env['TORCH_CUDA_ARCH_LIST'] == _loader.DEFAULT_ARCH
    assert env['CPATH'].split(os.pathsep)[0] == '/already/there'  # user settings come first
    for inc in _loader.nvidia_include_dirs():
        assert inc in env['CPATH'].split(os.pathsep)
    if _loader.find_cuda_home():
        assert os.path.isfile(os.path.join(env['CUDA_HOME'], 'include', 'cuda_runtime.h'))
    assert set(changed) <= {'CUDA_HOME', 'TORCH_CUDA_ARCH_LIST', 'CPATH', 'PATH'}
    again = dict(env)
    assert _loader.prepare_build_env(again) == {} and again == env  # idempotent


def test_using_impl_restores_the_previous_selection(monkeypatch):
    monkeypatch.setenv(_impl.ENV_VAR, 'cuda')
    op.set_impl(None)
    with op.using_impl('ref'):
        assert op.get_impl() == 'ref'
    assert op.get_impl() == 'cuda' and _impl._override is None  # the environment decides again
    op.set_impl('auto')
    with pytest.raises(RuntimeError), op.using_impl('ref'):
        raise RuntimeError('inside')
    assert op.get_impl() == 'auto'
    with pytest.raises(op.OpImplError):
        with op.using_impl('fast'):
            pass
    assert op.get_impl() == 'auto'
    op.set_impl(None)
