"""What the editor's two test files share (tests/scripts/test_editor.py: the requests;
tests/scripts/test_editor_server.py: the server): a test client that talks to the app as a local
browser does, data URLs in and out, the web app on the tiny checkpoint, and one photo's inputs.
"""
import base64
import io

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from scripts import editor

def local_client(app) -> TestClient:
    """A test client that talks to the app as a browser on this machine does (Host 127.0.0.1:7860,
    the only names the editor answers to; Starlette's default Host 'testserver' is refused)."""
    return TestClient(app, base_url=f"http://127.0.0.1:{editor.DEFAULT_PORT}")


client = local_client


def data_url(path) -> str:
    with open(path, "rb") as f:
        return "data:application/octet-stream;base64," + base64.b64encode(f.read()).decode()


def decode(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert img.format == "PNG"
    return np.asarray(img)


@pytest.fixture(scope="module", name="app")
def app_fixture(files):
    ed = editor.load(editor.build_parser().parse_args(["--ckpt", files["exe"], "--psp", files["psp"]]))
    return client(editor.create_app(ed))


@pytest.fixture(name="inputs")
def inputs_fixture(h, tmp_path):
    """A 45x37 photo (PNG), its mask, two exemplars (JPEG / PNG), as files."""
    H, W = 37, 45
    photo = h.write_rgb(tmp_path / "face.png", H, W, seed=1)
    hole = h.write_mask(tmp_path / "face_mask.png", h.box_hole(H, W, 8, 6, 30, 25))
    h.write_rgb(tmp_path / "ex_a.jpg", 30, 24, seed=2)
    h.write_rgb(tmp_path / "ex_b.png", 20, 28, seed=3)
    payload = {"photo": data_url(tmp_path / "face.png"), "photo_name": "face.png",
               "mask": data_url(tmp_path / "face_mask.png"), "mask_name": "face_mask.png",
               "exemplar_a": data_url(tmp_path / "ex_a.jpg"), "exemplar_a_name": "ex_a.jpg",
               "exemplar_b": data_url(tmp_path / "ex_b.png"), "exemplar_b_name": "ex_b.png"}
    return photo, hole, payload


def junk_url():
    return "data:image/png;base64," + base64.b64encode(b"this is not an image").decode()


def image_url(a) -> str:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
