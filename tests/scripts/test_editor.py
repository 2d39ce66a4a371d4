"""scripts/editor.py without a browser, the requests: the request handlers (inference/editor.py)
through the web app (Starlette's test client) on a tiny checkpoint. Results equal the
command-line tools' files bit for bit (same paste-back, seeding and style mixing), every bad input
is one sentence in the response, the photo / mask / exemplar / align handlers return what the
model reads (shared setup: tests/scripts/editor_common.py)."""
import json
import sys

import numpy as np
import pytest
from PIL import Image

from inference import editor as handlers
from inference import runtime
from inference.align import align
from inference.detect import Face
from inference.io import mask_warnings, read_exemplar, read_rgb, to_uint8
from scripts import cli_common as cli
from scripts import editor, inpaint, style_mix

pytest.importorskip("starlette")
from tests.scripts.editor_common import app_fixture, inputs_fixture  # noqa: E402, F401  (fixtures)
from tests.scripts.editor_common import data_url, decode, image_url, junk_url, local_client  # noqa: E402


def test_results_are_the_inpaint_clis_files_at_the_photos_size(app, files, h, inputs, tmp_path):
    photo, hole, payload = inputs
    r = app.post("/api/run", json={**payload, "samples": 3, "seed": 7, "truncation": 0.8})
    assert r.status_code == 200, r.text
    data = r.json()
    out = tmp_path / "cli"
    assert inpaint.main(["--ckpt", files["exe"], "--psp", files["psp"], "--image", str(tmp_path / "face.png"),
                         "--mask", str(tmp_path / "face_mask.png"), "--exemplar", str(tmp_path / "ex_a.jpg"),
                         "--samples", "3", "--seed", "7", "--truncation", "0.8", "--out", str(out),
                         "--no-sheet"]) == 0
    assert [x["name"] for x in data["results"]] == [f"face_sample{k}.png" for k in range(3)]
    assert [x["seed"] for x in data["results"]] == [7, 8, 9]
    got = [decode(x["png"]) for x in data["results"]]
    for k, res in enumerate(got):
        assert res.shape == photo.shape                       # the photo's own resolution
        assert np.array_equal(res, h.read(out / f"face_sample{k}.png"))  # the CLI's result, bit for bit
        assert np.array_equal(res[~hole], photo[~hole])        # known pixels untouched
        assert (res[hole] != photo[hole]).mean() > 0.5
    assert not np.array_equal(got[0][hole], got[1][hole])      # K diverse samples
    assert data["mask"]["name"] == "face_mask.png"
    assert np.array_equal(decode(data["mask"]["png"]) > 127, hole)


def test_style_mixing_sample_k_is_the_style_mix_clis_cell_with_seed_plus_k(app, files, h, inputs, tmp_path):
    photo, hole, payload = inputs
    r = app.post("/api/run", json={**payload, "mix": True, "slot_first": 5, "slot_last": 5, "samples": 2,
                                   "seed": 3})
    assert r.status_code == 200, r.text
    data = r.json()
    assert [x["name"] for x in data["results"]] == ["face_mix_5-5_sample0.png", "face_mix_5-5_sample1.png"]
    for k in range(2):
        out = tmp_path / f"cli{k}"
        assert style_mix.main(["--ckpt", files["exe"], "--psp", files["psp"], "--image", str(tmp_path / "face.png"),
                               "--mask", str(tmp_path / "face_mask.png"), "--exemplar-a", str(tmp_path / "ex_a.jpg"),
                               "--exemplar-b", str(tmp_path / "ex_b.png"), "--seed", str(3 + k), "--save-cells",
                               "--out", str(out)]) == 0
        res = decode(data["results"][k]["png"])
        assert np.array_equal(res, h.read(out / "face_mix_5-5.png"))
        assert not np.array_equal(res, h.read(out / "face_mix_4-5.png"))  # the slot range matters
        assert np.array_equal(res[~hole], photo[~hole])


