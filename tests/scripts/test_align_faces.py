"""scripts/align_faces.py: the Umeyama fit recovers a known similarity transform, and an image whose
landmarks were placed by a known transform is warped so that the landmarks land on the template
within a pixel (shrinking and enlarging); landmark files in every accepted format; a clear error
when there is neither a landmark file nor a detector."""
import json
import math
import sys

import numpy as np
import pytest
from PIL import Image

from inference.align import apply, landmarks_from_files, template, to_five, umeyama
from scripts import align_faces as af
from scripts import cli_common as cli


def _similarity(scale, degrees, tx, ty):
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


def test_umeyama_recovers_a_known_similarity_without_reflection():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    m = _similarity(0.37, 23.0, 12.5, -40.0)
    assert np.allclose(umeyama(src, apply(m, src)), m, atol=1e-9)
    # Mirrored points: the best *rotation* is returned, never a reflection.
    mirrored = src * [-1, 1]
    fit = umeyama(mirrored, apply(m, src))
    assert np.linalg.det(fit[:, :2]) > 0


def _blob_image(h, w, points, sigma):
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w), np.float64)
    for x, y in points:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    img = np.clip(img * 255, 0, 255).astype(np.uint8)
    return np.stack([img] * 3, -1)


def _centroid(a, x, y, r):
    x0, y0 = int(round(x)), int(round(y))
    win = a[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1, 0].astype(np.float64)
    yy, xx = np.mgrid[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1]
    return (win * xx).sum() / win.sum(), (win * yy).sum() / win.sum()


@pytest.mark.parametrize("scale,degrees,size", [(0.3, 17.0, 64), (1.6, -8.0, 96)])  # photo shrunk / enlarged
def test_landmarks_land_on_the_template_within_a_pixel(h, tmp_path, scale, degrees, size):
    tpl = template(size)
    to_aligned = _similarity(scale, degrees, 7.0, -5.0)     # photo -> aligned, known
    inv = np.linalg.inv(np.vstack([to_aligned, [0, 0, 1]]))[:2]
    photo_pts = apply(inv, tpl)                           # where the landmarks are in the photo
    lo, hi = photo_pts.min(0), photo_pts.max(0)
    photo_pts = photo_pts - lo + 0.3 * (hi - lo).max() + 0.37  # fit inside a photo, sub-pixel offset
    W, H = (np.ceil(photo_pts.max(0) + 0.3 * (hi - lo).max())).astype(int)
    sigma = 1.2 / scale                                      # ~1.2 px blobs after alignment
    Image.fromarray(_blob_image(H, W, photo_pts, sigma)).save(tmp_path / "photo.png")
    (tmp_path / "photo.json").write_text(json.dumps({"landmarks": photo_pts.tolist()}))
    out = tmp_path / "out"
    assert af.main(["--image", str(tmp_path / "photo.png"), "--landmarks", str(tmp_path / "photo.json"),
                    "--size", str(size), "--pad", "black", "--save-transform", "--out", str(out)]) == 0
    aligned = h.read(out / "photo.png")
    assert aligned.shape == (size, size, 3)
    err = 0.0
    for (x, y) in tpl:
        cx, cy = _centroid(aligned, x, y, r=4)
        err = max(err, math.hypot(cx - x, cy - y))
    assert err < 0.25  # "within a pixel" with margin: a half-pixel convention slip would fail
    record = json.loads((out / "photo.json").read_text())
    assert np.allclose(apply(np.array(record["matrix"]), photo_pts), tpl, atol=1e-6)


def test_landmark_file_formats(tmp_path):
    pts = np.array([[30.0, 40.0], [60.0, 41.0], [45.0, 55.0], [35.0, 70.0], [57.0, 71.0]])
    images = {"a": str(tmp_path / "a.png"), "sub/b": str(tmp_path / "sub" / "b.jpg")}
    # one TXT file for one image
    (tmp_path / "a.txt").write_text("\n".join(f"{x} {y}" for x, y in pts))
    assert np.array_equal(landmarks_from_files({"a": images["a"]}, str(tmp_path / "a.txt"))["a"], pts)
    # a JSON name -> points map for a folder
    (tmp_path / "map.json").write_text(json.dumps({"a.png": pts.tolist(), "sub/b": pts.ravel().tolist()}))
    got = landmarks_from_files(images, str(tmp_path / "map.json"))
    assert np.array_equal(got["a"], pts) and np.array_equal(got["sub/b"], pts)
    # a folder of per-image files, paired by name; 68 iBUG points are reduced to five
    pts68 = np.zeros((68, 2))
    pts68[36:42] = pts[0] + np.linspace(-2, 2, 6)[:, None]
    pts68[42:48] = pts[1] + np.linspace(-3, 3, 6)[:, None]
    pts68[30], pts68[48], pts68[54] = pts[2], pts[3], pts[4]
    (tmp_path / "lm" / "sub").mkdir(parents=True)
    (tmp_path / "lm" / "a.json").write_text(json.dumps(pts68.tolist()))
    (tmp_path / "lm" / "sub" / "b.txt").write_text(" ".join(map(str, pts.ravel())))
    got = landmarks_from_files(images, str(tmp_path / "lm"))
    assert np.allclose(got["a"], pts) and np.array_equal(got["sub/b"], pts)
    # errors
    with pytest.raises(cli.CLIError, match="holds 3 points"):
        to_five([[1, 2], [3, 4], [5, 6]], "x.json")
    with pytest.raises(cli.CLIError, match="one set of landmarks but --image has 2"):
        landmarks_from_files(images, str(tmp_path / "a.txt"))
    with pytest.raises(cli.CLIError, match="no sub/c.json or sub/c.txt"):
        landmarks_from_files({"sub/c": "c.png"}, str(tmp_path / "lm"))


def test_no_landmarks_and_no_detector_is_a_clear_error(h, tmp_path, monkeypatch, capsys):
    h.write_rgb(tmp_path / "p.png", 20, 20, seed=0)
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # import fails as if not installed
    assert cli.run(af.main, ["--image", str(tmp_path / "p.png"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "the face detector is not installed" in err and "pip install --no-deps facenet-pytorch" in err
