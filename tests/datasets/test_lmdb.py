"""LMDB packing: pixel-exact round trip, several sizes, resuming, corrupt files, the CLI."""
import pickle

import pytest
import torch

import datasets.lmdb_dataset as lmdb_dataset
from datasets.errors import DatasetError
from datasets.folder import ImageFolderDataset
from datasets.lmdb_dataset import LMDBDataset, open_dataset, pack_folder

SIZES = (16, 32)


def assert_same(a, b):
    assert a.names == b.names and len(a) == len(b)
    for i in range(len(a)):
        assert torch.equal(a[i], b[i]), f"item {i} ({a.names[i]}) differs"


def test_round_trip_equals_folder_pixel_for_pixel(clean_folder, tmp_path):
    out = tmp_path / "pack"
    meta = pack_folder(str(clean_folder), str(out), SIZES, progress=False)
    assert meta["length"] == 8 and meta["sizes"] == list(SIZES)
    for size in SIZES:
        assert_same(LMDBDataset(str(out), size), ImageFolderDataset(clean_folder, size))


def test_workers_give_the_same_pack(clean_folder, tmp_path):
    pack_folder(str(clean_folder), str(tmp_path / "w"), [16], workers=2, progress=False)
    assert_same(LMDBDataset(str(tmp_path / "w"), 16), ImageFolderDataset(clean_folder, 16))


def test_interrupted_pack_is_refused_then_resumed(clean_folder, tmp_path, monkeypatch):
    out = str(tmp_path / "pack")
    assert pack_folder(str(clean_folder), out, [16], limit=3, progress=False) is None
    with pytest.raises(DatasetError, match="incomplete"):
        LMDBDataset(out, 16)

    encoded = []
    real = lmdb_dataset._encode_one

    def counting(job):
        encoded.append(job[1])
        return real(job)

    monkeypatch.setattr(lmdb_dataset, "_encode_one", counting)
    pack_folder(str(clean_folder), out, [16], progress=False)
    assert len(encoded) == 8 - 3  # the three stored images are not decoded again
    assert_same(LMDBDataset(out, 16), ImageFolderDataset(clean_folder, 16))

    encoded.clear()
    pack_folder(str(clean_folder), out, [16], progress=False)  # complete: nothing to do
    assert encoded == []


def test_adding_a_size_and_asking_for_a_missing_one(clean_folder, tmp_path):
    out = str(tmp_path / "pack")
    pack_folder(str(clean_folder), out, [16], progress=False)
    with pytest.raises(DatasetError, match=r"holds sizes \[16\], not 32.*--size 32"):
        LMDBDataset(out, 32)
    meta = pack_folder(str(clean_folder), out, [32], progress=False)
    assert meta["sizes"] == [16, 32]
    assert_same(LMDBDataset(out, 32), ImageFolderDataset(clean_folder, 32))
    assert_same(LMDBDataset(out, 16), ImageFolderDataset(clean_folder, 16))


def test_corrupt_files_are_skipped_and_listed(mixed_folder, tmp_path):
    root, _ = mixed_folder
    with pytest.warns(UserWarning, match=r"corrupt\.png"):
        meta = pack_folder(str(root), str(tmp_path / "p"), [32], progress=False)
    assert meta["skipped"] == [str(root / "corrupt.png")]
    with pytest.warns(UserWarning):
        folder = ImageFolderDataset(root, 32)
    assert_same(LMDBDataset(str(tmp_path / "p"), 32), folder)


def test_open_dataset_and_pickling(clean_folder, tmp_path):
    out = str(tmp_path / "pack")
    pack_folder(str(clean_folder), out, [16], progress=False)
    assert isinstance(open_dataset(out, 16), LMDBDataset)
    assert isinstance(open_dataset(str(clean_folder), 16), ImageFolderDataset)
    ds = LMDBDataset(out, 16, hflip=True, seed=0)
    first = ds[0]
    clone = pickle.loads(pickle.dumps(ds))  # what DataLoader workers receive
    assert torch.equal(clone[0], first)
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(str(tmp_path / "missing"), 16)


def test_prepare_data_cli(clean_folder, tmp_path, capsys):
    import scripts.prepare_data as prepare

    with pytest.raises(SystemExit) as e:
        prepare.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for needle in ("workflow", "--size", "train", "test", "resume", "{size}-{index:07d}"):
        assert needle in text
    out = tmp_path / "cli"
    assert prepare.main([str(clean_folder), "--out", str(out), "--size", "16", "32"]) == 0
    assert "8 images at sizes [16, 32]" in capsys.readouterr().out
    assert_same(LMDBDataset(str(out), 32), ImageFolderDataset(clean_folder, 32))
    assert prepare.main([str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_dataloader_workers_read_the_pack(clean_folder, tmp_path):
    out = str(tmp_path / "pack")
    pack_folder(str(clean_folder), out, [16], progress=False)
    ds = LMDBDataset(out, 16)
    ds[0]  # the parent process holds a handle; workers must open their own
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    batches = torch.cat(list(loader))
    assert torch.equal(batches, torch.stack([ds[i] for i in range(len(ds))]))