BAD = {  # name: (change to the good payload, start of the sentence shown in the page)
    "no photo": ({"photo": None}, "photo is missing; upload a photo first."),
    "photo not decodable": ({"photo": junk_url(), "photo_name": "broken.png"}, "Cannot decode image 'broken.png'"),
    "photo not a file": ({"photo": "C:/face.png"}, "photo face.png did not arrive as a file"),
    "photo damaged": ({"photo": "data:image/png;base64,@@@"}, "photo face.png arrived damaged"),
    "no hole": ({"mask": image_url(np.zeros((37, 45), np.uint8))}, "no hole is painted"),
    "no mask": ({"mask": None}, "mask is missing; paint the hole"),
    "mask of another size": ({"mask": image_url(np.full((10, 20), 255, np.uint8))},
                             "mask face_mask.png is 20x10 but its image is 45x37"),
    "painted mask of another size": ({"mask": image_url(np.full((10, 20), 255, np.uint8)),
                                      "mask_name": handlers.PAINTED}, "the painted mask is 20x10"),
    "grey mask": ({"mask": image_url(np.full((37, 45), 128, np.uint8))}, "Mask file 'face_mask.png' is not a binary mask"),
    "no exemplar": ({"exemplar_a": None}, "exemplar is missing; upload an exemplar face"),
    "exemplar not decodable": ({"exemplar_a": junk_url(), "exemplar_a_name": "ex.jpg"}, "Cannot decode image 'ex.jpg'"),
    "no exemplar B": ({"mix": True, "exemplar_b": None}, "exemplar B is missing"),
    "slot outside": ({"mix": True, "slot_first": 3}, "first slot i must be from 4 to 5, got 3."),
    "empty slot range": ({"mix": True, "slot_first": 5, "slot_last": 4}, "the slot range i..j = 5..4 is empty"),
    "no samples": ({"samples": 0}, "number of samples must be from 1 to 8, got 0."),
    "too many samples": ({"samples": "9"}, "number of samples must be from 1 to 8"),
    "fractional samples": ({"samples": 2.5}, "number of samples must be a whole number"),
    "truncation not a number": ({"truncation": "abc"}, "truncation must be a number from 0.0 to 1.0"),
    "truncation above 1": ({"truncation": 1.5}, "truncation must be from 0.0 to 1.0, got 1.5."),
    "negative seed": ({"seed": -1}, "seed must be from 0"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_every_bad_input_is_one_sentence_for_the_page(app, inputs, case):
    _, _, payload = inputs
    change, start = BAD[case]
    r = app.post("/api/run", json={**payload, **change})
    assert r.status_code == 400
    message = r.json()["error"]
    assert message.startswith(start), message
    assert "\n" not in message and "Traceback" not in message and message.endswith((".", ")"))


def test_photo_handler_returns_what_the_model_reads(app, tmp_path):
    # EXIF orientation 6 (rotate 90 degrees clockwise): stored 30x20, shown and read as 20x30.
    a = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(tmp_path / "p.jpg", exif=exif.tobytes(), quality=95)
    r = app.post("/api/photo", json={"photo": data_url(tmp_path / "p.jpg"), "photo_name": "p.jpg"}).json()
    want = read_rgb(str(tmp_path / "p.jpg"))
    assert want.shape == (30, 20, 3) and (r["width"], r["height"]) == (20, 30)
    assert np.array_equal(decode(r["photo"]), want)
    # Transparent pixels are composited on white, as the command-line tools read them.
    rgba = np.zeros((8, 9, 4), np.uint8)
    rgba[:4] = (10, 20, 30, 255)
    Image.fromarray(rgba).save(tmp_path / "t.png")
    got = decode(app.post("/api/photo", json={"photo": data_url(tmp_path / "t.png")}).json()["photo"])
    assert np.array_equal(got, read_rgb(str(tmp_path / "t.png")))
    assert (got[4:] == 255).all() and (got[:4] == (10, 20, 30)).all()


def test_mask_handler_gives_the_paint_layer_of_an_uploaded_mask(app, inputs, tmp_path):
    _, hole, payload = inputs
    r = app.post("/api/mask", json={"mask": payload["mask"], "mask_name": "m.png", "width": 45, "height": 37})
    layer = decode(r.json()["mask"])
    assert layer.shape == (37, 45, 4) and r.json()["hole_pixels"] == hole.sum()
    assert np.array_equal(layer[..., 3] == 255, hole) and (layer[hole] == 255).all() and (layer[~hole] == 0).all()
    flipped = app.post("/api/mask", json={"mask": payload["mask"], "width": 45, "height": 37, "mask_hole": "black"})
    assert np.array_equal(decode(flipped.json()["mask"])[..., 3] == 255, ~hole)
    r = app.post("/api/mask", json={"mask": payload["mask"], "mask_name": "m.png", "width": 40, "height": 37})
    assert r.status_code == 400 and r.json()["error"].startswith("mask m.png is 45x37 but its image is 40x37")


def test_exemplar_preview_is_the_models_crop(app, inputs, tmp_path):
    _, _, payload = inputs
    r = app.post("/api/exemplar", json={"exemplar_b": payload["exemplar_b"], "slot": "b"}).json()
    want = to_uint8(read_exemplar(str(tmp_path / "ex_b.png"), handlers.PREVIEW))
    assert np.array_equal(decode(r["preview"]), want)
    r = app.post("/api/exemplar", json={"exemplar_a": junk_url(), "exemplar_a_name": "x.gif"})
    assert r.status_code == 400 and r.json()["error"].startswith("Cannot decode image 'x.gif'")


def test_align_is_align_faces_from_a_landmark_file_or_the_detector(files, h, tmp_path):
    model = runtime.load_model(files["exe"], files["psp"], cli.resolve_device("cpu"), runtime="torch")
    pts = np.array([[30.5, 40.0], [52.0, 38.5], [41.0, 52.0], [33.0, 62.0], [50.0, 61.5]])
    found = []
    ed = handlers.Editor(model, align_size=48,
                       detector=lambda rgb: found.append(rgb.shape) or [Face.from_landmarks(pts, "test")])
    client = local_client(editor.create_app(ed))
    photo = h.write_rgb(tmp_path / "p.png", 90, 80, seed=5)
    want, _ = align(photo, pts, 48)
    base = {"photo": data_url(tmp_path / "p.png"), "photo_name": "p.png"}
    (tmp_path / "p.json").write_text(json.dumps({"p.png": pts.tolist()}))  # a name -> points map
    (tmp_path / "p.txt").write_text(" ".join(f"{v:g}" for v in pts.ravel()))
    for lm in ("p.json", "p.txt"):
        r = client.post("/api/align", json={**base, "landmarks": data_url(tmp_path / lm), "landmarks_name": lm})
        assert r.status_code == 200, r.text
        assert np.array_equal(decode(r.json()["photo"]), want) and r.json()["width"] == 48
    assert found == []
    r = client.post("/api/align", json=base)  # no landmark file: the detector's largest face
    assert np.array_equal(decode(r.json()["photo"]), want) and found == [(90, 80, 3)]
    (tmp_path / "bad.txt").write_text("1 2 3 4")
    r = client.post("/api/align", json={**base, "landmarks": data_url(tmp_path / "bad.txt"), "landmarks_name": "bad.txt"})
    assert r.status_code == 400
    assert r.json()["error"].startswith("landmark file bad.txt holds 2 points; give 5 landmarks"), r.json()
    ed._detector = lambda rgb: []
    r = client.post("/api/align", json=base)
    assert r.json()["error"].startswith("no face was found in photo p.png; upload a landmark file")


def test_align_without_landmarks_or_detector_says_how_to_get_one(app, h, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # import fails as if it were removed
    h.write_rgb(tmp_path / "p.png", 20, 20, seed=5)
    r = app.post("/api/align", json={"photo": data_url(tmp_path / "p.png")})
    assert r.status_code == 400
    msg = r.json()["error"]
    assert msg.startswith("no landmark file was given and the face detector cannot be used"), msg
    assert "pip install --no-deps facenet-pytorch" in msg and "--landmarks" not in msg


def test_a_bug_is_one_sentence_in_the_page_and_a_traceback_on_the_terminal(app, inputs, monkeypatch, capfd):
    _, _, payload = inputs

    def broken(*args, **kwargs):
        raise RuntimeError("shape mismatch deep inside")
    monkeypatch.setattr(handlers, "inpaint_one", broken)
    r = app.post("/api/run", json=payload)
    assert r.status_code == 500
    assert r.json()["error"] == ("internal error (RuntimeError); the terminal running the editor shows the "
                                 "details.")
    err = capfd.readouterr().err
    assert "Traceback" in err and "shape mismatch deep inside" in err
    assert app.post("/api/info", json={}).status_code == 200  # still serving


def test_implausible_masks_get_the_command_lines_warnings(app, h, inputs):
    _, hole, payload = inputs
    r = app.post("/api/run", json=payload).json()
    assert r["warnings"] == []
    big = np.ones((37, 45), bool)
    big[:5, :5] = False                                       # 98 % hole
    r = app.post("/api/run", json={**payload, "mask": image_url(big.astype(np.uint8) * 255)}).json()
    assert r["warnings"] == mask_warnings(big) and r["warnings"][0].startswith("the hole covers 98 %")
    r = app.post("/api/run", json={**payload, "mask": image_url(~hole * np.uint8(255))}).json()
    assert r["warnings"] == []  # inverted-looking: said when a mask file is uploaded, not at every run
    # An uploaded mask whose hole was drawn in black, read with white = hole.
    r = app.post("/api/mask", json={"mask": image_url(~hole * np.uint8(255)), "width": 45, "height": 37}).json()
    assert r["warnings"] == [mask_warnings(~hole)[0].replace(
        "pass --mask-hole black.", "switch 'black marks the hole' and upload the mask again.")]
    assert "looks inverted" in r["warnings"][0]
    r = app.post("/api/mask", json={"mask": image_url(~hole * np.uint8(255)), "width": 45, "height": 37,
                                    "mask_hole": "black"}).json()
    assert r["warnings"] == []


def test_align_automatically_is_the_clis_align_round_trip(files, h, tmp_path):
    """The page's "align automatically" gives the files of `inpaint.py --align` (same landmarks), at the
    photo's size; the face box comes back for the page; a hole outside the face's crop is the page's
    one sentence naming its own control."""
    from skimage import data
    photo = np.ascontiguousarray(data.astronaut()[20:420, 60:460])            # 400 x 400
    Image.fromarray(photo).save(tmp_path / "astro.png")
    hole = np.zeros(photo.shape[:2], bool)
    hole[100:128, 148:188] = True
    Image.fromarray(hole.astype(np.uint8) * 255).save(tmp_path / "astro_mask.png")
    Image.fromarray(np.ascontiguousarray(photo[:, ::-1])).save(tmp_path / "ex.png")
    pts = np.array([[145.0, 82.0], [187.0, 84.0], [165.0, 109.0], [142.0, 119.0], [185.0, 122.0]])
    ex_pts = pts * [-1, 1] + [399, 0]
    (tmp_path / "astro.json").write_text(json.dumps(pts.tolist()))
    (tmp_path / "ex.json").write_text(json.dumps(ex_pts.tolist()))

    model = runtime.load_model(files["exe"], files["psp"], cli.resolve_device("cpu"), runtime="torch")
    seen = []

    def detector(rgb):  # the photo's face, or the mirrored exemplar's
        seen.append(rgb.shape)
        return [Face.from_landmarks(pts if np.array_equal(rgb, photo) else ex_pts, "test")]

    client = local_client(editor.create_app(handlers.Editor(model, detector=detector)))
    payload = {"photo": data_url(tmp_path / "astro.png"), "photo_name": "astro.png",
               "mask": data_url(tmp_path / "astro_mask.png"), "mask_name": "painted mask",
               "exemplar_a": data_url(tmp_path / "ex.png"), "exemplar_a_name": "ex.png",
               "align": True, "feather": 2, "samples": 2, "seed": 3}
    r = client.post("/api/faces", json=payload)
    assert r.status_code == 200, r.text
    assert np.allclose(r.json()["faces"][0]["landmarks"], pts)
    r = client.post("/api/run", json=payload)
    assert r.status_code == 200, r.text
    got = [decode(x["png"]) for x in r.json()["results"]]
    assert r.json()["face"]["index"] == 0 and r.json()["transform"]["feather"] == 2

    out = tmp_path / "cli"
    assert inpaint.main(["--ckpt", files["exe"], "--psp", files["psp"], "--image", str(tmp_path / "astro.png"),
                         "--mask", str(tmp_path / "astro_mask.png"), "--exemplar", str(tmp_path / "ex.png"),
                         "--align", "--landmarks", str(tmp_path / "astro.json"), "--exemplar-landmarks",
                         str(tmp_path / "ex.json"), "--feather", "2", "--samples", "2", "--seed", "3",
                         "--out", str(out), "--no-sheet"]) == 0
    for k in range(2):
        want = h.read(out / f"astro_sample{k}.png")
        assert got[k].shape == photo.shape and np.array_equal(got[k], want)
        assert np.array_equal(got[k][~hole], photo[~hole])

    far = np.zeros_like(hole)
    far[150:200, 150:190] = True                                # from the mouth down the neck
    Image.fromarray(far.astype(np.uint8) * 255).save(tmp_path / "far.png")
    r = client.post("/api/run", json={**payload, "mask": data_url(tmp_path / "far.png")})
    assert r.status_code == 400
    msg = r.json()["error"]
    assert msg.startswith("the hole of astro.png reaches ") and "set 'crop scale' to" in msg, msg
    assert "--" not in msg
