"""scripts/editor.py without a browser, the server: uploads and decoded images are capped, only
this server's host names and same-origin JSON reach the handlers, work in flight is bounded, the
page needs nothing from elsewhere, the model is loaded once, and start-up errors are one sentence
(shared setup: tests/scripts/editor_common.py)."""
import json
import os
import re
import shutil

import pytest
from PIL import Image

from inference import editor as handlers
from inference import runtime
from scripts import cli_common as cli
from scripts import editor

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from tests.scripts.editor_common import app_fixture, inputs_fixture  # noqa: E402, F401  (fixtures)
from tests.scripts.editor_common import client, data_url, local_client  # noqa: E402


def test_uploads_above_the_cap_and_non_json_requests_are_refused(files, inputs):
    _, _, payload = inputs
    ed = editor.load(editor.build_parser().parse_args(["--ckpt", files["exe"], "--psp", files["psp"]]))
    small = client(editor.create_app(ed, max_upload_mb=0.001))  # 1 KiB: the payload is larger
    assert len(json.dumps(payload)) > 2 ** 10
    r = small.post("/api/run", json=payload)
    assert r.status_code == 413
    assert r.json()["error"] == ("the upload is larger than the editor's limit of 0.001 MB (--max-upload-mb); "
                                 "use smaller files.")
    # A streamed body without Content-Length is counted as it arrives.
    js = {"Content-Type": "application/json"}
    r = small.post("/api/run", content=iter([b"{" + b" " * 600, b" " * 600 + b"}"]), headers=js)
    assert r.status_code == 413
    r = small.post("/api/info", content=b"{not json", headers=js)
    assert r.status_code == 400 and r.json()["error"] == "the request is not valid JSON; reload the page."


def test_huge_photos_are_refused_before_decoding(files, h, tmp_path):
    model = runtime.load_model(files["exe"], files["psp"], cli.resolve_device("cpu"), runtime="torch")
    ed = handlers.Editor(model, max_pixels=100)
    h.write_rgb(tmp_path / "big.png", 11, 10, seed=0)
    with pytest.raises(handlers.EditorError, match=r"^photo big.png is 10x11 pixels, more than the editor's limit"):
        ed.photo({"photo": data_url(tmp_path / "big.png"), "photo_name": "big.png"})


def test_page_needs_nothing_from_elsewhere(app):
    r = app.get("/")
    assert r.status_code == 200 and r.text.startswith("<!doctype html>")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "http" not in csp
    page = r.text
    assert "http:" not in page and "https:" not in page and "//" not in re.sub(r"(?m)^\s*//.*$|[^:]//.*", "", page)
    assert re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page) == ["data:,"]  # only the empty favicon
    assert "@import" not in page and "url(" not in page
    assert "fetch(`/api/${name}`" in page  # the one place it sends anything: this server
    info = app.post("/api/info", json={}).json()
    assert info == {"size": 16, "slot_first": 4, "slot_last": 5, "max_samples": 8, "ckpt": "exe.pt"}


def test_model_is_loaded_once_and_served_on_localhost(files, inputs, monkeypatch, capsys):
    calls = []
    real = runtime.load_model
    monkeypatch.setattr(runtime, "load_model", lambda *a, **k: calls.append(a) or real(*a, **k))
    served = {}
    import uvicorn
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(kw, app=app))
    monkeypatch.setattr(editor, "check_port", lambda host, port: served.update(checked=(host, port)))
    assert editor.main(["--ckpt", files["exe"], "--psp", files["psp"]]) == 0
    assert (served["host"], served["port"]) == served["checked"] == ("127.0.0.1", 7860)
    assert "http://127.0.0.1:7860" in capsys.readouterr().out
    client = local_client(served["app"])
    _, _, payload = inputs
    for seed in (0, 1):
        assert client.post("/api/run", json={**payload, "seed": seed}).status_code == 200
    assert len(calls) == 1


