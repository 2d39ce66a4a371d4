"""common/webguard.py on a tiny Starlette app through Starlette's TestClient: Host and Origin
checks, JSON-only API, header-only pixel caps, the bounded work gate, deep JSON and the
command-line checks (each refusal one sentence with its HTTP status)."""
import io
import json
import struct
import threading
import time
import zlib

import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from common import webguard as wg
from common.errors import UserError

PORT = 7860
BASE = f"http://127.0.0.1:{PORT}"


def _app(gate=None, hosts=None, events=None):
    async def index(request: Request):
        return PlainTextResponse("page")

    async def echo(request: Request):
        try:
            payload = wg.loads_json(await request.body())
        except wg.WebGuardError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        return JSONResponse({"got": payload})

    def slow(request: Request):               # a sync endpoint: runs in the thread pool
        events["started"].set()
        events["go"].wait(10)
        return JSONResponse({"done": True})

    app = Starlette(routes=[Route("/", index), Route("/api/echo", echo, methods=["POST"]),
                            Route("/api/slow", slow, methods=["POST"])])
    if gate is not None:
        app = wg.WorkGateMiddleware(app, gate)
    return wg.HostOriginGuard(app, hosts if hosts is not None else wg.local_hosts(PORT))


def _one_sentence(r, status, needle):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    msg = r.json()["error"]
    assert needle in msg and "\n" not in msg and msg.endswith("."), msg
    return msg


# ------------------------------------------------------------------------------ Host / Origin
def test_local_hosts_lists_the_served_names_with_the_port():
    assert wg.local_hosts(PORT) == {"127.0.0.1:7860", "localhost:7860", "[::1]:7860"}
    assert "[fe80::1]:8000" in wg.local_hosts(8000, ["fe80::1"])
    assert "box.lan:8000" in wg.local_hosts(8000, ["Box.LAN"])
    assert {"localhost", "localhost:80"} <= wg.local_hosts(80)


def test_only_the_served_host_names_are_answered():
    c = TestClient(_app(), base_url=BASE)
    for host in ("127.0.0.1:7860", "localhost:7860", "[::1]:7860", "LOCALHOST:7860"):
        r = c.get("/", headers={"host": host})
        assert r.status_code == 200 and r.text == "page", host
    for host in ("attacker.example", "attacker.example:7860", "127.0.0.1:9999", "127.0.0.1"):
        msg = _one_sentence(c.get("/", headers={"host": host}), 400, "answers only to")
        assert f"'{host.lower()}'" in msg
        _one_sentence(c.post("/api/echo", json={"a": 1}, headers={"host": host}), 400,
                      "answers only to")
    # The default test client's 'testserver' is served only when listed.
    assert TestClient(_app()).get("/").status_code == 400
    extra = TestClient(_app(hosts=wg.local_hosts(PORT) | {"testserver"}))
    assert extra.get("/").status_code == 200
    # The --host given is served too.
    lan = TestClient(_app(hosts=wg.local_hosts(PORT, ["192.168.1.5"])),
                     base_url=f"http://192.168.1.5:{PORT}")
    assert lan.post("/api/echo", json={"a": 1}).json() == {"got": {"a": 1}}


def test_api_needs_json_and_a_same_origin_request():
    c = TestClient(_app(), base_url=BASE)
    ok = c.post("/api/echo", json={"a": [1, 2]})
    assert ok.status_code == 200 and ok.json() == {"got": {"a": [1, 2]}}
    assert c.post("/api/echo", json={"a": 1}, headers={"origin": BASE}).status_code == 200
    assert c.post("/api/echo", content=b'{"a": 1}',
                  headers={"content-type": "application/json; charset=utf-8"}).status_code == 200
    # A blind cross-site POST: text/plain or a form, no preflight.
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        _one_sentence(c.post("/api/echo", content=b'{"a": 1}', headers={"content-type": ctype}),
                      415, f"not '{ctype}'")
    _one_sentence(c.post("/api/echo", content=b'{"a": 1}'), 415, "not 'none'")
    for origin in ("http://attacker.example", "null", "http://localhost:7860",
                   "https://127.0.0.1:7860", "http://127.0.0.1:7861"):
        _one_sentence(c.post("/api/echo", json={"a": 1}, headers={"origin": origin}), 403,
                      "cross-origin requests are refused")
        _one_sentence(c.get("/", headers={"origin": origin}), 403, "cross-origin")
    _one_sentence(c.post("/api/echo", json={"a": 1}, headers={"sec-fetch-site": "cross-site"}),
                  403, "Sec-Fetch-Site 'cross-site'")
    assert c.post("/api/echo", json={"a": 1},
                  headers={"sec-fetch-site": "same-origin"}).status_code == 200
    # The page itself (GET) needs no JSON content type.
    assert c.get("/").status_code == 200


