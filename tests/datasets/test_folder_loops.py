"""A dataset folder whose symbolic links loop back to an ancestor (or link one folder twice):
each real folder is walked once, with one warning."""
import os
import warnings

import numpy as np
from PIL import Image

from datasets.folder import ImageFolderDataset
from datasets.imaging import scan_images


def _folder(tmp_path):
    root = tmp_path / "faces"
    (root / "sub" / "deeper").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, where in enumerate(["", "", "", "", "sub", "sub", "sub/deeper", "sub/deeper"]):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / where / f"{i}.png")
    return root


def test_a_link_back_to_an_ancestor_is_walked_once_with_one_warning(tmp_path):
    root = _folder(tmp_path)
    # -> faces: a loop (one is enough: a walk that follows it reads 8 images 40 times over, to
    # the kernel's limit of nested links; two such loops would take it exponentially long)
    os.symlink("../..", root / "sub" / "deeper" / "up")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        names = scan_images(str(root))
    assert names == ["0.png", "1.png", "2.png", "3.png", "sub/4.png", "sub/5.png",
                     "sub/deeper/6.png", "sub/deeper/7.png"]
    loops = [str(x.message) for x in w if "second time" in str(x.message)]
    assert len(loops) == 1 and "sub/deeper/up" in loops[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(ImageFolderDataset(str(root), 8)) == 8


def test_a_second_link_to_one_folder_counts_it_once_and_plain_links_still_work(tmp_path):
    root = _folder(tmp_path)
    other = tmp_path / "more"
    other.mkdir()
    Image.new("RGB", (8, 8)).save(other / "m.png")
    os.symlink(other, root / "a_link")   # a link to a folder outside: followed
    os.symlink(other, root / "b_link")   # the same folder again: skipped
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        names = scan_images(str(root))
    assert "a_link/m.png" in names and "b_link/m.png" not in names and len(names) == 9
    assert sum("second time" in str(x.message) for x in w) == 1
