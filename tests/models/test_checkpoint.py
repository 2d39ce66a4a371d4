"""Tests of checkpoint reading and writing (models/checkpoint.py, docs/models.md): our format,
the authors' training checkpoints (with a pickled argparse.Namespace) and bare generator releases
round-trip through the real loaders; tampered files are refused before anything runs; a file of
another architecture gives the clear mismatch error."""
import argparse
import collections
import os
import random

import numpy as np
import pytest
import torch

from models.checkpoint import (CheckpointError, CheckpointMismatchError, UnsafeCheckpointError,
                               capture_rng_state, load_discriminator, load_generator, make_checkpoint,
                               restore_rng_state, safe_load, save_checkpoint)
from models.checkpoint_arch import infer_discriminator_arch, infer_generator_arch
from models.discriminator import Discriminator
from models.generator import Generator


def _nets(size=32, style_dim=16, **g_kwargs):
    torch.manual_seed(0)
    kw = dict(channel_multiplier=2, channel_max=32)
    g = Generator(size, style_dim=style_dim, n_mlp=2, **kw, **g_kwargs)
    g_ema = Generator(size, style_dim=style_dim, n_mlp=2, **kw, **g_kwargs)
    d = Discriminator(size, **kw)
    with torch.no_grad():  # make G_ema differ from G and every noise / bias path live
        for p in list(g_ema.parameters()) + list(d.parameters()):
            p.add_(torch.randn_like(p) * 0.1)
    return g, d, g_ema.eval()


def _optimizers(g, d):
    g_opt = torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.0, 0.99))
    d_opt = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.0, 0.99))
    for net, opt in ((g, g_opt), (d, d_opt)):  # one step so the optimizer state is non-empty
        sum(p.sum() for p in net.parameters()).backward()
        opt.step()
        opt.zero_grad()
    return g_opt, d_opt


def _g_out(g, seed=5):
    gen = torch.Generator().manual_seed(seed)
    gin = torch.randn(2, 4, g.size, g.size, generator=gen)
    codes = torch.randn(2, g.n_exemplar, g.style_dim, generator=gen)
    z = torch.randn(2, g.style_dim, generator=gen)
    with torch.no_grad():
        return g.eval()(gin, codes, [z], noise=g.make_noise(generator=gen))


def _d_out(d):
    x = torch.randn(4, 3, d.size, d.size, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        return d.eval()(x)


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------ our format
def test_our_format_round_trip(tmp_path):
    g, d, g_ema = _nets(exemplar_slots=(3, 4))
    g_opt, d_opt = _optimizers(g, d)
    config = {"model": {"size": 32}, "loss": {"lambda_id": 0.1}, "tags": ["a", "b"]}
    ckpt = make_checkpoint(g=g, d=d, g_ema=g_ema, g_optim=g_opt, d_optim=d_opt, step=1234,
                           config=config, best_metric={"fid": 12.5})
    path = tmp_path / "ckpt" / "000001234.pt"
    save_checkpoint(ckpt, path)
    assert os.listdir(path.parent) == ["000001234.pt"]  # no temp file left behind

    raw = torch.load(path, weights_only=True)  # loadable with plain weights_only, no allow-list
    assert raw["step"] == 1234 and raw["config"] == config and raw["best_metric"] == {"fid": 12.5}
    assert raw["arch"]["g"]["exemplar_slots"] == [3, 4]
    opt2 = torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.0, 0.99))
    opt2.load_state_dict(raw["g_optim"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], g_opt.state_dict()["state"][0]["exp_avg"])

    g2 = load_generator(path)
    assert (g2.exemplar_start, g2.n_exemplar) == (3, 4)  # recorded, not the default rule
    assert not g2.training
    _assert_same_state(g2, g_ema)
    assert torch.equal(_g_out(g2), _g_out(g_ema))
    _assert_same_state(load_generator(path, which="g"), g)
    d2 = load_discriminator(path)
    _assert_same_state(d2, d)
    assert torch.equal(_d_out(d2), _d_out(d))


