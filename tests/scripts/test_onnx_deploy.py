"""The ONNX deployment path on the tiny networks of conftest.py: scripts/export_onnx.py (one graph,
standard operators only, metadata, dynamic batch), parity of onnxruntime with the PyTorch reference
ops (float <= 1e-4 before quantisation, uint8 <= 1 level, known pixels bit-exact), and
scripts/inpaint_onnx.py (no torch import; the numpy round trip equals inference/roundtrip.py)."""
import os
import subprocess
import sys
import types

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from inference import io as tio
from inference import roundtrip
from models.exegan import EXEGAN
from models.sketch import SketchEXEGAN
from scripts import export_onnx as ex
from inference import onnx_export as ox
from scripts import inpaint_onnx as io_onnx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLOAT_TOL = 1e-4


@pytest.fixture(scope="module")
def exported(files, tmp_path_factory):
    """The inpainting graph of the tiny EXE-GAN, and the style-mix graph of the sketch one."""
    root = tmp_path_factory.mktemp("onnx")
    model = EXEGAN.from_checkpoints(files["exe"], files["psp"])
    path = str(root / "tiny.onnx")
    assert ex_run(["--ckpt", files["exe"], "--psp", files["psp"], "--out", path]) == 0  # the CLI
    sk_model = SketchEXEGAN.from_checkpoints(files["sketch"], files["psp"])
    sk_path = str(root / "tiny_sketch_style_mix.onnx")
    ox.export_graph(sk_model, sk_path, style_mix=True, ckpt=files["sketch"], psp=files["psp"])
    return types.SimpleNamespace(model=model, path=path, sk_model=sk_model, sk_path=sk_path)


def _session(path):
    import onnxruntime as ort
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _torch_reference(model, inp, *, mix_layers=None):
    """PyTorch (reference ops, default grouped modulated conv) on the graph's inputs: [B, S, S, 3]."""
    f = lambda a: a.permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    x, m = f(inp["image"]), (inp["mask"].permute(0, 3, 1, 2) >= 128).float()
    noise = ox.split_noise(inp["noise"], ox.noise_sizes(model.generator))
    kw = dict(z=inp["z"], noise=noise, truncation=float(inp["truncation"][0]))
    if "sketch" in inp:
        kw["sketch"] = (inp["sketch"].permute(0, 3, 1, 2) >= 128).float()
    if mix_layers is None:
        out = model.inpaint(x, m, f(inp["exemplar"]), **kw)
    else:
        out = model.style_mix(x, m, f(inp["exemplar"]), f(inp["exemplar_b"]), mix_layers, **kw)
    return out.permute(0, 2, 3, 1).numpy()


def _check_parity(ref_float, out, completed, inp):
    known = inp["mask"].numpy()[..., 0] < 128
    image = inp["image"].numpy()
    assert np.abs(completed - ref_float).max() <= FLOAT_TOL
    ref_u8 = np.round((np.clip(ref_float, -1, 1) + 1) * 127.5).astype(np.uint8)
    assert np.abs(out.astype(int) - ref_u8.astype(int)).max() <= 1
    assert np.array_equal(out[known], image[known])            # every known pixel, bit for bit
    assert (out[~known] != image[~known]).mean() > 0.5         # the hole was filled, not kept


