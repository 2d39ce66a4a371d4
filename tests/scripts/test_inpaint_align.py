"""--align in scripts/inpaint.py and scripts/style_mix.py on a real photo (scikit-image's astronaut, a
public-domain NASA portrait) with the real detector (facenet-pytorch's MTCNN, installed by `make`):
one face with its landmarks where a face has them, photo-sized results whose every pixel outside the
hole is the photo's, the transform written next to them; folders with --skip-existing; and the
one-sentence errors (no face, --face out of range, a hole outside the crop, a hole over two faces,
no detector), each with nothing written."""
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from inference.detect import make_detector
from inference.io import read_rgb
from scripts import cli_common as cli
from scripts import inpaint, style_mix

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))



def test_make_installs_the_pinned_detector_and_it_imports_with_our_torch():
    """`make` (the README's two commands) installs requirements-nodeps.txt without its dependency
    pins; --align needs it, so a missing or other version is a failure here, not a skip."""
    from importlib.metadata import PackageNotFoundError, version
    with open(os.path.join(ROOT, "requirements-nodeps.txt"), encoding="utf-8") as f:
        pins = dict(line.strip().split("==") for line in f if "==" in line and not line.startswith("#"))
    try:
        assert version("facenet-pytorch") == pins["facenet-pytorch"]
    except PackageNotFoundError:
        pytest.fail("facenet-pytorch is not installed; run `make venv` (it installs requirements-nodeps.txt)")
    import facenet_pytorch  # noqa: F401 - its own imports (requests, torchvision, tqdm) work with ours


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data
    return data.astronaut()


@pytest.fixture(scope="module")
def detector():
    return make_detector("cpu")


def test_the_detector_finds_the_astronaut_and_her_landmarks(astronaut, detector):
    faces = detector(astronaut)
    assert len(faces) == 1
    f = faces[0]
    x0, y0, x1, y1 = f.box
    # The face is in the upper middle of the 512 x 512 portrait (eyes ~ (205, 102) and (247, 104)).
    assert 150 < x0 < 200 and 230 < x1 < 300 and 30 < y0 < 90 and 150 < y1 < 200, f.box
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = f.landmarks
    assert x0 < lex < nx < rex < x1 and x0 < lmx < nx < rmx < x1        # left to right
    assert y0 < max(ley, rey) < ny < min(lmy, rmy) < y1                   # eyes, nose, mouth downwards
    assert 30 < rex - lex < 60 and f.score > 0.95
    # A photo larger than the detector's copy: the landmarks come back in the photo's pixels.
    big = np.asarray(Image.fromarray(astronaut).resize((2048, 2048), Image.BICUBIC))
    (g,) = detector(big)
    assert np.abs(g.landmarks / 4 - f.landmarks).max() < 3.0


def _write(tmp_path, astronaut):
    Image.fromarray(astronaut).save(tmp_path / "astro.png")
    hole = np.zeros(astronaut.shape[:2], bool)
    hole[118:150, 205:250] = True                                        # nose and mouth
    Image.fromarray(hole.astype(np.uint8) * 255).save(tmp_path / "astro_mask.png")
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(tmp_path / "exemplar.png")
    return hole


def _args(files, tmp_path, *extra):
    return ["--ckpt", files["exe"], "--psp", files["psp"], "--image", str(tmp_path / "astro.png"),
            "--mask", str(tmp_path / "astro_mask.png"), "--exemplar", str(tmp_path / "exemplar.png"),
            "--out", str(tmp_path / "out"), "--align", *map(str, extra)]


