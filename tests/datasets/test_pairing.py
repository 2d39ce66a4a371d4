"""datasets/pairing.py: the one name-pairing rule of test.py and the application scripts."""
import numpy as np
import pytest
from PIL import Image

from datasets.errors import DatasetError, MaskError
from datasets.exemplars import ExemplarFolder
from datasets.mask_files import PairedMasks
from datasets.pairing import (FolderPairing, NamedFiles, NamePattern, parse_pair_by,
                              suggest_pair_by, suggest_roles, roles_named)


def _touch(path, value=0, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8), "L").save(path)


def test_name_pattern_maps_stems_to_keys_and_back():
    p = NamePattern("{name}_mask")
    assert p.key("x_mask") == "x" and p.key("sub/x_mask") == "sub/x"
    assert p.stem("sub/x") == "sub/x_mask"
    assert p.key("x") is None and p.key("_mask") is None and p.key("x_mask_2") is None
    q = NamePattern("mask_{name}")
    assert q.key("a/mask_01") == "a/01" and q.stem("a/01") == "a/mask_01"
    assert NamePattern().key("a/01") == "a/01" and NamePattern().generic
    for bad in ("mask", "{name}{name}", ""):
        with pytest.raises(ValueError):
            NamePattern(bad)


def test_parse_pair_by():
    got = parse_pair_by(["gt={name}_real", "mask={name}_mask"], ("image", "mask", "pred"),
                        {"gt": "image"})
    assert got == {"image": NamePattern("{name}_real"), "mask": NamePattern("{name}_mask"),
                   "pred": NamePattern()}
    with pytest.raises(ValueError, match="is not ROLE=PATTERN with ROLE one of image, mask"):
        parse_pair_by(["sketch={name}"], ("image", "mask"))
    with pytest.raises(ValueError, match="twice"):
        parse_pair_by(["mask={name}_m", "mask={name}_n"], ("image", "mask"))
    with pytest.raises(ValueError, match="exactly once"):
        parse_pair_by(["mask=_mask"], ("image", "mask"))


def test_named_files_share_a_folder_by_pattern(tmp_path):
    for stem in ("1_real", "1_mask", "1_exe", "2_real", "2_mask", "2_exe", "notes_x"):
        _touch(tmp_path / f"{stem}.png")
    masks = NamedFiles(str(tmp_path), NamePattern("{name}_mask"), "mask")
    assert masks.keys() == ["1", "2"] and masks.get("2").endswith("2_mask.png")
    # A plain {name} role in the same folder leaves the other roles' files alone.
    plain = NamedFiles(str(tmp_path), NamePattern(), "image",
                       exclude=[NamePattern("{name}_mask"), NamePattern("{name}_exe")])
    assert sorted(plain.keys()) == ["1_real", "2_real", "notes_x"]
    # Last path component fallback when unique; a duplicate key is an error.
    _touch(tmp_path / "sub" / "3_mask.png")
    again = NamedFiles(str(tmp_path), NamePattern("{name}_mask"), "mask")
    assert again.get("other/3").endswith("3_mask.png")
    _touch(tmp_path / "1_mask.jpg")
    with pytest.raises(MaskError, match="share the name '1'"):
        NamedFiles(str(tmp_path), NamePattern("{name}_mask"), "mask", error=MaskError)


def test_missing_partner_message_and_suggestion(tmp_path):
    for stem in ("1_mask", "2_mask"):
        _touch(tmp_path / f"{stem}.png")
    files = NamedFiles(str(tmp_path), NamePattern(), "mask", "--mask")
    keys = ["1_real", "2_real"]
    msg = files.missing_message(files.missing(keys), all_keys=keys)
    assert "--mask" in msg and "has no mask for 2 of 2 image(s) ('1_real', '2_real')" in msg
    assert "looked for '1_real.*'" in msg
    assert msg.endswith("suggest --pair-by image={name}_real mask={name}_mask.")
    assert suggest_pair_by(["x", "y"], ["x_mask", "y_mask"], "image", "mask") == "mask={name}_mask"
    # Different numbers are different images, not roles: no suggestion.
    assert suggest_pair_by(["004"], ["001", "002"], "image", "mask") is None
    assert suggest_pair_by(["a", "b", "c"], ["a_m"], "image", "mask") is None   # 1 of 3


def test_paired_masks_and_exemplars_use_the_patterns(tmp_path):
    _touch(tmp_path / "m" / "7_mask.png", 255)
    pm = PairedMasks(str(tmp_path / "m"), pattern=NamePattern("{name}_mask"),
                     image_pattern=NamePattern("{name}_real"))
    assert pm(8, name="7_real.png").sum().item() == 64
    pm.check(["7_real.png"])
    with pytest.raises(MaskError, match=r"looked for '8_mask\.\*' \(the partner of '8_real\.\*'\)"):
        pm.check(["8_real.png"])
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "7_exe.png")
    ex = ExemplarFolder(str(tmp_path), 8, pattern=NamePattern("{name}_exe"),
                        image_pattern=NamePattern("{name}_real"))
    assert ex.path_for("7_real.png").endswith("7_exe.png")
    with pytest.raises(DatasetError, match="has no exemplar for 1 of 1"):
        ex.check(["9_real.png"])


def test_folder_pairing_excludes_roles_in_the_same_folder(tmp_path):
    fp = FolderPairing({"image": NamePattern(), "mask": NamePattern("{name}_mask")},
                       {"image": str(tmp_path), "mask": str(tmp_path), "sketch": None})
    assert fp.exclude("image", str(tmp_path)) == [NamePattern("{name}_mask")]
    assert fp.exclude("image", str(tmp_path / "elsewhere")) == []
    assert fp.key_of_file("mask", "/x/a_mask.png") == "a"
    assert fp.key_of_file("image", "b.jpg") == "b"


def test_suggestions_give_each_role_the_suffix_that_names_it():
    """1_real / 1_mask / 1_out in one folder: the ground truth gets '_real', never '_mask'
    (which sorts first), and a completion named '_mask' is not offered either."""
    folder = [f"{i}_{s}" for i in (1, 2) for s in ("mask", "out", "real")]
    assert suggest_pair_by(["1_out", "2_out"], folder, "pred", "gt") == \
        "pred={name}_out gt={name}_real"
    assert suggest_pair_by(["1_mask", "1_out", "2_mask", "2_out"], ["1_real", "2_real"],
                           "pred", "gt") == "pred={name}_out gt={name}_real"
    assert suggest_pair_by(["1"], ["1_mask"], "pred", "gt") is None
    assert suggest_roles(folder, ("gt", "pred", "mask")) == \
        "gt={name}_real pred={name}_out mask={name}_mask"
    assert suggest_roles(["a_target", "a_result", "b_target", "b_result"], ("gt", "pred")) == \
        "gt={name}_target pred={name}_result"
    assert suggest_roles(["1", "2"], ("gt",)) is None
    assert roles_named("_unmasked") == set() and roles_named("{name}_mask") == {"mask"}