def test_graph_has_standard_ops_only_and_its_metadata(exported, files):
    proto = onnx.load(exported.path)
    assert ox.foreign_ops_onnx(proto) == []
    assert {o.domain for o in proto.opset_import if o.domain in ("", "ai.onnx")}
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [ox.DEFAULT_OPSET]
    meta = {p.key: p.value for p in proto.metadata_props}
    g = exported.model.generator
    assert meta["exegan.mask_polarity"].startswith("255 = hole")
    assert meta["exegan.size"] == str(g.size) and meta["exegan.n_exemplar"] == str(g.n_exemplar)
    assert meta["exegan.exemplar_start"] == str(g.exemplar_start)
    assert meta["exegan.ckpt_sha256"] == ox.file_sha256(files["exe"])
    assert meta["exegan.psp_sha256"] == ox.file_sha256(files["psp"])
    assert meta["exegan.opset"] == str(ox.DEFAULT_OPSET)
    inputs = {v.name: v.type.tensor_type for v in proto.graph.input}
    assert list(inputs) == ["image", "mask", "exemplar", "z", "noise", "truncation"]
    assert inputs["image"].elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in inputs["image"].shape.dim] == ["batch", g.size, g.size, 3]
    out = {v.name: v.type.tensor_type for v in proto.graph.output}
    assert out["output"].elem_type == onnx.TensorProto.UINT8


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_equals_pytorch(exported, batch):
    """Dynamic batch: one file at batch 1 and 3; truncation 0.7 at batch 3."""
    graph = ox.InpaintGraph(exported.model)
    inp = ox.example_inputs(graph, batch=batch, seed=batch)
    if batch == 3:
        inp["truncation"] = torch.tensor([0.7])
    out, completed = _session(exported.path).run(None, {k: v.numpy() for k, v in inp.items()})
    _check_parity(_torch_reference(exported.model, inp), out, completed, inp)


def test_flipped_mask_polarity_is_caught(exported):
    """The check above fails when the graph's hole and the caller's disagree: the same inputs with the
    mask inverted leave the box's pixels untouched and change the rest."""
    graph = ox.InpaintGraph(exported.model)
    inp = ox.example_inputs(graph, batch=1, seed=7)
    flipped = dict(inp, mask=255 - inp["mask"])
    out, completed = _session(exported.path).run(None, {k: v.numpy() for k, v in flipped.items()})
    with pytest.raises(AssertionError):
        _check_parity(_torch_reference(exported.model, inp), out, completed, inp)


def test_sketch_style_mix_graph_equals_pytorch(exported):
    proto = onnx.load(exported.sk_path)
    assert ox.foreign_ops_onnx(proto) == []
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["exegan.graph"] == "style_mix" and meta["exegan.sketch"] == "1"
    graph = ox.InpaintGraph(exported.sk_model, style_mix=True)
    inp = ox.example_inputs(graph, batch=2, seed=3)
    assert list(inp) == [v.name for v in proto.graph.input]
    g = exported.sk_model.generator
    layers = [g.exemplar_start + k for k in range(g.n_exemplar) if inp["mix"][k]]
    assert layers  # the mix takes some slots from exemplar_b
    out, completed = _session(exported.sk_path).run(None, {k: v.numpy() for k, v in inp.items()})
    _check_parity(_torch_reference(exported.sk_model, inp, mix_layers=layers), out, completed, inp)


def _emulated_ext():
    """CPU stand-ins of the compiled kernels (tests/op/conftest.py's contracts)."""
    from op.upfirdn2d import upfirdn2d_ref

    def up(x, kernel, ux, uy, dx, dy, px0, px1, py0, py1):
        return upfirdn2d_ref(x[:, None], kernel, (ux, uy), (dx, dy), (px0, px1, py0, py1))[:, 0]

    def act(x, b, ref, a, grad, alpha, gain):
        v = x + b.view([1, -1] + [1] * (x.ndim - 2)) if b.numel() else x.clone()
        return torch.where(v > 0, v, v * alpha) * gain if a == 1 else v * gain

    return types.SimpleNamespace(upfirdn2d=up, fused_bias_act=act)


def test_a_custom_op_reaching_the_trace_is_refused(exported, tmp_path, monkeypatch):
    """With the compiled-op path forced on (what CUDA tensors without EXEGAN_OPS=ref take), the custom
    ops exegan::* reach the trace: the export stops with one sentence and writes nothing."""
    from op import _impl
    monkeypatch.setattr(_impl, "cuda_extension", lambda *t: _emulated_ext())
    path = tmp_path / "leak.onnx"
    with pytest.raises(ox.ExportError, match="custom operators exegan"):
        ox.export_graph(exported.model, str(path))
    assert not path.exists() and not list(tmp_path.iterdir())


def test_the_onnx_check_finds_a_non_standard_node():
    node = onnx.helper.make_node("upfirdn2d", ["x"], ["y"], domain="exegan")
    inner = onnx.helper.make_graph([node], "inner", [], [])
    if_node = onnx.helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=inner)
    g = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["a"], ["b"]), if_node], "g", [], [])
    assert ox.foreign_ops_onnx(onnx.helper.make_model(g)) == ["exegan::upfirdn2d"]