def test_align_end_to_end_writes_photo_sized_results(files, tmp_path, astronaut):
    hole = _write(tmp_path, astronaut)
    assert inpaint.main(_args(files, tmp_path, "--samples", 2, "--save-transform", "--feather", 2)) == 0
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == ["astro_sample0.png", "astro_sample1.png", "astro_sheet.png",
                                       "astro_transform.json"]
    results = [np.asarray(Image.open(out / f"astro_sample{k}.png")) for k in range(2)]
    for r in results:
        assert r.shape == astronaut.shape
        assert np.array_equal(r[~hole], astronaut[~hole])          # every pixel outside the hole
        assert (r[hole] != astronaut[hole]).any(-1).mean() > 0.5   # the hole was filled
    assert not np.array_equal(results[0], results[1])
    record = json.loads((out / "astro_transform.json").read_text())
    with Image.open(out / "astro_sample0.png") as img:
        chunk = json.loads(img.text["exegan:transform"])
    assert chunk["matrix"] == record["matrix"] and record["photo_size"] == [512, 512]
    assert record["model_size"] == 16 and record["face_index"] == 0 and record["faces_found"] == 1
    assert record["feather"] == 2 and record["face"]["source"] == "detector"
    assert record["exemplar"]["face"]["box"][0] > 512 - 300  # the mirrored exemplar's face, found in it


def test_landmark_files_replace_the_detector_and_give_the_same_transform(files, tmp_path, astronaut, detector,
                                                                          monkeypatch):
    _write(tmp_path, astronaut)
    pts = detector(astronaut)[0].landmarks
    (tmp_path / "astro.json").write_text(json.dumps(pts.tolist()))
    ex = detector(np.ascontiguousarray(astronaut[:, ::-1]))[0].landmarks
    (tmp_path / "ex.txt").write_text(" ".join(f"{v:.4f}" for v in ex.ravel()))
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)   # no detector: the files must do
    assert inpaint.main(_args(files, tmp_path, "--landmarks", tmp_path / "astro.json", "--exemplar-landmarks",
                              tmp_path / "ex.txt", "--no-sheet")) == 0
    with Image.open(tmp_path / "out" / "astro_sample0.png") as img:
        record = json.loads(img.text["exegan:transform"])
    assert np.allclose(record["face"]["landmarks"], pts, atol=1e-3)


def test_errors_are_one_sentence_and_nothing_is_written(files, tmp_path, astronaut, capsys, monkeypatch):
    hole = _write(tmp_path, astronaut)
    chin = np.zeros_like(hole)
    chin[150:235, 190:260] = True                      # from the mouth down past the chin
    cases = [(hole, ["--face", "1"], "--face 1 but 1 face was found in"),
             (chin, [], "outside the aligned crop of face 0 (crop scale 1); pass --crop-scale"),
             (hole, ["--feather", "-1"], "--feather must be from 0 to 256")]
    for mask, extra, want in cases:
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "astro_mask.png")
        assert cli.run(inpaint.main, _args(files, tmp_path, *extra)) == 2
        err = capsys.readouterr().err
        assert want in err and err.count("\n") == 1 and "Traceback" not in err, err
        assert not (tmp_path / "out").exists()
    # The suggested --crop-scale holds that hole.
    Image.fromarray(chin.astype(np.uint8) * 255).save(tmp_path / "astro_mask.png")
    cli.run(inpaint.main, _args(files, tmp_path))
    scale = capsys.readouterr().err.split("pass --crop-scale ")[1].split(" ")[0]
    assert inpaint.main(_args(files, tmp_path, "--crop-scale", scale, "--no-sheet")) == 0
    r = np.asarray(Image.open(tmp_path / "out" / "astro_sample0.png"))
    assert np.array_equal(r[~chin], astronaut[~chin]) and (r[chin] != astronaut[chin]).any(-1).mean() > 0.5
    Image.fromarray(hole.astype(np.uint8) * 255).save(tmp_path / "astro_mask.png")
    os.rename(tmp_path / "out", tmp_path / "out-scaled")
    # A photo without a face: the exemplar serves as one (a blank grey picture).
    Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(tmp_path / "blank.png")
    Image.fromarray(np.pad(hole[:200, :300], 0).astype(np.uint8) * 255).save(tmp_path / "blank_mask.png")
    args = _args(files, tmp_path)
    args[args.index("--image") + 1] = str(tmp_path / "blank.png")
    args[args.index("--mask") + 1] = str(tmp_path / "blank_mask.png")
    assert cli.run(inpaint.main, args) == 2
    err = capsys.readouterr().err
    assert "no face was found in" in err and "blank.png; pass --landmarks" in err, err
    # Without the detector (a user who removed it): one sentence naming the install command.
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)
    assert cli.run(inpaint.main, _args(files, tmp_path)) == 2
    err = capsys.readouterr().err
    assert "the face detector is not installed" in err and "pip install --no-deps facenet-pytorch" in err, err
    assert not (tmp_path / "out").exists()
    # --align's options without --align
    assert cli.run(inpaint.main, _args(files, tmp_path, "--feather", 3)[:-3] + ["--feather", "3"]) == 2
    assert "--feather only applies with --align" in capsys.readouterr().err


