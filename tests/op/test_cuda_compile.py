"""The CUDA sources compile, link and load through the real loader, on a machine without a GPU.

CI runs this on every change, so a broken kernel fails CI even where no GPU exists. The build
goes through op._loader.build (environment fixes, cache key, temp dir, atomic publish) into the
loader's normal cache root (``$EXEGAN_OP_CACHE`` or ``.op_cache/``). The cache key is a hash of
the sources, so any edited kernel is compiled again (a fresh clone always compiles); only a
successful build of identical sources with the same toolchain is reused, which keeps repeated
local test runs fast. The compiled extension also runs the kernels' own per-element functions
on CPU tensors (op/csrc/ops.cpp), so this module checks the kernels' indexing and arithmetic
against the reference and drives the CUDA path's autograd wiring with the real compiled code.
Skipped only when no CUDA toolkit (nvcc) is installed.
"""
import itertools
import json
import os
import subprocess
import sys

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from op import _loader
from op.fused_act import fused_bias_act_ext, fused_bias_act_ref
from op.upfirdn2d import upfirdn2d_ext, upfirdn2d_ref

pytestmark = pytest.mark.skipif(_loader.find_cuda_home() is None,
                                reason='no CUDA toolkit (nvcc) on this machine')


@pytest.fixture(scope='module')
def built():
    """One build (or cache hit) of the extension for the whole module."""
    root = _loader.cache_root()
    module, build_dir, did_build = _loader.build(root=root)
    return root, module, build_dir, did_build


def test_builds_and_publishes_atomically(built):
    root, module, build_dir, _ = built
    assert hasattr(module, 'upfirdn2d') and hasattr(module, 'fused_bias_act')
    assert os.path.dirname(build_dir) == root
    assert os.path.basename(build_dir) == f'ops-{_loader.build_key()[:20]}'
    meta = os.path.join(build_dir, 'extension.json')
    assert os.path.isfile(meta)
    with open(meta) as f:
        assert os.path.isfile(os.path.join(build_dir, json.load(f)['file']))


def test_a_later_process_loads_the_published_copy_without_compiling(built):
    root, _, build_dir, _ = built
    code = ("import sys; from op import _loader; m, d, did = _loader.build(root=sys.argv[1]);"
            "print(did, d, m.__file__, hasattr(m, 'upfirdn2d'))")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    res = subprocess.run([sys.executable, '-c', code, str(root)], cwd=repo, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    did, d, file, ok = res.stdout.split()
    assert did == 'False' and d == build_dir and ok == 'True'
    assert os.path.dirname(file) == build_dir


def _xy(v):
    return (v, v) if isinstance(v, int) else v


def test_upfirdn2d_kernel_math_equals_reference(built):
    module = built[1]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 5, 7, dtype=torch.float64, generator=g)
    for up, down, pad, kshape in itertools.product(
            [1, 2, 4, (2, 1)], [1, 2, (1, 3)], [(0, 0), (2, 1), (-1, 2), (1, -2, 3, 0)],
            [(3, 4), (1, 1), (5,), (2, 3)]):
        k = torch.randn(*kshape, dtype=torch.float64, generator=g)
        pads = pad + pad if len(pad) == 2 else pad
        try:
            want = upfirdn2d_ref(x, k, up, down, pad)
        except ValueError:
            continue  # empty output; the extension rejects it too
        got = upfirdn2d_ext(module, x, k, *_xy(up), *_xy(down), *pads)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # float32 (accumulated in float, as on the GPU), the networks' blur and upsampling.
    xf, kf = x.float(), torch.tensor([[1.0, 3, 3, 1]]).T @ torch.tensor([[1.0, 3, 3, 1]]) / 64
    torch.testing.assert_close(upfirdn2d_ext(module, xf, kf * 4, 2, 2, 1, 1, 2, 1, 2, 1),
                               upfirdn2d_ref(xf, kf * 4, 2, 1, (2, 1)))


def test_upfirdn2d_compiled_path_gradients(built):
    module = built[1]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 3, 2, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(3, 2, dtype=torch.float64, generator=g)
    for params in ((2, 2, 1, 1, 2, 1, 2, 1), (1, 1, 2, 2, 1, 0, -1, 2), (4, 1, 1, 2, 1, 1, 0, 2)):
        fn = lambda x: upfirdn2d_ext(module, x, k, *params)  # noqa: E731
        assert gradcheck(fn, (x,), fast_mode=True)
        assert gradgradcheck(fn, (x,), fast_mode=True)


