"""The CPU default runtime (inference/runtime.py): onnxruntime runs the networks of inpaint.py,
style_mix.py and the editor after a one-off export into a cache keyed by the weight files' content.

Checked on the tiny networks of tests/scripts/conftest.py: the float results equal PyTorch's within
1e-4 (codes, completion with and without truncation, a sketch generator); the command lines' files
are within one 8-bit level of ``--runtime torch`` with every known pixel the photo's; K samples in
one batch equal K single runs; the cache is reused, keyed by content, rebuilt when damaged; an
unwritable cache falls back to PyTorch; the runtime's choice and its errors.
"""
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from inference import runtime
from inference.errors import InferenceInputError
from models.exegan import EXEGAN
from models.sketch import SketchEXEGAN
from scripts import editor, inpaint, style_mix

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def default_runtime(monkeypatch):
    """The suite runs PyTorch (tests/conftest.py); these tests check the real default."""
    monkeypatch.delenv(runtime.ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("onnx_cache"))


@pytest.fixture(scope="module")
def onnx_model(files, onnx_cache):
    return runtime.load_model(files["exe"], files["psp"], CPU, runtime="onnx", cache=onnx_cache)


def _inputs(size, seed):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, size, size, generator=gen) * 2 - 1
    mask = torch.zeros(1, 1, size, size)
    mask[..., 3:12, 5:14] = 1
    exemplar = torch.rand(1, 3, size, size, generator=gen) * 2 - 1
    return image, mask, exemplar


def test_auto_is_onnxruntime_on_the_cpu_and_pytorch_on_a_gpu(monkeypatch, capsys):
    assert runtime.resolve(None, CPU) == "onnx"
    assert runtime.resolve("auto", torch.device("cuda")) == "torch"
    assert runtime.resolve("torch", CPU) == "torch"
    monkeypatch.setenv(runtime.ENV_VAR, "torch")
    assert runtime.resolve(None, CPU) == "torch"
    monkeypatch.setenv(runtime.ENV_VAR, "tensorrt")
    with pytest.raises(InferenceInputError, match=r"\$EXEGAN_RUNTIME 'tensorrt' is not a runtime"):
        runtime.resolve(None, CPU)
    with pytest.raises(InferenceInputError, match="runs on the CPU only"):
        runtime.resolve("onnx", torch.device("cuda"))
    monkeypatch.setattr(runtime, "onnxruntime_available", lambda: False)
    assert runtime.resolve("auto", CPU) == "torch"
    assert "onnxruntime is not installed" in capsys.readouterr().err
    with pytest.raises(InferenceInputError, match="needs the onnx and onnxruntime packages"):
        runtime.resolve("onnx", CPU)


def test_onnxruntime_equals_pytorch_within_1e4(files, onnx_model):
    ref = EXEGAN.from_checkpoints(files["exe"], files["psp"], "cpu")
    assert isinstance(onnx_model, runtime.OnnxEXEGAN)
    assert (onnx_model.size, onnx_model.generator.exemplar_start, onnx_model.generator.n_exemplar) == \
        (ref.size, ref.generator.exemplar_start, ref.generator.n_exemplar)
    image, mask, exemplar = _inputs(ref.size, 0)
    codes = ref.encode_exemplars(exemplar)
    assert (onnx_model.encode_exemplars(exemplar) - codes).abs().max() <= 1e-4
    for truncation in (1.0, 0.6):
        want = ref.complete(image, mask, codes, seed=11, truncation=truncation)
        got = onnx_model.complete(image, mask, codes, seed=11, truncation=truncation)
        assert (got - want).abs().max() <= 1e-4
        assert torch.equal(got[mask.expand_as(got) == 0], image[mask.expand_as(image) == 0])  # known pixels
    other = onnx_model.complete(image, mask, codes, seed=12)
    assert (other - got).abs().max() > 1e-2  # the seed draws z and the noise


def test_k_samples_in_one_batch_equal_k_single_runs(onnx_model):
    image, mask, exemplar = _inputs(onnx_model.size, 1)
    codes = onnx_model.encode_exemplars(exemplar)
    many = onnx_model.complete_many(image, mask, codes, seeds=[4, 5, 6], truncation=0.8)
    for k, got in enumerate(many):
        single = onnx_model.complete(image, mask, codes, seed=4 + k, truncation=0.8)
        assert (got - single).abs().max() <= 1e-5