def _bad_startup(argv, capsys):
    assert cli.run(editor.main, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and err.rstrip().endswith("."), err
    return err


def test_a_checkpoint_that_fails_to_load_is_one_sentence_at_start_up(files, tmp_path, capsys):
    err = _bad_startup(["--ckpt", str(tmp_path / "nope.pt"), "--psp", files["psp"]], capsys)
    assert err.startswith(f"error: --ckpt {tmp_path / 'nope.pt'} does not exist")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    err = _bad_startup(["--ckpt", str(tmp_path / "junk.pt"), "--psp", files["psp"]], capsys)
    assert "junk.pt" in err
    err = _bad_startup(["--ckpt", files["psp"], "--psp", files["psp"]], capsys)  # a file of the wrong kind
    assert files["psp"] in err
    err = _bad_startup(["--ckpt", files["exe"]], capsys)
    assert err.startswith("error: give --ckpt and --psp")


def test_demo_serves_the_newest_demo_runs_export(files, tmp_path, capsys):
    runs = tmp_path / "runs"
    err = _bad_startup(["--demo", str(runs)], capsys)
    assert "run `make demo` first" in err
    for name, export in (("00000-demo", True), ("00001-demo", True), ("00002-celebahq_256", True),
                         ("00003-demo", False)):  # 00003: a run that has not exported yet
        ck = runs / name / "checkpoints"
        ck.mkdir(parents=True)
        if export:
            shutil.copy(files["exe"], ck / "export.pt")
        shutil.copy(files["psp"], ck / "standin_psp.pt")
    want = str(runs / "00001-demo" / "checkpoints" / "export.pt")
    assert cli.demo_files(str(runs)) == (want, str(runs / "00001-demo" / "checkpoints" / "standin_psp.pt"))
    ed = editor.load(editor.build_parser().parse_args(["--demo", str(runs)]))
    assert ed.ckpt == want and ed.model.size == 16
    assert editor.demo_faces(want) is None  # no config.yaml in this run
    (runs / "00001-demo" / "config.yaml").write_text(f"data:\n  demo_root: {tmp_path / 'faces'}\n")
    (tmp_path / "faces" / "test").mkdir(parents=True)
    assert editor.demo_faces(want) == os.path.relpath(tmp_path / "faces" / "test")


def test_a_port_in_use_is_one_sentence_at_start_up(files, capsys, monkeypatch):
    import socket

    import uvicorn
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: pytest.fail("served on a port in use"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        err = _bad_startup(["--ckpt", files["exe"], "--psp", files["psp"], "--port", str(port)], capsys)
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port} (") and "pass another --port" in err


def test_only_this_servers_host_names_and_same_origin_json_reach_the_handlers(files, monkeypatch):
    """DNS rebinding (another Host), a blind cross-site form or text/plain POST, a foreign Origin:
    refused before any handler runs; the page's own requests (its Host, JSON, same origin or none) pass."""
    model = runtime.load_model(files["exe"], files["psp"], cli.resolve_device("cpu"), runtime="torch")
    ed = handlers.Editor(model)
    calls = []
    monkeypatch.setattr(ed, "info", lambda payload=None: calls.append(1) or {"ok": True})
    app = editor.create_app(ed, port=8123, host="studio.local", allow_hosts=["lab-pc"])
    ok = {"Content-Type": "application/json"}
    for host in ("127.0.0.1:8123", "localhost:8123", "[::1]:8123", "studio.local:8123", "lab-pc:8123"):
        r = TestClient(app, base_url=f"http://{host}").post("/api/info", content=b"{}", headers=ok)
        assert r.status_code == 200, (host, r.text)
        r = TestClient(app, base_url=f"http://{host}").post(
            "/api/info", content=b"{}", headers={**ok, "Origin": f"http://{host}"})
        assert r.status_code == 200, (host, r.text)
    n = len(calls)
    c = TestClient(app, base_url="http://127.0.0.1:8123")
    refused = [
        (TestClient(app, base_url="http://attacker.example:8123").post("/api/info", content=b"{}", headers=ok), 400),
        (TestClient(app, base_url="http://127.0.0.1:9999").post("/api/info", content=b"{}", headers=ok), 400),
        (c.post("/api/info", content=b"{}", headers={"Content-Type": "text/plain"}), 415),
        (c.post("/api/info", content=b"a=1", headers={"Content-Type": "application/x-www-form-urlencoded"}), 415),
        (c.post("/api/info", content=b"{}", headers={**ok, "Origin": "http://attacker.example"}), 403),
        (c.post("/api/info", content=b"{}", headers={**ok, "Origin": "null"}), 403),
    ]
    for r, status in refused:
        assert r.status_code == status, r.text
        msg = r.json()["error"]
        assert "\n" not in msg and msg.endswith("."), msg
    assert len(calls) == n                       # no refused request reached a handler
    assert TestClient(app, base_url="http://attacker.example:8123").get("/").status_code == 400


def test_every_decoded_image_is_capped_from_its_header(files, h, inputs, tmp_path):
    """A small file that decodes to a huge mask or exemplar is refused from its header (no decode)."""
    _, _, payload = inputs
    model = runtime.load_model(files["exe"], files["psp"], cli.resolve_device("cpu"), runtime="torch")
    app = local_client(editor.create_app(handlers.Editor(model, max_pixels=10_000)))
    big = tmp_path / "big.png"
    Image.new("L", (13000, 13000)).save(big)      # ~150 KB on disk, 169 megapixels decoded
    assert big.stat().st_size < 1_000_000
    for key, endpoint, extra in (("mask", "mask", {"width": 45, "height": 37}), ("mask", "run", {}),
                                 ("exemplar_a", "run", {}), ("exemplar_a", "exemplar", {})):
        r = app.post(f"/api/{endpoint}", json={**payload, **extra, key: data_url(big), f"{key}_name": "big.png"})
        assert r.status_code == 400, (key, endpoint, r.text)
        msg = r.json()["error"]
        assert "big.png is 13000x13000 pixels, more than the editor's limit of 0.01 megapixels" in msg, msg


def test_deep_json_and_bad_server_flags_are_one_sentence(app, files, capsys):
    r = app.post("/api/info", content=b"[" * 50_000 + b"]" * 50_000, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"] == "the request nests JSON deeper than 64 levels; reload the page."
    for flags, want in ((["--port", "99999"], "--port must be a whole number from 1 to 65535"),
                        (["--max-upload-mb", "nan"], "--max-upload-mb must be a finite number of megabytes")):
        assert cli.run(editor.main, ["--ckpt", files["exe"], "--psp", files["psp"], *flags]) == 2
        err = capsys.readouterr().err
        assert want in err and err.count("\n") == 1, err


def test_work_in_flight_is_bounded(files, monkeypatch):
    """One request works at a time, `queue` wait; one more is refused at once (503) before its body
    is read, instead of being decoded in parallel."""
    import threading
    model = runtime.load_model(files["exe"], files["psp"], cli.resolve_device("cpu"), runtime="torch")
    ed = handlers.Editor(model)
    started, release = threading.Event(), threading.Event()

    def slow(payload=None):
        started.set()
        release.wait(10)
        return {"ok": True}

    monkeypatch.setattr(ed, "info", slow)
    app = local_client(editor.create_app(ed, queue=0))
    first = {}
    t = threading.Thread(target=lambda: first.update(r=app.post("/api/info", json={})))
    t.start()
    assert started.wait(10)
    r = app.post("/api/info", json={})
    assert r.status_code == 503 and r.json()["error"].startswith("the editor is busy"), r.text
    release.set()
    t.join(10)
    assert first["r"].status_code == 200
    assert app.post("/api/info", json={}).status_code == 200     # free again