@pytest.mark.parametrize('act,gain', [('lrelu', 2 ** 0.5), ('lrelu', -0.5), ('linear', 3.0)])
def test_fused_bias_act_kernel_math_and_gradients(built, act, gain):
    module = built[1]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=g)
    x = (x + 0.1 * x.sign()).requires_grad_()
    b = (0.05 * torch.randn(3, dtype=torch.float64, generator=g)).requires_grad_()
    fn = lambda x, b: fused_bias_act_ext(module, x, b, act, 0.2, gain)  # noqa: E731
    torch.testing.assert_close(fn(x, b), fused_bias_act_ref(x, b, act, 0.2, gain),
                               rtol=1e-12, atol=1e-12)
    assert gradcheck(fn, (x, b), fast_mode=True)
    assert gradgradcheck(fn, (x, b), fast_mode=True)
    single = fused_bias_act_ext(module, x.detach().float(), b.detach().float(), act, 0.2, gain)
    torch.testing.assert_close(single.double(), fused_bias_act_ref(x, b, act, 0.2, gain))


def test_extension_checks_its_arguments(built):
    module = built[1]
    with pytest.raises(RuntimeError, match="kernel must have x's dtype"):
        module.upfirdn2d(torch.zeros(1, 4, 4), torch.ones(3, 3, dtype=torch.float64),
                         1, 1, 1, 1, 0, 0, 0, 0, -1)
    with pytest.raises(RuntimeError, match='smaller than the kernel'):
        module.upfirdn2d(torch.zeros(1, 2, 2), torch.ones(3, 3), 1, 1, 1, 1, 0, 0, 0, 0, -1)
    # A tiled case is run only for the parameters it was written for: asking for another one
    # (or one that does not exist) is an error, never a wrong tile.
    x, k4 = torch.zeros(1, 9, 9), torch.ones(4, 4)
    with pytest.raises(RuntimeError, match='tiled case 2 asked for parameters whose case is 0'):
        module.upfirdn2d(x, k4, 1, 1, 1, 1, 2, 1, 2, 1, 2)
    with pytest.raises(RuntimeError, match='tiled case 7 asked for parameters whose case is -1'):
        module.upfirdn2d(x, torch.ones(3, 3), 1, 1, 1, 1, 2, 1, 2, 1, 7)
    with pytest.raises(RuntimeError, match='tile must be -1'):
        module.upfirdn2d(x, k4, 1, 1, 1, 1, 2, 1, 2, 1, -2)
    with pytest.raises(RuntimeError, match=r'b must be \[C\]'):
        module.fused_bias_act(torch.zeros(2, 3), torch.zeros(4), torch.zeros(0), 1, 0, 0.2, 1.0)


def test_a_broken_source_gives_one_clear_error_with_the_log(tmp_path):
    """Fails at the first line (before any header), so this costs a second, not a build."""
    csrc = tmp_path / 'csrc'
    csrc.mkdir()
    for f in _loader.SOURCES[_loader.EXTENSION] + _loader.HEADERS:
        (csrc / f).write_text('#error deliberately broken source\n')
    root = tmp_path / 'cache'
    with pytest.raises(_loader.OpBuildError) as info:
        _loader.build(root=str(root), csrc=str(csrc))
    message = str(info.value)
    assert 'deliberately broken source' in message and 'EXEGAN_OPS=ref' in message
    logs = list(root.glob('*.build.log'))
    assert len(logs) == 1 and str(logs[0]) in message
    assert 'deliberately broken source' in logs[0].read_text()
    # Nothing loadable was published, so a later run rebuilds instead of loading garbage.
    assert not [p for p in root.iterdir() if p.is_dir() and not p.name.endswith('.failed')]


# ---------------------------------------------------------------------------------------------
# The tiled upfirdn2d kernel: its whole grid emulated on the CPU (ops.cpp, upfirdn2d_tiled)
# ---------------------------------------------------------------------------------------------

K4 = torch.tensor([1.0, 3, 3, 1])[:, None] * torch.tensor([1.0, 3, 3, 1])[None, :] / 64
# The specialised cases, each with the networks' pads first, then pads that crop, pad past the
# kernel (outputs made of padding alone) or differ per side. Input sizes are odd and span
# several tiles with partial tiles at both edges (tiles are 32 x 32 outputs).
TILED_CASES = [
    ('blur', 1, 1, (41, 67), [(1, 1, 1, 1), (2, 2, 2, 2), (0, 0, 0, 0), (-1, 2, 3, -2), (5, 4, 6, 3)]),
    ('up2', 2, 1, (21, 35), [(2, 1, 2, 1), (1, 1, 1, 1), (-3, 2, 0, -1), (4, 5, 6, 3)]),
    ('down2', 1, 2, (75, 133), [(1, 1, 1, 1), (2, 2, 2, 2), (-2, 1, 0, -3), (5, 6, 3, 4)]),
]