def test_a_sketch_generator_runs_in_onnxruntime(files, onnx_cache):
    model = runtime.load_model(files["sketch"], files["psp"], CPU, sketch=True, runtime="onnx", cache=onnx_cache)
    ref = SketchEXEGAN.from_checkpoints(files["sketch"], files["psp"], "cpu")
    image, mask, exemplar = _inputs(ref.size, 2)
    sketch = torch.zeros_like(mask)
    sketch[..., 7, :] = 1
    codes = ref.encode_exemplars(exemplar)
    want = ref.complete(image, mask, codes, seed=3, sketch=sketch)
    assert (model.complete(image, mask, codes, seed=3, sketch=sketch) - want).abs().max() <= 1e-4
    assert (ref.complete(image, mask, codes, seed=3) - want).abs().max() > 1e-3  # the strokes matter


def _write_inputs(h, d):
    photo = h.write_rgb(d / "face.png", 23, 19, seed=4)
    hole = h.write_mask(d / "mask.png", h.box_hole(23, 19, 5, 3, 17, 15))
    h.write_rgb(d / "ex.png", 30, 30, seed=5)
    h.write_rgb(d / "ex_b.png", 20, 20, seed=6)
    return photo, hole


def test_inpaint_and_style_mix_in_onnxruntime_within_one_level_of_torch(files, h, onnx_cache, tmp_path):
    photo, hole = _write_inputs(h, tmp_path)
    base = ["--ckpt", files["exe"], "--psp", files["psp"], "--image", str(tmp_path / "face.png"),
            "--mask", str(tmp_path / "mask.png"), "--onnx-cache", onnx_cache]
    runs = {}
    for name in ("default", "torch"):
        flag = ["--runtime", "onnx"] if name == "default" else ["--runtime", "torch"]
        out = tmp_path / name
        assert inpaint.main([*base, "--exemplar", str(tmp_path / "ex.png"), "--samples", "3", "--seed", "2",
                             "--no-sheet", "--out", str(out / "inpaint"), *flag]) == 0
        assert style_mix.main([*base, "--exemplar-a", str(tmp_path / "ex.png"), "--exemplar-b",
                               str(tmp_path / "ex_b.png"), "--seed", "2", "--save-cells",
                               "--out", str(out / "mix"), *flag]) == 0
        runs[name] = out
    names = [f"inpaint/face_sample{k}.png" for k in range(3)] + ["mix/face_mix_4-5.png", "mix/face_mix_5-5.png"]
    for name in names:
        got, want = (np.asarray(Image.open(runs[r] / name).convert("RGB")).astype(int) for r in ("default", "torch"))
        assert np.abs(got - want).max() <= 1, name
        assert np.array_equal(got[~hole], photo[~hole]), name
        assert Image.open(runs["default"] / name).text["exegan:runtime"] == "onnxruntime"
        assert Image.open(runs["torch"] / name).text["exegan:runtime"] == "PyTorch"


def test_the_editor_defaults_to_onnxruntime(files, onnx_cache):
    ed = editor.load(editor.build_parser().parse_args(["--ckpt", files["exe"], "--psp", files["psp"],
                                                        "--onnx-cache", onnx_cache]))
    assert isinstance(ed.model, runtime.OnnxEXEGAN)
    ed = editor.load(editor.build_parser().parse_args(["--ckpt", files["exe"], "--psp", files["psp"],
                                                        "--runtime", "torch"]))
    assert isinstance(ed.model, EXEGAN)


def test_the_cache_is_reused_and_keyed_by_content(files, onnx_cache, onnx_model, tmp_path, monkeypatch):
    def no_export(*a, **k):
        raise AssertionError("exported again")

    monkeypatch.setattr(runtime, "export", no_export)
    copy = tmp_path / "renamed.pt"
    shutil.copy(files["exe"], copy)                     # same content, another name: the same graphs
    assert isinstance(runtime.load_model(str(copy), files["psp"], CPU, runtime="onnx", cache=onnx_cache),
                      runtime.OnnxEXEGAN)
    key = runtime.cache_key(files["exe"], files["psp"], which="g_ema", sketch=False)
    assert runtime.cache_key(str(copy), files["psp"], which="g_ema", sketch=False) == key
    assert runtime.cache_key(files["sketch0"], files["psp"], which="g_ema", sketch=False) != key
    assert runtime.cache_key(files["exe"], files["psp"], which="g", sketch=False) != key
    with pytest.raises(AssertionError, match="exported again"):  # another key is never served these graphs
        runtime.load_model(files["exe"], files["psp"], CPU, which="g", runtime="onnx", cache=onnx_cache)


