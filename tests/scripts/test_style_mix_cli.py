"""scripts/style_mix.py on a tiny checkpoint: an empty slot range is plain inpainting with exemplar A,
all slots is inpainting with exemplar B, partial ranges differ from both, every cell equals
EXEGAN.style_mix (inference/stylemix.py); the grid and cells are written at the expected sizes."""
import os

import numpy as np
import pytest

from inference.io import read_exemplar
from inference.roundtrip import inpaint_one, paste_back, prepare
from inference.stylemix import mix
from inference import runtime
from scripts import cli_common as cli
from scripts import style_mix


@pytest.fixture(scope="module")
def setup(files, h, tmp_path_factory):
    d = tmp_path_factory.mktemp("mix")
    H, W = 21, 26  # not the model size
    src = h.write_rgb(d / "face.png", H, W, seed=11)
    hole = h.write_mask(d / "mask.png", h.box_hole(H, W, 4, 6, 17, 20))
    h.write_rgb(d / "a.png", 16, 16, seed=12)
    h.write_rgb(d / "b.png", 20, 20, seed=13)
    model = runtime.load_model(files["exe"], files["psp"], cli.resolve_device("cpu"), runtime="torch")
    prep = prepare(src, hole, model.size)
    ex_a = read_exemplar(str(d / "a.png"), model.size)
    ex_b = read_exemplar(str(d / "b.png"), model.size)
    return dict(dir=d, src=src, hole=hole, model=model, prep=prep, ex_a=ex_a, ex_b=ex_b)


def test_empty_range_is_exemplar_a_and_all_slots_is_exemplar_b(setup):
    m, prep, a, b = setup["model"], setup["prep"], setup["ex_a"], setup["ex_b"]
    lo = m.generator.exemplar_start
    hi = lo + m.generator.n_exemplar - 1
    kw = dict(seed=3, truncation=1.0)
    with_a = inpaint_one(m, prep, a, samples=1, **kw)[0]
    with_b = inpaint_one(m, prep, b, samples=1, **kw)[0]
    assert not np.array_equal(with_a, with_b)
    assert np.array_equal(mix(m, prep, a, b, lo, lo - 1, **kw), with_a)   # i..j empty
    assert np.array_equal(mix(m, prep, a, b, lo, hi, **kw), with_b)       # every slot from B
    partial = mix(m, prep, a, b, lo + 1, hi, **kw)
    assert not np.array_equal(partial, with_a) and not np.array_equal(partial, with_b)
    hole = setup["hole"]
    assert np.array_equal(partial[~hole], setup["src"][~hole])
    # Every cell is what EXEGAN.style_mix gives for those layers (the script encodes A and B once).
    codes = (m.encode_exemplars(a[None]), m.encode_exemplars(b[None]))
    for first, last in [(lo, lo), (hi, hi)]:  # the partial ranges at 16 px (slots 4, 5)
        want = paste_back(prep, m.style_mix(prep.image[None], prep.mask[None], a[None], b[None],
                                                range(first, last + 1), **kw)[0])
        assert np.array_equal(mix(m, prep, a, b, first, last, codes=codes, **kw), want)


def test_cli_writes_the_grid_and_cells(files, setup, h):
    d = setup["dir"]
    out = d / "out"
    args = ["--ckpt", files["exe"], "--psp", files["psp"], "--image", str(d / "face.png"),
            "--mask", str(d / "mask.png"), "--exemplar-a", str(d / "a.png"), "--exemplar-b", str(d / "b.png"),
            "--seed", "3", "--save-cells", "--out", str(out)]
    assert style_mix.main(args) == 0
    g = setup["model"].generator
    lo, hi = g.exemplar_start, g.exemplar_start + g.n_exemplar - 1   # 4, 5 at 16 px
    cells = [f"face_mix_{i}-{j}.png" for i in range(lo, hi + 1) for j in range(i, hi + 1)]
    assert sorted(os.listdir(out)) == sorted(["face_mix_grid.png", "face_mix_A.png", "face_mix_B.png", *cells])
    assert np.array_equal(h.read(out / f"face_mix_{lo}-{hi}.png"), h.read(out / "face_mix_B.png"))
    a = h.read(out / "face_mix_A.png")
    assert np.array_equal(a, inpaint_one(setup["model"], setup["prep"], setup["ex_a"], samples=1,
                                                 seed=3, truncation=1.0)[0])
    grid = h.read(out / "face_mix_grid.png")
    H, W = setup["hole"].shape
    tile_w = round(W * 64 / H)
    # widest row: the strip input | A | B | A only | B only (exemplars are square), gaps of 4
    assert grid.shape[1] == 3 * tile_w + 2 * 64 + 4 * 4
    n = hi - lo + 1
    assert grid.shape[0] == 64 + 2 * 4 + 16 + n * (64 + 4)
    # A taken name gets the next free suffix; nothing is overwritten.
    before = (out / "face_mix_grid.png").read_bytes()
    assert style_mix.main(args[:-3] + ["--out", str(out)]) == 0
    assert (out / "face_mix_grid.png").read_bytes() == before and (out / "face-1_mix_grid.png").is_file()


def test_slot_range_is_validated(files, setup, capsys):
    d = setup["dir"]
    args = ["--ckpt", files["exe"], "--psp", files["psp"], "--image", str(d / "face.png"),
            "--mask", str(d / "mask.png"), "--exemplar-a", str(d / "a.png"), "--exemplar-b", str(d / "b.png"),
            "--slots", "2", "5", "--out", str(d / "bad")]
    assert cli.run(style_mix.main, args) == 2
    assert "4 <= FIRST <= LAST <= 5" in capsys.readouterr().err
