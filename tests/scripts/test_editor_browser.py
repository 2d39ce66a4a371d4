"""scripts/editor.py end to end in a real headless Chromium (Debian's `chromium`, driven by
Playwright): upload a photo, paint a stroke, upload an exemplar, complete, and check the downloads
(the photo's size, known pixels bit for bit, the painted region changed); a bad input shows the
page's message; every request goes to the editor itself. A screenshot is kept in the test's temp
dir (its path is printed; `pytest -s` shows it)."""
import base64
import io
import os
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from scripts import editor

CHROMIUM = os.environ.get("EXEGAN_CHROMIUM", "/usr/bin/chromium")
HOW = ("install it with `apt-get install -y chromium` (as .ci/run does) and `pip install playwright` "
       "(requirements-editor.txt), or point EXEGAN_CHROMIUM at a Chromium binary")

sync_api = pytest.importorskip("playwright.sync_api", reason=f"Playwright is not installed; {HOW}")
uvicorn = pytest.importorskip("uvicorn")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"no Chromium at {CHROMIUM}; {HOW}", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(files):
    """The editor on a tiny checkpoint, served by uvicorn on a free port of 127.0.0.1."""
    ed = editor.load(editor.build_parser().parse_args(["--ckpt", files["exe"], "--psp", files["psp"]]))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(editor.create_app(ed, port=port), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the editor did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def png_of(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def test_paint_complete_download_in_chromium(server, tmp_path):
    from skimage import data
    photo = np.ascontiguousarray(data.astronaut()[10:310, 110:350])  # 240x300 (w x h): not square
    H, W = photo.shape[:2]
    Image.fromarray(photo).save(tmp_path / "astronaut.png")
    Image.fromarray(np.ascontiguousarray(data.astronaut()[:, ::-1])).save(tmp_path / "exemplar.jpg", quality=92)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    shot = tmp_path / "editor.png"

    requests = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(server, wait_until="networkidle")
            page.wait_for_selector("body[data-ready]")
            assert "16x16 model" in page.inner_text("#model")

            # Completing before a hole is painted is refused in the page.
            page.set_input_files("#photo-file", str(tmp_path / "astronaut.png"))
            page.wait_for_selector("#stage[data-ready]")
            page.click("#run")
            page.wait_for_selector("#message:not([hidden])")
            assert page.inner_text("#message").startswith("no hole is painted: paint over the part")

            box = page.locator("#paint").bounding_box()

            def drag(x0, y0, x1, y1):  # fractions of the photo's width / height
                page.mouse.move(box["x"] + box["width"] * x0, box["y"] + box["height"] * y0)
                page.mouse.down()
                page.mouse.move(box["x"] + box["width"] * x1, box["y"] + box["height"] * y1, steps=8)
                page.mouse.up()

            drag(0.3, 0.5, 0.7, 0.5)     # brush: a horizontal stroke across the middle
            page.check("#tool-eraser")
            drag(0.5, 0.4, 0.5, 0.6)     # eraser: cut it in two at the centre
            page.check("#tool-rect")
            drag(0.1, 0.1, 0.25, 0.2)    # rectangle: top left
            page.click("#run")  # ... and before there is an exemplar
            page.wait_for_selector("#message:has-text('exemplar is missing')")  # (the page's CSP forbids eval)
            assert page.inner_text("#message").startswith("exemplar is missing; upload an exemplar face")

            page.set_input_files("#exemplar-a-file", str(tmp_path / "exemplar.jpg"))
            page.wait_for_selector("#exemplar-a-preview[src]")
            page.fill("#samples", "2")
            page.click("#run")
            page.wait_for_selector("#results a.download >> nth=2")
            assert page.is_hidden("#message")
            links = page.eval_on_selector_all("#results a.download", "els => els.map(a => [a.download, a.href])")

            # Style mixing: exemplar B gives slot 5 (i = j = 5).
            page.check("#mix")
            page.set_input_files("#exemplar-b-file", str(tmp_path / "astronaut.png"))
            page.wait_for_selector("#exemplar-b-preview[src]")
            page.fill("#slot-first", "5")
            page.click("#run")
            page.wait_for_selector("#results a.download[download='astronaut_mix_5-5_sample1.png']")
            mixed = page.eval_on_selector_all("#results a.download", "els => els.map(a => [a.download, a.href])")
            page.screenshot(path=str(shot), full_page=True)

            # A photo the editor cannot decode: the page says so in one sentence.
            page.set_input_files("#photo-file", str(tmp_path / "broken.png"))
            page.wait_for_selector("#message:not([hidden])")
            message = page.inner_text("#message")
        finally:
            browser.close()
    print(f"\nscreenshot: {shot}")

    assert [name for name, _ in links] == ["astronaut_sample0.png", "astronaut_sample1.png", "astronaut_mask.png"]
    hole = png_of(links[2][1]) > 127
    assert hole.shape == (H, W)
    # Each tool acted where it was used: the stroke's two halves, the erased cut, the rectangle.
    assert hole[H // 2, int(W * 0.35)] and hole[H // 2, int(W * 0.65)] and not hole[H // 2, W // 2]
    assert hole[int(H * 0.12):int(H * 0.18), int(W * 0.12):int(W * 0.23)].all()
    assert not hole[:int(H * 0.08)].any() and not hole[int(H * 0.6):].any() and not hole[:int(H * 0.4), W // 2:].any()
    assert 0.03 < hole.mean() < 0.15
    results = [png_of(url) for _, url in links[:2]] + [png_of(url) for _, url in mixed[:2]]
    for res in results:
        assert res.shape == photo.shape                           # the photo's own size
        assert np.array_equal(res[~hole], photo[~hole])           # known pixels, bit for bit
        assert (res[hole] != photo[hole]).mean() > 0.5            # the painted region changed
    assert not np.array_equal(results[0][hole], results[1][hole])
    assert [name for name, _ in mixed] == ["astronaut_mix_5-5_sample0.png", "astronaut_mix_5-5_sample1.png",
                                           "astronaut_mask.png"]
    assert not np.array_equal(results[2], results[0])  # exemplar B's slot 5 changed sample 0

    assert message.startswith("Cannot decode image 'broken.png'"), message
    assert requests and all(u.startswith(server + "/") or u.startswith(("data:", "blob:")) for u in requests), requests
    assert shot.stat().st_size > 10_000


def test_align_automatically_round_trip_in_chromium(server, tmp_path):
    """"Align automatically" with the real detector on a real photo: the face box is drawn, the hole
    painted on the photo as it is comes back filled in a download of the photo's size whose other
    pixels are the photo's; a hole far from the face is the page's one sentence."""
    from skimage import data
    photo = data.astronaut()                                    # 512 x 512, one face near (225, 120)
    Image.fromarray(photo).save(tmp_path / "astronaut.png")
    Image.fromarray(np.ascontiguousarray(photo[:, ::-1])).save(tmp_path / "exemplar.png")
    shot = tmp_path / "editor_align.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(server, wait_until="networkidle")
            page.wait_for_selector("body[data-ready]")
            page.check("#auto-align")
            page.set_input_files("#photo-file", str(tmp_path / "astronaut.png"))
            page.wait_for_selector("#stage[data-faces='1']")            # the detector found one face
            page.set_input_files("#exemplar-a-file", str(tmp_path / "exemplar.png"))
            page.wait_for_selector("#exemplar-a-preview[src]")
            box = page.locator("#paint").bounding_box()

            def drag(x0, y0, x1, y1):
                page.mouse.move(box["x"] + box["width"] * x0, box["y"] + box["height"] * y0)
                page.mouse.down()
                page.mouse.move(box["x"] + box["width"] * x1, box["y"] + box["height"] * y1, steps=8)
                page.mouse.up()

            page.fill("#brush-size", "12")
            drag(0.40, 0.255, 0.48, 0.255)                              # across the nose
            page.fill("#samples", "1")
            page.click("#run")
            page.wait_for_selector("#results a.download >> nth=1")
            assert page.is_hidden("#message")
            links = page.eval_on_selector_all("#results a.download", "els => els.map(a => [a.download, a.href])")
            assert "through the aligned crop of face 0" in page.inner_text("#status")
            page.screenshot(path=str(shot), full_page=True)
            faces_drawn = page.evaluate("() => { const c = document.getElementById('faces'); "
                                        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; "
                                        "let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; }")

            page.click("#clear")
            drag(0.05, 0.92, 0.3, 0.92)                                 # along the bottom: far from the face
            page.click("#run")
            page.wait_for_selector("#message:not([hidden])")
            message = page.inner_text("#message")
        finally:
            browser.close()
    print(f"\nscreenshot: {shot}")
    assert [name for name, _ in links] == ["astronaut_sample0.png", "astronaut_mask.png"]
    hole = png_of(links[1][1]) > 127
    result = png_of(links[0][1])
    assert result.shape == photo.shape
    assert 50 < hole.sum() < 5000 and np.array_equal(result[~hole], photo[~hole])
    assert (result[hole] != photo[hole]).any(-1).mean() > 0.5
    assert faces_drawn > 100                                            # the face box is on the page
    assert message.startswith("the hole of astronaut.png reaches ") and "crop scale" in message, message


def test_another_sites_page_cannot_drive_the_editor(server, tmp_path):
    """A page of another origin (another local server, as a site the user visits would be) posting
    to the editor from the real browser - a blind cross-site text/plain POST and a JSON one - is
    refused by the editor (403 / 415) before any handler runs, while the editor's own page works."""
    import functools
    import http.server
    (tmp_path / "index.html").write_text("<!doctype html><p>another site</p>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    seen = []
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.on("response", lambda r: seen.append((r.url, r.status)) if "/api/" in r.url else None)
                page.goto(f"http://127.0.0.1:{other.server_address[1]}/index.html")
                for mode, ctype in (("no-cors", "text/plain"), ("cors", "application/json")):
                    page.evaluate("([url, mode, ctype]) => fetch(url, {method: 'POST', mode, body: '{}', "
                                  "headers: {'Content-Type': ctype}}).catch(() => null)",
                                  [server + "/api/info", mode, ctype])
                page.wait_for_timeout(300)
                page.goto(server, wait_until="networkidle")
                page.wait_for_selector("body[data-ready]")   # the editor's own page: /api/info answered
            finally:
                browser.close()
    finally:
        other.shutdown()
    cross = [status for url, status in seen[:-1]]
    assert cross and all(status in (403, 415) for status in cross), seen
    assert seen[-1][1] == 200, seen
