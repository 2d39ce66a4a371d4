"""Damaged LMDB packs are validated when opened (size against the environment's own record, the
header, the key index, a sampled decode): one sentence naming the pack and how to rebuild it,
never a signal, in train.py and test.py processes too."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from datasets.errors import DatasetError
from datasets.lmdb_dataset import LMDBDataset, close_reader, pack_damage, pack_folder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def pack(tmp_path):
    """A pack of 12 noise images (incompressible: many pages) at 16 and 64 px: (pack, folder)."""
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    out = tmp_path / "pack"
    pack_folder(str(folder), str(out), [16, 64], progress=False)
    close_reader(str(out))
    return str(out), str(folder)


def _truncate(pack, keep=3 * 4096):
    mdb = os.path.join(pack, "data.mdb")
    assert os.path.getsize(mdb) > 10 * keep  # the cut removes pages in use
    with open(mdb, "r+b") as f:
        f.truncate(keep)


def _run(*args):
    env = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def _one_error_line(proc, pack):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])  # not -SIGBUS (135)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"LMDB pack '{pack}' is damaged" in lines[0]
    assert "rebuild it: delete the folder and run python scripts/prepare_data.py" in lines[0]
    return lines[0]


def test_a_truncated_pack_is_one_sentence_in_train_and_test_processes_not_sigbus(pack, tmp_path):
    path, _ = pack
    _truncate(path)
    assert "cut short" in pack_damage(path)
    # The same read without the check: the process dies of SIGBUS (what used to happen).
    crash = _run("-c", "import lmdb, sys\n"
                       "env = lmdb.open(sys.argv[1], readonly=True, lock=False)\n"
                       "with env.begin() as t:\n"
                       "    print(sum(1 for _ in t.cursor()))", path)
    assert crash.returncode == -signal.SIGBUS

    g = {"size": 16, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 0.0625, "channel_max": 16}
    from models.generator import Generator
    torch.save(Generator(**g).state_dict(), tmp_path / "g.pt")
    proc = _run("test.py", "--ckpt", str(tmp_path / "g.pt"), "--data", path,
                "--allow-random-pretrained", "--metrics", "psnr", "--out", str(tmp_path / "res"))
    line = _one_error_line(proc, path)
    assert "cut short" in line and not (tmp_path / "res").exists()

    cfg = {"name": "tiny", "model": g, "data": {"train": path, "test": path, "num_workers": 0},
           "pretrained": {"allow_random": True}, "loss": {"allow_random_backbone": True},
           "train": {"batch": 2, "iters": 1, "device": "cpu"}, "eval": {"every": 0},
           "log": {"outdir": str(tmp_path / "runs"), "sample_every": 0, "progress": False}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    proc = _run("train.py", "--config", str(tmp_path / "tiny.yaml"))
    _one_error_line(proc, path)
    assert not (tmp_path / "runs").exists() or not os.listdir(tmp_path / "runs")  # nothing left


def test_an_empty_data_file_is_named(pack):
    path, _ = pack
    open(os.path.join(path, "data.mdb"), "w").close()
    with pytest.raises(DatasetError, match=r"is damaged \(data.mdb is empty\); rebuild it"):
        LMDBDataset(path, 16)


def test_a_file_that_is_not_lmdb_is_named(pack):
    path, _ = pack
    with open(os.path.join(path, "data.mdb"), "wb") as f:
        f.write(b"hello, this is not a database\n" * 400)
    with pytest.raises(DatasetError, match="does not start with an LMDB header"):
        LMDBDataset(path, 16)


def test_flipped_image_bytes_fail_the_sampled_decode_with_the_rebuild_command(pack):
    path, folder = pack
    mdb = os.path.join(path, "data.mdb")
    data = bytearray(open(mdb, "rb").read())
    at = 0
    while (at := data.find(b"IDAT", at)) >= 0:  # every image's pixel data
        for k in range(at + 6, at + 12):  # inside the zlib stream, clear of the LMDB node
            data[k] ^= 0xFF
        at += 4
    open(mdb, "wb").write(bytes(data))
    for size in (16, 64):
        with pytest.raises(DatasetError) as e:
            LMDBDataset(path, size)
        msg = str(e.value)
        assert "cannot be decoded" in msg and "\n" not in msg
        assert msg.endswith(f"run python scripts/prepare_data.py {folder} --out {path} --size {size}.")
        close_reader(path)


def test_a_missing_image_key_fails_the_index_check(pack):
    import lmdb
    path, folder = pack
    env = lmdb.open(path)
    with env.begin(write=True) as txn:
        txn.delete(b"16-0000005")
    env.close()
    with pytest.raises(DatasetError, match=r"its index holds 11 images of size 16, its metadata 12"):
        LMDBDataset(path, 16)
    close_reader(path)
    assert len(LMDBDataset(path, 64)) == 12  # the other size is whole


class _Broken(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        raise DatasetError(f"LMDB pack 'p' is damaged (image {i} ('x.png') cannot be decoded: "
                           f"broken data stream when reading image file); rebuild it.")


def test_a_damaged_image_read_in_a_dataloader_worker_is_still_one_sentence(capsys):
    from common.errors import report
    loader = torch.utils.data.DataLoader(_Broken(), batch_size=2, num_workers=1)
    with pytest.raises(DatasetError) as e:
        next(iter(loader))
    assert "Original Traceback" in str(e.value)  # what the worker's error looks like here
    assert report(e.value) == 2
    assert capsys.readouterr().err == ("error: LMDB pack 'p' is damaged (image 0 ('x.png') cannot be "
                                       "decoded: broken data stream when reading image file); "
                                       "rebuild it.\n")
