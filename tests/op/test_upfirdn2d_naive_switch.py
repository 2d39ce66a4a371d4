"""op.set_upfirdn2d_naive: the switch scripts/benchmark.py's naive_upfirdn baseline uses instead of
patching a module attribute. With it every upfirdn2d call is upfirdn2d_naive's (bit for bit),
gradients included; switched off, the usual reference again."""
import torch

import op


def test_switch_routes_every_call_to_the_naive_formulation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 9, generator=g, dtype=torch.float64)
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    k = k[:, None] * k[None, :] / 64
    assert not op.get_upfirdn2d_naive()
    cases = [dict(up=2, pad=(2, 1)), dict(down=2, pad=(1, 1)), dict(pad=(1, 2))]
    try:
        op.set_upfirdn2d_naive(True)
        assert op.get_upfirdn2d_naive()
        for kw in cases:
            xa = x.clone().requires_grad_(True)
            xb = x.clone().requires_grad_(True)
            a, b = op.upfirdn2d(xa, k, **kw), op.upfirdn2d_naive(xb, k, **kw)
            assert torch.equal(a, b)
            a.square().sum().backward()
            b.square().sum().backward()
            assert torch.equal(xa.grad, xb.grad)
    finally:
        op.set_upfirdn2d_naive(False)
    for kw in cases:
        assert torch.equal(op.upfirdn2d(x, k, **kw), op.upfirdn2d_ref(x, k, **kw))
        assert torch.allclose(op.upfirdn2d(x, k, **kw), op.upfirdn2d_naive(x, k, **kw))