def _three_orders(fn, x, seed):
    """Output, gradient and gradient of an R1-like penalty on the gradient (all float64)."""
    g = torch.Generator().manual_seed(seed)
    x = x.detach().requires_grad_()
    y = fn(x)
    gy = torch.randn(y.shape, dtype=y.dtype, generator=g).requires_grad_()
    (gx,) = torch.autograd.grad(y, x, gy, create_graph=True)
    penalty = (gx ** 2).sum() + (gx * x).sum()
    ggx, ggy = torch.autograd.grad(penalty, [x, gy])
    return [t.detach() for t in (y, gx, ggx, ggy)]


def _kernel_set(kernel, fn):
    """fn() with op.set_upfirdn2d_kernel(kernel) in force (forward and backward)."""
    import op
    op.set_upfirdn2d_kernel(kernel)
    try:
        return fn()
    finally:
        op.set_upfirdn2d_kernel(None)


def test_tiled_plan_covers_the_networks_cases_and_their_adjoints(built):
    from op.upfirdn2d import adjoint_params, out_size
    module = built[1]
    for name, up, down, (h, w), pads in TILED_CASES:
        for pad in pads:
            case, th, tw, ih, iw, blocks, out_h, out_w = module.upfirdn2d_tiled_plan(
                3, h, w, 4, 4, up, up, down, down, *pad)
            assert case == ('blur', 'up2', 'down2').index(name) and (th, tw) == (32, 32)
            # The C++ size formula (upfirdn2d_params) agrees with the Python one (out_size).
            assert out_h == out_size(h, 4, up, down, pad[2], pad[3])
            assert out_w == out_size(w, 4, up, down, pad[0], pad[1])
            assert blocks == 3 * -(-out_h // 32) * -(-out_w // 32) and blocks > 3
            # The gradient (and so the gradient of the gradient) is a specialised case too.
            adj = adjoint_params(h, w, 4, 4, up, up, down, down, *pad)
            assert module.upfirdn2d_tiled_plan(3, out_h, out_w, 4, 4, *adj)[0] >= 0
    # Anything else takes the general kernel.
    for kh, kw, ux, uy, dx, dy in [(3, 3, 1, 1, 1, 1), (1, 4, 2, 1, 1, 1), (4, 4, 2, 1, 1, 1),
                                   (4, 4, 4, 4, 1, 1), (4, 4, 2, 2, 2, 2), (4, 4, 1, 1, 1, 2)]:
        assert module.upfirdn2d_tiled_plan(1, 9, 9, kh, kw, ux, uy, dx, dy, 2, 2, 2, 2)[0] == -1


@pytest.mark.parametrize('name,up,down,hw,pads', TILED_CASES, ids=[c[0] for c in TILED_CASES])
def test_tiled_kernel_emulated_grid_equals_general_kernel_and_reference(built, name, up, down,
                                                                        hw, pads):
    """Forward, gradient and gradient of gradient through the tiled kernel's grid, block by
    block: bit for bit the general kernel's values (same taps in the same order), and the
    reference's in float64. NaN-filled shared memory and output (ops.cpp) make an unstaged halo
    sample or an unwritten output fail the comparison."""
    module = built[1]
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 3, *hw, dtype=torch.float64, generator=g)
    k = torch.randn(4, 4, dtype=torch.float64, generator=g)
    for pad in pads:
        args = ((up, up), (down, down), pad)
        want = _three_orders(lambda x: upfirdn2d_ref(x, k, *args), x, 8)
        def run(x):
            return upfirdn2d_ext(module, x, k, up, up, down, down, *pad)
        general = _kernel_set('general', lambda: _three_orders(run, x, 8))
        tiles = _kernel_set('tiled', lambda: _three_orders(run, x, 8))
        for t, gen, ref in zip(tiles, general, want):
            assert torch.equal(t, gen), (name, pad)
            torch.testing.assert_close(t, ref, rtol=1e-12, atol=1e-12)
        # float32 with the networks' kernel: bit for bit the general kernel, also when the
        # input holds infinities (an exact zero product from a padding sample changes nothing).
        kf = K4 * (4 if up == 2 else 1)
        xf = x.float().clone()
        xf[0, 1, 3, 5] = float('inf')
        def runf():
            return upfirdn2d_ext(module, xf, kf, up, up, down, down, *pad)
        got = _kernel_set('tiled', runf)
        assert torch.equal(got, _kernel_set('general', runf))
        assert torch.isfinite(got[:, ::2]).all()  # only the plane with the infinity has one