def test_two_faces_hole_over_both_and_face_choice(files, tmp_path, astronaut, capsys):
    # Two astronauts side by side; a hole on the right one is completed there, one across both is refused.
    two = np.concatenate([astronaut[:, 100:400], astronaut[:, 100:400]], 1)      # 600 x 512, faces at x~125, ~425
    Image.fromarray(two).save(tmp_path / "two.png")
    Image.fromarray(astronaut).save(tmp_path / "exemplar.png")
    right = np.zeros(two.shape[:2], bool)
    right[118:150, 405:450] = True
    across = np.zeros(two.shape[:2], bool)
    across[125:140, 120:440] = True

    def run(hole, *extra):
        Image.fromarray(hole.astype(np.uint8) * 255).save(tmp_path / "two_mask.png")
        args = ["--ckpt", files["exe"], "--psp", files["psp"], "--image", str(tmp_path / "two.png"), "--mask",
                str(tmp_path / "two_mask.png"), "--exemplar", str(tmp_path / "exemplar.png"), "--out",
                str(tmp_path / "out"), "--align", "--no-sheet", *extra]
        return cli.run(inpaint.main, args)

    assert run(across) == 2
    err = capsys.readouterr().err
    assert "spreads over 2 faces (faces 0 and 1" in err, err
    assert not (tmp_path / "out").exists()
    assert run(right) == 0
    r = np.asarray(Image.open(tmp_path / "out" / "two_sample0.png"))
    assert np.array_equal(r[~right], two[~right])
    with Image.open(tmp_path / "out" / "two_sample0.png") as img:
        record = json.loads(img.text["exegan:transform"])
    assert record["faces_found"] == 2 and record["face"]["box"][0] > 300          # the right face


def test_folders_with_progress_and_skip_existing(files, tmp_path, astronaut):
    hole = _write(tmp_path, astronaut)
    photos, masks = tmp_path / "photos", tmp_path / "masks"
    photos.mkdir()
    masks.mkdir()
    for name, img in (("a", astronaut), ("b", np.ascontiguousarray(astronaut[:, ::-1]))):
        Image.fromarray(img).save(photos / f"{name}.png")
        Image.fromarray((hole if name == "a" else hole[:, ::-1]).astype(np.uint8) * 255).save(masks / f"{name}.png")
    args = ["--ckpt", files["exe"], "--psp", files["psp"], "--image", str(photos), "--mask", str(masks),
            "--exemplar", str(tmp_path / "exemplar.png"), "--out", str(tmp_path / "out"), "--align",
            "--save-transform", "--no-sheet"]
    assert inpaint.main(args) == 0
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == ["a_sample0.png", "a_transform.json", "b_sample0.png", "b_transform.json"]
    first = (out / "b_sample0.png").read_bytes()
    os.remove(out / "b_sample0.png")
    os.remove(out / "a_transform.json")
    assert inpaint.main(args + ["--skip-existing"]) == 0
    assert (out / "b_sample0.png").read_bytes() == first        # the resumed file is the one a full run writes
    assert sorted(os.listdir(out)) == ["a_sample0.png", "a_transform.json", "b_sample0.png", "b_transform.json"]
    # Other --align settings on resume: an error, not a silent mix.
    with pytest.raises(cli.CLIError, match="made with align"):
        inpaint.main(args + ["--skip-existing", "--feather", "4"])