# ------------------------------------------------------------------------------- pixel caps
def _png_bytes(w, h, mode="L"):
    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, format="PNG")
    return buf.getvalue()


def _png_header(w, h):
    """A PNG whose header says w x h (grey, 8 bit) followed by a tiny, truncated IDAT: what a
    small upload can claim; decoding it would allocate w * h bytes."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


def test_pixel_cap_reads_the_header_only(tmp_path, monkeypatch):
    big = _png_header(13000, 13000)           # ~170 MP claimed by a file of a few bytes
    assert len(big) < 1000
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1))
    f = io.BytesIO(big)
    with pytest.raises(wg.WebGuardError) as e:
        wg.check_image_pixels(f, 40_000_000, "mask", "m.png")
    assert e.value.status == 413 and isinstance(e.value, UserError)
    assert str(e.value) == ("mask m.png is 13000x13000 pixels, more than the limit of 40 "
                            "megapixels; use a smaller file.")
    assert f.tell() == 0 and not decoded
    path = tmp_path / "ok.png"
    path.write_bytes(_png_bytes(64, 48, "RGB"))
    assert wg.check_image_pixels(str(path), 40_000_000, "exemplar") == (64, 48)
    # Beyond Pillow's own bomb limit the open itself refuses: still one sentence.
    huge = io.BytesIO(_png_header(20000, 20000))
    with pytest.raises(wg.WebGuardError, match="larger than Pillow opens"):
        wg.check_image_pixels(huge, 40_000_000, "photo", "p.png")
    with pytest.raises(wg.WebGuardError, match="not an image Pillow can read") as e:
        wg.check_image_pixels(io.BytesIO(b"not an image"), 10, "exemplar", "x.png")
    assert e.value.status == 400
    junk = io.BytesIO(b"not an image")
    assert wg.check_image_pixels(junk, 10, "mask", allow_unreadable=True) is None
    assert junk.tell() == 0


# -------------------------------------------------------------------------------- work gate
def test_work_gate_bounds_what_runs_and_waits():
    gate = wg.WorkGate(limit=1, queue=1, what="the editor")
    order = []
    with gate:
        t = threading.Thread(target=lambda: (gate.__enter__(), order.append("queued ran"),
                                             gate.__exit__(None, None, None)))
        t.start()
        for _ in range(200):
            if gate.in_flight == 2:
                break
            time.sleep(0.01)
        assert gate.in_flight == 2 and not order      # queued, not running
        with pytest.raises(wg.ServerBusy) as e:
            with gate:
                pass
        assert e.value.status == 503 and isinstance(e.value, UserError)
        assert str(e.value) == ("the editor is busy with 2 request(s) already; try again in a "
                                "moment.")
        order.append("first done")
    t.join(5)
    assert order == ["first done", "queued ran"] and gate.in_flight == 0
    with pytest.raises(ValueError):
        wg.WorkGate(limit=0)


def test_work_gate_middleware_refuses_beyond_limit_and_queue():
    gate = wg.WorkGate(limit=1, queue=1, what="the editor")
    events = {"started": threading.Event(), "go": threading.Event()}
    results = {}
    with TestClient(_app(gate=gate, events=events), base_url=BASE) as c:
        first = threading.Thread(target=lambda: results.setdefault(
            "first", c.post("/api/slow", json={})))
        first.start()
        assert events["started"].wait(10)              # working
        second = threading.Thread(target=lambda: results.setdefault(
            "second", c.post("/api/echo", json={"b": 2})))
        second.start()
        for _ in range(500):
            if gate.in_flight == 2:
                break
            time.sleep(0.01)
        assert gate.in_flight == 2 and "second" not in results   # queued behind the first
        r = c.post("/api/echo", json={"c": 3})
        _one_sentence(r, 503, "the editor is busy with 2 request(s)")
        assert r.headers["retry-after"] == "1"
        assert c.get("/").status_code == 200            # the page is not gated
        events["go"].set()
        first.join(10)
        second.join(10)
    assert results["first"].json() == {"done": True}
    assert results["second"].json() == {"got": {"b": 2}}
    assert gate.in_flight == 0


# ------------------------------------------------------------------------------------- JSON
def test_deep_json_is_one_sentence_not_a_recursion_error():
    deep = "[" * 50_000 + "]" * 50_000
    with pytest.raises(wg.WebGuardError) as e:
        wg.loads_json(deep.encode())
    assert str(e.value) == ("the request nests JSON deeper than 64 levels; send a flat JSON "
                            "object (reload the page).")
    # Brackets inside strings (also after escaped quotes) do not count.
    text = json.dumps({"s": "[[[[\\\"{{{{" * 100, "t": ["\\"], "u": [[1]]})
    assert wg.json_depth(text) == 3 and wg.loads_json(text)["u"] == [[1]]
    assert wg.loads_json(json.dumps([[[]]]), max_depth=3) == [[[]]]
    with pytest.raises(wg.WebGuardError, match="deeper than 2 levels"):
        wg.loads_json("[[[]]]", max_depth=2)
    for bad in (b"\xff\xfe", b"{", b"not json"):
        with pytest.raises(wg.WebGuardError, match="reload the page"):
            wg.loads_json(bad)
    c = TestClient(_app(), base_url=BASE)
    _one_sentence(c.post("/api/echo", content=deep.encode(),
                         headers={"content-type": "application/json"}), 400, "deeper than 64")


# ----------------------------------------------------------------------------- command line
@pytest.mark.parametrize("value", [0, -1, 65536, 99999, "x", 1.5, None, True, float("nan")])
def test_bad_ports_are_one_sentence(value):
    with pytest.raises(wg.WebGuardError) as e:
        wg.check_port(value)
    assert isinstance(e.value, UserError)
    assert str(e.value).startswith("--port must be a whole number from 1 to 65535, got ")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0, -3, "x", None])
def test_bad_upload_limits_are_one_sentence(value):
    with pytest.raises(wg.WebGuardError) as e:
        wg.check_max_upload_mb(value)
    assert str(e.value).startswith("--max-upload-mb must be a finite number of megabytes above 0")


def test_good_command_line_values_pass():
    assert wg.check_port(7860) == 7860 and wg.check_port("65535") == 65535
    assert wg.check_port(1) == 1
    assert wg.check_max_upload_mb(32.0) == 32.0 and wg.check_max_upload_mb("0.5") == 0.5


def test_guard_app_puts_both_middlewares_around_an_app():
    events = {"started": threading.Event(), "go": threading.Event()}
    inner = _app(events=events, hosts=["127.0.0.1:1"]).app     # the bare Starlette app
    app = wg.guard_app(inner, port=8000, hosts=["box.lan"], max_in_flight=1, max_queued=0,
                       what="the editor")
    c = TestClient(app, base_url="http://box.lan:8000")
    assert c.post("/api/echo", json={"a": 1}).json() == {"got": {"a": 1}}
    assert c.post("/api/echo", json={}, headers={"host": "127.0.0.1:8000"}).status_code == 200
    _one_sentence(c.post("/api/echo", json={}, headers={"host": "evil:8000"}), 400, "answers")
    app.gate.admit()
    app.gate.acquire()                      # the one slot is taken
    try:
        _one_sentence(c.post("/api/echo", json={}), 503, "the editor is busy")
        # A refused host takes no slot and gets its own answer.
        _one_sentence(c.post("/api/echo", json={}, headers={"host": "evil:8000"}), 400, "answers")
    finally:
        app.gate.release()
    assert c.post("/api/echo", json={"b": 1}).status_code == 200 and app.gate.in_flight == 0