def test_a_damaged_cache_is_exported_again(files, onnx_cache, onnx_model, tmp_path, capsys):
    cache = str(tmp_path / "cache")
    shutil.copytree(onnx_cache, cache)
    key = runtime.cache_key(files["exe"], files["psp"], which="g_ema", sketch=False)
    path = os.path.join(cache, key, "complete.onnx")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)
    capsys.readouterr()
    again = runtime.load_model(files["exe"], files["psp"], CPU, runtime="onnx", cache=cache)
    assert "cannot be loaded" in capsys.readouterr().err
    image, mask, exemplar = _inputs(again.size, 3)
    codes = again.encode_exemplars(exemplar)
    assert torch.equal(again.complete(image, mask, codes, seed=1), onnx_model.complete(image, mask, codes, seed=1))


def test_an_unwritable_cache_falls_back_to_pytorch(files, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    model = runtime.load_model(files["exe"], files["psp"], CPU, cache=str(blocker / "cache"))
    assert isinstance(model, EXEGAN)
    assert "running with PyTorch instead" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["file"]  # nothing half-written left behind


def test_auto_keeps_short_runs_in_pytorch(files, h, onnx_cache, onnx_model, tmp_path, monkeypatch):
    """auto: a run of fewer than AUTO_CACHED generator passes stays in PyTorch; from AUTO_CACHED on
    it uses cached graphs; an export is made only for a run of AUTO_EXPORT passes or more; the
    editor (work None) always uses onnxruntime."""
    load = lambda work, cache=onnx_cache, **k: runtime.load_model(  # noqa: E731
        files["exe"], files["psp"], CPU, cache=cache, work=work, **k)
    assert isinstance(load(runtime.AUTO_CACHED - 1), EXEGAN)
    assert isinstance(load(runtime.AUTO_CACHED), runtime.OnnxEXEGAN)          # cached graphs
    empty = str(tmp_path / "empty")
    assert isinstance(load(runtime.AUTO_EXPORT - 1, cache=empty), EXEGAN)      # not worth an export
    assert not os.path.exists(empty)
    exported = []
    monkeypatch.setattr(runtime, "export", lambda model, folder: exported.append(folder) or
                        shutil.copytree(onnx_model.folder, folder))
    assert isinstance(load(runtime.AUTO_EXPORT, cache=empty), runtime.OnnxEXEGAN) and len(exported) == 1
    assert isinstance(load(None, cache=str(tmp_path / "editor")), runtime.OnnxEXEGAN) and len(exported) == 2
    assert isinstance(load(10 ** 6, runtime="torch"), EXEGAN)
    # Through the command line: 2 images x 4 samples with the graphs cached run in onnxruntime.
    photo, hole = _write_inputs(h, tmp_path)
    out = tmp_path / "out"
    (tmp_path / "in").mkdir()
    for k in range(2):
        shutil.copy(tmp_path / "face.png", tmp_path / "in" / f"f{k}.png")
    assert inpaint.main(["--ckpt", files["exe"], "--psp", files["psp"], "--image", str(tmp_path / "in"),
                         "--mask", str(tmp_path / "mask.png"), "--exemplar", str(tmp_path / "ex.png"),
                         "--samples", "4", "--no-sheet", "--onnx-cache", onnx_cache, "--out", str(out)]) == 0
    assert Image.open(out / "f0_sample3.png").text["exegan:runtime"] == "onnxruntime"
    assert inpaint.main(["--ckpt", files["exe"], "--psp", files["psp"], "--image", str(tmp_path / "face.png"),
                         "--mask", str(tmp_path / "mask.png"), "--exemplar", str(tmp_path / "ex.png"),
                         "--samples", "4", "--no-sheet", "--onnx-cache", onnx_cache, "--out", str(out / "one")]) == 0
    assert Image.open(out / "one" / "face_sample0.png").text["exegan:runtime"] == "PyTorch"