def test_style_mix_align(files, tmp_path, astronaut):
    hole = _write(tmp_path, astronaut)
    args = ["--ckpt", files["exe"], "--psp", files["psp"], "--image", str(tmp_path / "astro.png"),
            "--mask", str(tmp_path / "astro_mask.png"), "--exemplar-a", str(tmp_path / "exemplar.png"),
            "--exemplar-b", str(tmp_path / "astro.png"), "--out", str(tmp_path / "out"), "--align",
            "--save-cells", "--save-transform"]
    assert style_mix.main(args) == 0
    out = tmp_path / "out"
    assert "astro_transform.json" in os.listdir(out)
    a = np.asarray(Image.open(out / "astro_mix_A.png"))
    b = np.asarray(Image.open(out / "astro_mix_B.png"))
    for r in (a, b):
        assert r.shape == astronaut.shape and np.array_equal(r[~hole], astronaut[~hole])
    assert not np.array_equal(a, b)
    record = json.loads((out / "astro_transform.json").read_text())
    assert "exemplar_a" in record and "exemplar_b" in record


def test_exif_rotated_photo_comes_back_as_displayed(files, tmp_path, astronaut):
    """A phone photo stored sideways with an EXIF orientation: the mask is drawn on the photo as
    displayed, the result has the displayed size and every pixel outside the hole is the displayed one."""
    shown = np.ascontiguousarray(astronaut[:, 60:460])                      # 400 wide, 512 high, upright
    stored = np.ascontiguousarray(np.rot90(shown, 1))                      # stored rotated 90 degrees
    exif = Image.Exif()
    exif[0x0112] = 6                                                        # "rotate 90 CW to display"
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    displayed = read_rgb(str(tmp_path / "phone.jpg"))
    assert displayed.shape == shown.shape
    hole = np.zeros(shown.shape[:2], bool)
    hole[118:150, 145:190] = True
    Image.fromarray(hole.astype(np.uint8) * 255).save(tmp_path / "phone_mask.png")
    Image.fromarray(astronaut).save(tmp_path / "ex.png")
    out = tmp_path / "out"
    assert inpaint.main(["--ckpt", files["exe"], "--psp", files["psp"], "--image", str(tmp_path / "phone.jpg"),
                         "--mask", str(tmp_path / "phone_mask.png"), "--exemplar", str(tmp_path / "ex.png"),
                         "--align", "--no-sheet", "--out", str(out)]) == 0
    r = np.asarray(Image.open(out / "phone_sample0.png"))
    assert r.shape == displayed.shape and np.array_equal(r[~hole], displayed[~hole])


def test_sketch_strokes_reach_the_aligned_crop(files, tmp_path, astronaut):
    """--sketch with --align: strokes drawn on the photo steer the crop (a sketch model whose sketch
    column is non-zero gives another completion than without strokes), outside the hole nothing changes."""
    hole = _write(tmp_path, astronaut)
    strokes = np.zeros_like(hole)
    strokes[130:134, 200:255] = True                                     # a line across the hole
    Image.fromarray(strokes.astype(np.uint8) * 255).save(tmp_path / "astro_sketch.png")
    Image.fromarray(np.zeros_like(hole, np.uint8)).save(tmp_path / "blank_sketch.png")
    results = []
    for sketch in ("astro_sketch.png", "blank_sketch.png"):
        out = tmp_path / f"out_{sketch}"
        args = ["--ckpt", files["sketch"], "--psp", files["psp"], "--image", str(tmp_path / "astro.png"),
                "--mask", str(tmp_path / "astro_mask.png"), "--exemplar", str(tmp_path / "exemplar.png"),
                "--sketch", str(tmp_path / sketch), "--align", "--no-sheet", "--out", str(out)]
        assert inpaint.main(args) == 0
        results.append(np.asarray(Image.open(out / "astro_sample0.png")))
    for r in results:
        assert np.array_equal(r[~hole], astronaut[~hole])
    assert not np.array_equal(results[0][hole], results[1][hole])
