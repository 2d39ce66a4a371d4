"""The paper's generator input and composite have one definition each (models.exegan.make_gin /
composite): values of the formulas, known pixels bit-exact, and the same values and gradients as
the arithmetic form ``x * (1 - m) + pred * m`` the training loop and the sample grids used."""
import torch

from models.exegan import composite, make_gin
from models.sketch import sketch_gin


def _inputs(seed=0, b=3, s=8):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, s, s, generator=g) * 2 - 1
    m = (torch.rand(b, 1, s, s, generator=g) < 0.4).float()
    pred = torch.randn(b, 3, s, s, generator=g) * 1.5  # unclamped, as in training
    return x, m, pred


def test_gin_is_the_masked_image_and_the_shifted_mask():
    x, m, _ = _inputs()
    gin = make_gin(x, m)
    assert gin.shape == (3, 4, 8, 8)
    hole = m.bool().expand(-1, 3, -1, -1)
    assert torch.equal(gin[:, :3][~hole], x[~hole])            # known pixels as they are
    assert (gin[:, :3][hole] == 0).all()                        # holes zeroed
    assert set(gin[:, 3].unique().tolist()) == {-0.5, 0.5}      # mask - 0.5
    assert torch.equal(gin[:, 3:] > 0, m.bool())                # + 0.5 = hole


def test_sketch_gin_extends_the_plain_gin():
    x, m, _ = _inputs(1)
    sk = torch.rand(3, 1, 8, 8)
    g5 = sketch_gin(x, m, sk)
    assert torch.equal(g5[:, :4], make_gin(x, m))
    assert torch.equal(g5[:, 4:], sk * m)


def test_composite_equals_the_arithmetic_form_with_its_gradient():
    x, m, pred = _inputs(2)
    p1 = pred.clone().requires_grad_(True)
    p2 = pred.clone().requires_grad_(True)
    out = composite(x, m, p1)
    ref = x * (1 - m) + p2 * m
    assert torch.equal(out, ref)
    up = torch.randn_like(out)
    (out * up).sum().backward()
    (ref * up).sum().backward()
    assert torch.equal(p1.grad, p2.grad)
    # float32 result from a bfloat16 prediction, as in d_main_step's pred.float() and autocast
    pb = pred.bfloat16()
    assert composite(x, m, pb).dtype == torch.float32
    assert torch.equal(composite(x, m, pb.float()), x * (1 - m) + pb.float() * m)


def test_composite_keeps_known_pixels_bit_exact_whatever_pred_holds():
    x, m, pred = _inputs(3)
    pred[~m.bool().expand(-1, 3, -1, -1)] = float("nan")  # garbage outside the hole
    pred[0, 0, 0, 0] = float("inf")
    out = composite(x, m, pred)
    known = ~m.bool().expand(-1, 3, -1, -1)
    assert torch.equal(out[known], x[known])                          # the arithmetic form gives NaN
    assert torch.equal(out[~known], pred[~known])
    assert (x * (1 - m) + pred * m)[known].isnan().any()