def test_export_cli_refuses_cuda_ops_and_existing_files(files, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    base = ["--ckpt", files["exe"], "--psp", files["psp"], "--out", str(out)]
    assert ex_run(base + ["--ops", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --ops cuda cannot be exported") and err.count("\n") == 0
    out.write_bytes(b"")
    assert ex_run(base) == 2
    assert "exists" in capsys.readouterr().err


def test_the_cli_tells_sketch_checkpoints_apart(files):
    assert ex._is_sketch_checkpoint(files["sketch"], "g_ema")
    assert not ex._is_sketch_checkpoint(files["exe"], "g_ema")


def ex_run(argv):
    from scripts.cli_common import run
    return run(ex.main, argv)


# ------------------------------------------------------------------------------ inpaint_onnx.py
@pytest.mark.parametrize("hw", [(16, 16), (37, 23), (9, 50), (64, 40)])
def test_numpy_round_trip_equals_inference_roundtrip(hw):
    h, w = hw
    rng = np.random.default_rng(h * w)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    hole = np.zeros((h, w), bool)
    hole[h // 3:h // 3 + max(1, h // 4), w // 5:w // 5 + max(1, w // 3)] = True
    hole[rng.random((h, w)) < 0.02] = True
    ref = roundtrip.prepare(rgb, hole, 16)
    got = io_onnx.Prepared(rgb, hole, 16)
    assert np.array_equal(got.image, tio.to_uint8(ref.image))
    assert np.array_equal(got.mask[..., 0] == 255, ref.mask[0].numpy() == 1)
    completed = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    as_tensor = torch.from_numpy(completed).permute(2, 0, 1).float() / 127.5 - 1
    assert np.array_equal(got.paste(completed), roundtrip.paste_back(ref, as_tensor))
    strokes = rng.random((h, w)) < 0.05
    assert np.array_equal(got.pooled(strokes & hole)[..., 0] == 255,
                          roundtrip.model_sketch(ref, strokes)[0].numpy() == 1)


def test_numpy_readers_equal_the_library_readers(tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (12, 10, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(rgba[..., 0], "L").save(tmp_path / "l.png")
    Image.fromarray(rgba[..., :3], "RGB").convert("P").save(tmp_path / "p.png")
    Image.fromarray(rgba[..., 0].astype("<u2") * 257).save(tmp_path / "i16.png")
    for name in ("a", "l", "p", "i16"):
        path = str(tmp_path / f"{name}.png")
        assert np.array_equal(io_onnx.read_rgb(path), tio.read_rgb(path)), name
        assert np.array_equal(io_onnx.read_exemplar(path, 8), tio.to_uint8(tio.read_exemplar(path, 8)))
    inverted = np.ones((12, 10), bool)
    inverted[3:9, 3:7] = False
    for hole, colour in ((inverted, "white"), (inverted, "black"), (np.ones((12, 10), bool), "white"),
                         (~inverted, "white")):
        assert io_onnx.mask_warnings(hole, colour) == tio.mask_warnings(hole, colour)
    assert io_onnx.mask_warnings(inverted)[0].startswith("the mask looks inverted")
    mask = (rng.random((12, 10)) < 0.4).astype(np.uint8) * 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    for white in (True, False):
        assert np.array_equal(io_onnx.read_binary(str(tmp_path / "m.png"), (12, 10), "--mask", white),
                              tio.read_binary(str(tmp_path / "m.png"), (12, 10), "mask", "--mask", white))


def test_inpaint_onnx_equals_the_pytorch_round_trip(exported, tmp_path, h):
    """The CLI on a 37x23 photo, 2 samples: each equals the PyTorch path (inference.roundtrip +
    EXEGAN.complete with the documented z and noise) - known pixels bit for bit, hole within 2
    levels (1 at the model size, through the Lanczos upscale)."""
    img = h.write_rgb(tmp_path / "in" / "face.png", 37, 23, seed=1)
    hole = h.write_mask(tmp_path / "masks" / "face.png", h.box_hole(37, 23, 8, 4, 25, 18))
    h.write_rgb(tmp_path / "ex" / "face.png", 30, 40, seed=2)
    out = tmp_path / "out"
    argv = ["--onnx", exported.path, "--image", str(tmp_path / "in"), "--mask", str(tmp_path / "masks"),
            "--exemplar", str(tmp_path / "ex"), "--samples", "2", "--seed", "5", "--out", str(out)]
    assert io_onnx.run(argv) == 0
    model, g = exported.model, exported.model.generator
    prep = roundtrip.prepare(img, hole, g.size)
    codes = model.encode_exemplars(tio.read_exemplar(str(tmp_path / "ex" / "face.png"), g.size)[None])
    for k in range(2):
        z, noise = io_onnx.latents(5 + k, g.style_dim, sum(r * r for r in ox.noise_sizes(g)))
        maps = ox.split_noise(torch.from_numpy(noise)[None], ox.noise_sizes(g))
        want = prep.paste(model.complete(prep.image[None], prep.mask[None], codes, z=torch.from_numpy(z)[None],
                                         noise=maps)[0])
        got = h.read(out / f"face_sample{k}.png")
        assert np.array_equal(got[~hole], img[~hole])
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 2
        assert (got[hole] != img[hole]).mean() > 0.5
    a, b = h.read(out / "face_sample0.png"), h.read(out / "face_sample1.png")
    assert not np.array_equal(a, b)  # seed + k: two different samples
    assert io_onnx.run(argv) == 0     # a second run never overwrites: the -1 set
    assert (out / "face-1_sample1.png").exists()


def test_inpaint_onnx_runs_without_torch(exported, tmp_path, h):
    """A fresh interpreter in which importing torch raises runs the whole CLI; torch is not loaded."""
    h.write_rgb(tmp_path / "face.png", 20, 20, seed=3)
    h.write_mask(tmp_path / "mask.png", h.box_hole(20, 20, 5, 5, 12, 12))
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "from scripts import inpaint_onnx\n"
        f"rc = inpaint_onnx.run(['--onnx', {exported.path!r}, '--image', {str(tmp_path / 'face.png')!r}, "
        f"'--mask', {str(tmp_path / 'mask.png')!r}, '--exemplar', {str(tmp_path / 'face.png')!r}, "
        f"'--out', {str(tmp_path / 'out')!r}])\n"
        "assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')], 'torch was imported'\n"
        "sys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "face_sample0.png").exists()


def test_inpaint_onnx_user_errors_are_one_sentence(exported, tmp_path, h, capsys):
    h.write_rgb(tmp_path / "face.png", 20, 20, seed=3)
    h.write_mask(tmp_path / "small.png", h.box_hole(10, 10, 2, 2, 5, 5))
    argv = ["--onnx", exported.path, "--image", str(tmp_path / "face.png"), "--mask", str(tmp_path / "small.png"),
            "--exemplar", str(tmp_path / "face.png"), "--out", str(tmp_path / "out")]
    assert io_onnx.run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --mask") and "10x10" in err and err.count("\n") == 0
    assert not (tmp_path / "out").exists()
    assert io_onnx.run(argv[:1] + [str(tmp_path / "none.onnx")] + argv[2:]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_benchmark_script_runs_and_records_fidelity(tmp_path):
    """scripts/benchmark_cpu_inference.py end to end on the 32-px narrow networks (a smoke run: the
    JSON's fields and the ONNX fidelity; speed is never asserted)."""
    import json
    from scripts import benchmark_cpu_inference as bench
    out = tmp_path / "bench.json"
    assert bench.main(["--tiny", "--batches", "1", "--repeats", "1", "--paths", "eager,onnxruntime",
                       "--matmul-n", "256", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["flops_per_image"] > 0 and rec["peak"]["fp32"]["gflops"] > 0
    fid = rec["fidelity_vs_eager_fp32"]["onnxruntime"]
    assert fid["max_abs_float"] <= FLOAT_TOL and fid["max_uint8"] <= 1 and fid["known_bit_exact"]
    for path in ("eager", "onnxruntime"):
        s = rec["summary"][path]["1"]
        assert s["images_per_s"] > 0 and s["fraction_of_fp32_peak"] > 0