def test_tiled_kernel_leaves_other_cases_to_the_general_kernel(built):
    module = built[1]
    g = torch.Generator().manual_seed(9)
    x = torch.randn(1, 2, 11, 13, dtype=torch.float64, generator=g)
    for kshape, up, down in [((3, 3), 1, 1), ((4,), 2, 1), ((4, 4), (2, 1), 1), ((4, 4), 4, 1)]:
        k = torch.randn(*kshape, dtype=torch.float64, generator=g)
        params = (*_xy(up), *_xy(down), 2, 1, 2, 1)
        def run():
            return upfirdn2d_ext(module, x, k, *params)
        assert torch.equal(_kernel_set('tiled', run), _kernel_set('general', run))


def test_networks_with_the_tiled_kernel_equal_todays(built, monkeypatch):
    """G (encoder, up-convs, ToRGB skips) and D (down-blocks) forward and backward with every op
    through the compiled extension's host code: the tiled kernel's outputs equal the general
    kernel's bit for bit (so well within the 1e-6 relative the networks allow)."""
    import op
    from op import _impl
    from models.discriminator import Discriminator
    from models.generator import Generator
    module = built[1]
    monkeypatch.setattr(_impl, 'cuda_extension', lambda *t: module)  # CPU tensors -> extension
    torch.manual_seed(0)
    G = Generator(32, style_dim=16, n_mlp=2, channel_multiplier=0.0625, channel_max=16).eval()
    D = Discriminator(32, channel_multiplier=0.0625, channel_max=16)
    gin = torch.randn(2, 4, 32, 32)
    codes = torch.randn(2, G.n_exemplar, 16)
    z = torch.randn(2, 16)

    def run():
        x = gin.clone().requires_grad_()
        img = G(x, codes, [z], randomize_noise=False)
        score = D(img)
        (gx,) = torch.autograd.grad(score.sum(), x)
        return img.detach(), score.detach(), gx

    results = {}
    for kernel in ('general', 'tiled', 'auto'):
        op.set_upfirdn2d_kernel(kernel)
        results[kernel] = run()
    op.set_upfirdn2d_kernel(None)
    monkeypatch.undo()
    reference = run()  # CPU tensors: the PyTorch reference path
    for a, b, c, r in zip(results['tiled'], results['general'], results['auto'], reference):
        assert torch.equal(a, b) and torch.equal(c, a)
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


def test_networks_compile_into_one_graph_with_the_compiled_ops(built, monkeypatch):
    """Every op call through the extension (registered as torch.library custom ops while
    torch.compile traces, op/_library.py) stays inside one graph: fullgraph=True fails on any
    graph break. Forward and first-order gradients equal eager's, with the self-checked default
    (whose check runs while the graph is traced: its cache is emptied before compiling) and the
    general kernel."""
    import torch._dynamo
    import op
    from op import _impl, _selfcheck
    from models.discriminator import Discriminator
    from models.generator import Generator
    module = built[1]
    monkeypatch.setattr(_impl, 'cuda_extension', lambda *t: module)
    torch.manual_seed(0)
    G = Generator(16, style_dim=16, n_mlp=2, channel_multiplier=0.0625, channel_max=16)
    D = Discriminator(16, channel_multiplier=0.0625, channel_max=16)
    gin, codes, z = torch.randn(2, 4, 16, 16), torch.randn(2, G.n_exemplar, 16), torch.randn(2, 16)
    try:
        for kernel in ('auto', 'general'):
            op.set_upfirdn2d_kernel(kernel)
            torch._dynamo.reset()
            results = []
            for g_net, d_net in ((G, D), (torch.compile(G, backend='aot_eager', fullgraph=True),
                                          torch.compile(D, backend='aot_eager', fullgraph=True))):
                _selfcheck.reset()
                G.zero_grad(set_to_none=True)
                torch.manual_seed(3)
                img = g_net(gin, codes, [z])
                d_net(img).sum().backward()
                results.append([img.detach()] + [p.grad.clone() for p in G.parameters()])
            for a, b in zip(*results):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
            if kernel == 'auto':  # the check ran while tracing, and the tiled kernel passed
                assert {v['case'] for v in _selfcheck.verdicts() if v['passed']} == {0, 1, 2}
    finally:
        torch._dynamo.reset()
