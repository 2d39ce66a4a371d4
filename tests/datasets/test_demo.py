"""Demo faces: layout, determinism, idempotence, attribute records that match the pixels."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from datasets.demo import make_demo_faces
from datasets.errors import DatasetError
from datasets.face_drawing import SKIN_TONES
from datasets.folder import ImageFolderDataset

SIZE = 32


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "faces"
    return make_demo_faces(str(root), n=40, size=SIZE, seed=0, n_test=8, n_real=2)


def test_layout_and_manifest(demo):
    assert demo.generated
    assert sorted(os.listdir(demo.train)) == [f"{i:06d}.png" for i in range(40)]
    assert sorted(os.listdir(demo.test)) == [f"{i:06d}.png" for i in range(8)]
    assert sorted(os.listdir(demo.real)) == ["astronaut_00.png", "astronaut_01.png"]
    manifest = json.load(open(demo.manifest))
    assert manifest["params"] == {"n": 40, "n_test": 8, "size": SIZE, "seed": 0, "n_real": 2}
    assert len(manifest["files"]) == 50
    for entry in manifest["files"]:
        img = Image.open(os.path.join(demo.root, entry["file"]))
        assert img.size == (SIZE, SIZE) and img.mode == "RGB"
    ds = ImageFolderDataset(demo.train, SIZE)
    assert len(ds) == 40 and ds[0].shape == (3, SIZE, SIZE)


def test_second_call_reuses_and_new_params_regenerate(demo):
    before = {f: os.stat(os.path.join(demo.train, f)).st_mtime_ns for f in os.listdir(demo.train)}
    again = make_demo_faces(demo.root, n=40, size=SIZE, seed=0, n_test=8, n_real=2)
    assert not again.generated
    after = {f: os.stat(os.path.join(demo.train, f)).st_mtime_ns for f in os.listdir(demo.train)}
    assert before == after
    first = np.asarray(Image.open(os.path.join(demo.train, "000000.png")))
    other = make_demo_faces(demo.root, n=40, size=SIZE, seed=1, n_test=8, n_real=2)
    assert other.generated
    assert not np.array_equal(first, np.asarray(Image.open(os.path.join(demo.train,
                                                                        "000000.png"))))
    make_demo_faces(demo.root, n=40, size=SIZE, seed=0, n_test=8, n_real=2)  # restore


def test_same_seed_same_bytes_and_prefix_property(demo, tmp_path):
    small = make_demo_faces(str(tmp_path / "small"), n=5, size=SIZE, seed=0, n_test=8)
    for i in range(5):  # face i depends only on (seed, split, i)
        a = open(os.path.join(small.train, f"{i:06d}.png"), "rb").read()
        b = open(os.path.join(demo.train, f"{i:06d}.png"), "rb").read()
        assert a == b


def test_faces_vary_and_match_their_attributes(demo):
    train = [a for a in demo.attributes if a["split"] == "train"]
    assert len({a["hair_style"] for a in train}) >= 4
    assert len({a["skin_tone"] for a in train}) >= 4
    assert any(a["glasses"] != "none" for a in train)
    assert len({a["mouth"] for a in train}) == 3
    images = [np.asarray(Image.open(os.path.join(demo.root, a["file"])), np.float64)
              for a in train]
    flat = np.stack([im.ravel() for im in images])
    assert np.min([np.abs(flat[i] - flat[j]).mean() for i in range(10) for j in range(i)]) > 5
    checked = 0
    # The cheek below each eye shows the recorded skin tone, shaded (one common factor).
    for a, im in zip(train, images):
        h = a["head"]
        x = (h["cx"] + 0.42 * h["rx"]) * SIZE
        y = (h["cy"] + 0.35 * h["rx"] * h["aspect"]) * SIZE
        if a["beard"] == "beard" or a["hair_style"] == "long" or a["blush"]:
            continue  # the cheek may be covered or tinted
        pixel = im[int(y) - 1:int(y) + 1, int(x) - 1:int(x) + 1].reshape(-1, 3).mean(0)
        ratio = pixel / np.array(SKIN_TONES[a["skin_tone"]])
        assert 0.45 < ratio.mean() < 1.15, (a["file"], ratio)
        assert ratio.std() < 0.12, (a["file"], ratio)
        checked += 1
    assert checked >= 15


def test_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DatasetError, match="holds other files"):
        make_demo_faces(str(tmp_path / "mine"), n=2, size=SIZE)
    assert (tmp_path / "mine" / "thesis.tex").exists()


def test_manifest_attributes_redraw_the_saved_faces(demo):
    """The recorded attributes are exactly what was drawn: drawing a manifest entry again without
    the sensor noise gives the saved PNG up to that noise (std 2.5 levels), and changing one
    recorded attribute (hair colour) changes the drawing where the hair is."""
    from datasets.face_drawing import HAIR_COLORS, draw_face
    for a in [a for a in demo.attributes if a["split"] == "test"][:4]:
        saved = np.asarray(Image.open(os.path.join(demo.root, a["file"])), np.float64)
        redrawn = np.asarray(draw_face(a, SIZE, np.random.default_rng(0), noise=0.0), np.float64)
        assert np.abs(saved - redrawn).mean() < 3.0, a["file"]
        other = dict(a, hair_color=next(c for c in HAIR_COLORS if c != a["hair_color"]))
        changed = np.asarray(draw_face(other, SIZE, np.random.default_rng(0), noise=0.0), np.float64)
        assert np.abs(changed - redrawn).max() > 20, a["file"]