def test_rng_state_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = tmp_path / "rng.pt"
    save_checkpoint({"rng": capture_rng_state()}, path)
    expect = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(safe_load(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expect


def test_save_is_atomic_and_refuses_unloadable_values(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"step": 1}, path)
    with pytest.raises(CheckpointError, match=r"Refusing to save .*numpy"):
        save_checkpoint({"step": 2, "best_metric": np.float64(3.0)}, path)
    with pytest.raises(CheckpointError, match="Refusing to save"):
        save_checkpoint({"step": 2, "fn": lambda: 0}, path)
    assert safe_load(path) == {"step": 1}  # the old file is intact
    assert os.listdir(tmp_path) == ["ckpt.pt"]
    save_checkpoint({"step": 3}, path)  # overwriting replaces it
    assert safe_load(path) == {"step": 3}


# ------------------------------------------------------------------------------ authors' format
def _authors_file(tmp_path, g, d, g_ema):
    g_opt, d_opt = _optimizers(g, d)
    args = argparse.Namespace(size=g.size, latent=g.style_dim, n_mlp=2, channel_multiplier=2,
                              batch=4, iter=800000, path="/data/celeba", r1=10.0, ckpt=None)
    path = tmp_path / "100000.pt"
    torch.save({"g": g.state_dict(), "d": d.state_dict(), "g_ema": g_ema.state_dict(),
                "g_optim": g_opt.state_dict(), "d_optim": d_opt.state_dict(), "args": args}, path)
    return path


def test_authors_training_checkpoint_loads_through_the_allow_list(tmp_path):
    g, d, g_ema = _nets()
    path = _authors_file(tmp_path, g, d, g_ema)
    with pytest.raises(Exception):  # plain weights_only refuses the Namespace ...
        torch.load(path, weights_only=True)
    ckpt = safe_load(path)  # ... ours allows exactly that class
    assert isinstance(ckpt["args"], argparse.Namespace) and ckpt["args"].size == 32

    g2 = load_generator(path)
    assert (g2.size, g2.style_dim, g2.exemplar_start, g2.n_exemplar) == (32, 16, 4, 4)
    _assert_same_state(g2, g_ema)
    assert torch.equal(_g_out(g2), _g_out(g_ema))
    d2 = load_discriminator(path)
    assert torch.equal(_d_out(d2), _d_out(d))


def test_bare_generator_release_loads_with_inferred_architecture(tmp_path):
    _, _, g_ema = _nets(size=64)  # channels {4..64: 32}: cap 32 inferred
    path = tmp_path / "EXE_GAN_model_64.pt"
    torch.save(g_ema.state_dict(), path)
    g2 = load_generator(path)
    assert (g2.size, g2.style_dim, g2.n_latent) == (64, 16, 10)
    assert g2.channels == g_ema.channels
    assert torch.equal(_g_out(g2), _g_out(g_ema))
    with pytest.raises(CheckpointError, match="bare state dict"):
        load_discriminator(path)


@pytest.mark.parametrize("size", [256, 512])
def test_architecture_inferred_from_full_size_state_dicts(size):
    with torch.device("meta"):
        g, d = Generator(size), Discriminator(size)
    arch = infer_generator_arch(g.state_dict())
    assert (arch["size"], arch["style_dim"], arch["n_mlp"]) == (size, 512, 8)
    assert (arch["channel_multiplier"], arch["channel_max"]) == (2, 512)
    # Without convs, the noise buffers give the size.
    no_convs = {k: v for k, v in g.state_dict().items() if not k.startswith("convs.")}
    assert infer_generator_arch(no_convs)["size"] == size
    arch_d = infer_discriminator_arch(d.state_dict())
    assert (arch_d["size"], arch_d["channel_multiplier"], arch_d["channel_max"]) == (size, 2, 512)


def test_channel_multiplier_inferred_from_64px_layers():
    with torch.device("meta"):
        g = Generator(128, style_dim=32, n_mlp=1, channel_multiplier=1)  # 64x64 layers: 256
    arch = infer_generator_arch(g.state_dict())
    assert (arch["channel_multiplier"], arch["channel_max"]) == (1, 512)


# ------------------------------------------------------------------------------------- refusals
class _Payload:
    """Pickles as a call to _mark: running it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_mark, (self.marker,))


def _mark(path):
    with open(path, "w") as f:
        f.write("executed")
    return path


class _Custom:
    def __init__(self):
        self.x = 1


class _SneakyDict(collections.OrderedDict):
    pass


@pytest.mark.parametrize("kind", ["reduce", "custom_class", "ordereddict_subclass", "os_system",
                                  "legacy_format_os_system"])
def test_tampered_checkpoint_is_refused_and_nothing_runs(tmp_path, kind):
    marker = tmp_path / "executed.txt"
    _, _, g_ema = _nets(size=16)
    ckpt = {"g_ema": g_ema.state_dict(), "args": argparse.Namespace(size=16)}
    if kind == "reduce":
        ckpt["args"].payload = _Payload(marker)
        bad = "_mark"
    elif kind == "custom_class":
        ckpt["extra"] = _Custom()
        bad = "_Custom"
    elif kind == "ordereddict_subclass":
        ckpt["g_ema"] = _SneakyDict(ckpt["g_ema"])
        bad = "_SneakyDict"
    else:
        class _Shell:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))
        ckpt["x"] = _Shell()
        bad = "system"
    path = tmp_path / "tampered.pt"
    # The pre-1.6 (non-zip) format is only guarded by the weights-only unpickler itself.
    torch.save(ckpt, path, _use_new_zipfile_serialization=kind != "legacy_format_os_system")
    with pytest.raises(UnsafeCheckpointError) as err:
        load_generator(path)
    msg = str(err.value)
    assert str(path) in msg and bad in msg and "not on the allow-list" in msg
    with pytest.raises(UnsafeCheckpointError):
        safe_load(path)
    assert not marker.exists()


def test_resolution_mismatch_gives_one_clear_error(tmp_path):
    _, _, g_ema = _nets(size=32)
    path = tmp_path / "g32.pt"
    torch.save({"g_ema": g_ema.state_dict()}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_generator(path, size=64)
    msg = str(err.value)
    assert str(path) in msg
    assert "expected resolution 64" in msg and "found resolution 32" in msg
    assert "missing keys ['convs.6." in msg  # the first layer the file lacks


def test_channel_mismatch_names_both_channel_tables(tmp_path):
    _, _, g_ema = _nets(size=32)  # 32 channels everywhere
    path = tmp_path / "g32.pt"
    torch.save({"g_ema": g_ema.state_dict()}, path)
    with pytest.raises(CheckpointMismatchError, match=r"channels \{4: 16.*found resolution 32 with channels \{4: 32"):
        load_generator(path, channel_max=16)


def test_missing_garbage_and_wrong_content_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_generator(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"not a PyTorch checkpoint \(it holds text\)"):
        safe_load(junk)
    other = tmp_path / "other.pt"
    torch.save({"g_ema": {"encoder.weight": torch.zeros(2)}}, other)
    with pytest.raises(CheckpointError, match="not an EXE-GAN generator"):
        load_generator(other)
    with pytest.raises(CheckpointError, match=r"no 'g_ema' state dict .*\['d'\]"):
        torch.save({"d": {"a": torch.zeros(1)}}, other)
        load_generator(other)
