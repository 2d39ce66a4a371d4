"""scripts/prepare_data.py and scripts/make_mask_buckets.py on user errors: exit 2 with one
sentence (``error: ...``), checked before any work, and nothing half-made left behind (no empty
pack, no partial index, no copies); --copy-into inside the mask folder is not counted again."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import scripts.make_mask_buckets as buckets
import scripts.prepare_data as prepare
from datasets.mask_files import MaskFiles
from tests.datasets.test_masks import write_masks


def _one_sentence(capsys, needle):
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if line.startswith("error:")]
    assert len(err) == 1 and needle in err[0] and err[0].endswith("."), err
    return err[0]


@pytest.mark.parametrize("size", ["0", "-5", "100000"])
def test_prepare_data_refuses_bad_sizes(clean_folder, tmp_path, capsys, size):
    out = tmp_path / "pack"
    assert prepare.main([str(clean_folder), "--out", str(out), "--size", "16", size]) == 2
    _one_sentence(capsys, f"--size must be a whole number of pixels from 1 to 8192, got {size}")
    assert not out.exists()


@pytest.mark.parametrize("flags, needle", [
    (["--map-size-gb", "nan"], "--map-size-gb must be a finite number"),
    (["--map-size-gb", "0"], "--map-size-gb must be a finite number"),
    (["--workers", "-1"], "--workers must be 0"),
])
def test_prepare_data_refuses_bad_flags(clean_folder, tmp_path, capsys, flags, needle):
    out = tmp_path / "pack"
    assert prepare.main([str(clean_folder), "--out", str(out), "--size", "16", *flags]) == 2
    _one_sentence(capsys, needle)
    assert not out.exists()


def test_prepare_data_unwritable_outputs(clean_folder, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert prepare.main([str(clean_folder), "--out", str(a_file), "--size", "16"]) == 2
    _one_sentence(capsys, "exists and is not a folder")
    assert a_file.read_text() == "x"
    assert prepare.main([str(clean_folder), "--out", str(a_file / "pack"), "--size", "16"]) == 2
    _one_sentence(capsys, "Cannot create the output folder")
    assert prepare.main([str(clean_folder), "--out", "/proc/exegan-no-such/pack",
                         "--size", "16"]) == 2
    _one_sentence(capsys, "Cannot create the output folder '/proc/exegan-no-such/pack'")
    # A missing source: the output folder it would have made is gone again.
    out = tmp_path / "new" / "pack"
    assert prepare.main([str(tmp_path / "nothing"), "--out", str(out)]) == 2
    _one_sentence(capsys, "does not exist")
    assert not (tmp_path / "new").exists()


def test_an_all_bad_folder_leaves_no_empty_pack(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.png").write_bytes(b"not a png")
    out = tmp_path / "pack"
    assert prepare.main([str(bad), "--out", str(out), "--size", "16"]) == 2
    _one_sentence(capsys, "could be decoded; nothing was packed")
    assert not out.exists()
    # An empty folder given as --out stays, empty.
    out.mkdir()
    assert prepare.main([str(bad), "--out", str(out), "--size", "16"]) == 2
    assert out.is_dir() and os.listdir(out) == []


def test_make_mask_buckets_user_errors_exit_2_and_write_nothing(tmp_path, capsys):
    masks = write_masks(tmp_path / "masks")
    before = sorted(os.listdir(masks))
    for args, needle in [
        ([str(tmp_path / "nothing")], "does not exist"),
        ([str(masks), "--out", str(tmp_path)], "is a folder; give the index file's path"),
        ([str(masks), "--out", str(tmp_path / "no" / "index.json")], "does not exist; create it"),
        ([str(masks), "--copy-into", str(masks)], "is the mask folder or holds it"),
        ([str(masks), "--copy-into", str(tmp_path)], "is the mask folder or holds it"),
    ]:
        assert buckets.main(args) == 2, args
        _one_sentence(capsys, needle)
    assert sorted(os.listdir(masks)) == before
    # The index cannot be written: one sentence, no temporary file, no copies kept.
    copies = tmp_path / "copies"
    assert buckets.main([str(masks), "--out", "/proc/exegan_index.json",
                         "--copy-into", str(copies)]) == 2
    _one_sentence(capsys, "Cannot write the index --out '/proc/exegan_index.json'")
    assert not copies.exists()
    # An unreadable mask file: one sentence, nothing written.
    (masks / "broken.png").write_bytes(b"not a png")
    assert buckets.main([str(masks)]) == 2
    _one_sentence(capsys, "broken.png")
    assert sorted(os.listdir(masks)) == sorted(before + ["broken.png"])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert buckets.main([str(empty)]) == 2
    _one_sentence(capsys, "contains no image files")


def test_copies_inside_the_mask_folder_are_not_counted_again(tmp_path, capsys):
    masks = write_masks(tmp_path / "masks")
    n = len([f for f in os.listdir(masks) if f.endswith(".png")])
    copies = masks / "by_ratio"
    for _ in range(2):                                  # the same command twice
        assert buckets.main([str(masks), "--copy-into", str(copies)]) == 0
        assert f"{n} masks" in capsys.readouterr().out
        index = json.loads((masks / "mask_ratios.json").read_text())
        assert len(index["files"]) == n and not any(k.startswith("by_ratio") for k in index["files"])
    copied = [os.path.join(d, f) for d, _, fs in os.walk(copies) for f in fs if f.endswith(".png")]
    assert len(copied) == n
    # Without --copy-into too, and the mask generator reads the index as made.
    assert buckets.main([str(masks)]) == 0
    assert f"{n} masks" in capsys.readouterr().out
    assert len(MaskFiles(str(masks)).stats) == n
    # The copy folder itself is still a mask folder of its own.
    assert buckets.main([str(copies)]) == 0
    assert f"{n} masks" in capsys.readouterr().out


def test_prepare_data_still_packs_and_resumes(clean_folder, tmp_path, capsys):
    out = tmp_path / "pack"
    assert prepare.main([str(clean_folder), "--out", str(out), "--size", "16"]) == 0
    assert "8 images at sizes [16]" in capsys.readouterr().out
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(clean_folder / "new.png")
    assert prepare.main([str(clean_folder), "--out", str(out), "--size", "16"]) == 0
    assert "9 images" in capsys.readouterr().out


def test_a_write_failure_mid_pack_is_one_sentence_and_removes_the_pack(clean_folder, tmp_path,
                                                                       capsys):
    """LMDB's own write error through the real pack_folder (a map too small for the images, as
    a full disk would stop it): one sentence, exit 2, the new output folder removed."""
    out = tmp_path / "pack"
    assert prepare.main([str(clean_folder), "--out", str(out), "--size", "64",
                         "--map-size-gb", "0.00002"]) == 2
    _one_sentence(capsys, f"Cannot write the pack '{out}' (")
    assert not out.exists()


def test_a_copy_failure_removes_the_copies_and_writes_no_index(tmp_path, capsys, monkeypatch):
    import errno
    import shutil

    masks = write_masks(tmp_path / "masks")
    real_copy, done = shutil.copy2, []

    def copy2(src, dst, **k):
        if len(done) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        done.append(dst)
        return real_copy(src, dst, **k)

    monkeypatch.setattr(shutil, "copy2", copy2)
    copies = tmp_path / "out" / "copies"
    assert buckets.main([str(masks), "--copy-into", str(copies)]) == 2
    _one_sentence(capsys, "Cannot copy the masks into --copy-into")
    assert not (tmp_path / "out").exists() and len(done) == 3
    assert not (masks / "mask_ratios.json").exists()
    assert not [f for f in os.listdir(masks) if f.endswith(".tmp")]
