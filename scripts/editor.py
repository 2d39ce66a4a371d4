#!/usr/bin/env python
"""Interactive editor: a local web page to paint a hole on your own photo, pick an exemplar (or two,
for style mixing) and get K completions from a trained EXE-GAN (Lu et al., Neurocomputing 2025).

    python scripts/editor.py --ckpt EXE_GAN_model_256.pt --psp psp_ffhq_encode.pt [--device cuda] [--port 7860]
    python scripts/editor.py --demo          # the newest `make demo` run (what `make editor` serves)

then open http://127.0.0.1:7860 in a browser on the same machine.

The page (scripts/editor_page.html, one self-contained file: no fonts, scripts or styles from
anywhere else) sends the photo, the painted mask and the exemplar(s) as JSON to the handlers of
:class:`inference.editor.Editor`, which run exactly the command-line tools' code: ``inference.io``
reads and validates the files, ``inference.roundtrip`` does the any-size round trip
(:func:`~inference.roundtrip.prepare` / :func:`~inference.roundtrip.paste_back`: every known pixel
of a result is the photo's, bit for bit) and ``inference.roundtrip.inpaint_one`` draws sample k with
seed + k, ``inference.stylemix.mix`` takes exemplar slots i..j from exemplar B, and
``inference.align.align`` aligns a face from landmarks. With "align automatically" the user paints on
the original photo and the run goes through the face's aligned crop and back (``inference.photo``,
as ``--align`` in the command-line tools; ``/api/faces`` gives the face boxes the page draws).
Results come back as PNGs at the photo's own resolution.

The web layer (this file) is a small Starlette app served by uvicorn (see docs/applications.md for
why not Gradio). It binds 127.0.0.1 unless told otherwise, refuses requests above
``--max-upload-mb``, loads the model once at start-up (a checkpoint that fails to load is one
sentence on the terminal, exit status 2) and runs one request on the model at a time. A user error
(no hole painted, an image that cannot be decoded, a mask of another size, a missing exemplar, ...)
is one sentence shown in the page; anything else is logged on the terminal with its traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import traceback
from typing import Callable, Optional, Sequence

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import webguard  # noqa: E402
from inference import runtime  # noqa: E402
from inference.editor import Editor  # noqa: E402
from scripts import cli_common as cli  # noqa: E402

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "editor_page.html")
DEFAULT_PORT = 7860
#: Content-Security-Policy of every response: the page may talk to this server only.
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; form-action 'none'; base-uri 'none'")


# ------------------------------------------------------------------------------- web layer
def create_app(editor: Editor, max_upload_mb: float = 32.0, *, port: int = DEFAULT_PORT,
               host: str = "127.0.0.1", queue: int = 8, allow_hosts: Sequence[str] = ()):
    """The Starlette app: ``GET /`` serves the page, ``POST /api/<handler>`` calls the handler.

    Wrapped in the guards of :mod:`common.webguard`: only the Host names of this server
    (127.0.0.1, localhost and [::1] on ``port``, plus ``host`` and ``allow_hosts``) are answered, so that a web page the
    user visits cannot reach the editor by DNS rebinding; the API takes only ``application/json``
    from its own origin (no blind cross-site form or ``text/plain`` POST); one API request works at
    a time and at most ``queue`` wait, more are refused (503) before their body is read, so that the
    images decoded at once stay bounded."""
    # The web dependencies are optional (requirements-editor.txt): needed only to serve the page.
    from starlette.applications import Starlette  # optional, as said above
    from starlette.concurrency import run_in_threadpool  # optional
    from starlette.requests import Request  # optional
    from starlette.responses import HTMLResponse, JSONResponse  # optional
    from starlette.routing import Route  # optional

    limit = int(max_upload_mb * 2 ** 20)
    with open(PAGE, "r", encoding="utf-8") as f:
        page = f.read()
    headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-store",
               "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
    too_big = (f"the upload is larger than the editor's limit of {max_upload_mb:g} MB (--max-upload-mb); "
               f"use smaller files.")

    def error(message: str, status: int) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    async def index(request: Request):
        return HTMLResponse(page, headers=headers)

    def endpoint(handler: Callable[[dict], dict]):
        async def call(request: Request):
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                return error(too_big, 413)
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    return error(too_big, 413)
            try:
                text = bytes(body).decode("utf-8") or "{}"
                if webguard.json_depth(text) > webguard.MAX_JSON_DEPTH:  # before json's recursion
                    return error(f"the request nests JSON deeper than {webguard.MAX_JSON_DEPTH} levels; "
                                 f"reload the page.", 400)
                payload = json.loads(text)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                return error("the request is not valid JSON; reload the page.", 400)
            if not isinstance(payload, dict):
                return error("the request is not a JSON object; reload the page.", 400)
            try:
                return JSONResponse(await run_in_threadpool(handler, payload), headers=headers)
            except cli.user_errors() as e:
                return error(str(e), 400)
            except Exception as e:  # noqa: BLE001 - a bug: log it, keep serving
                traceback.print_exc()
                return error(f"internal error ({type(e).__name__}); the terminal running the editor shows "
                             f"the details.", 500)
        return call

    routes = [Route("/", index, methods=["GET"])]
    routes += [Route(f"/api/{name}", endpoint(getattr(editor, name)), methods=["POST"])
               for name in ("info", "photo", "mask", "exemplar", "align", "faces", "run")]
    app = webguard.WorkGateMiddleware(Starlette(routes=routes),
                                      webguard.WorkGate(limit=1, queue=queue, what="the editor"))
    return webguard.HostOriginGuard(app, webguard.local_hosts(port, [host, *allow_hosts]))


# -------------------------------------------------------------------------------------- main
def check_port(host: str, port: int) -> None:
    """One sentence instead of uvicorn's log lines when the address cannot be listened on."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, OverflowError) as e:
        raise cli.CLIError(f"--host {host} --port {port} is not an address to listen on ({e}); the default is "
                           f"--host 127.0.0.1 --port {DEFAULT_PORT}.") from None
    with socket.socket(family, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            s.bind(address)
        except OSError as e:
            raise cli.CLIError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port, or stop "
                               f"what is using it.") from None


def demo_faces(ckpt: str) -> Optional[str]:
    """The demo's test faces (``data.demo_root`` of the run's config.yaml + /test), if they exist."""
    try:
        with open(os.path.join(os.path.dirname(os.path.dirname(ckpt)), "config.yaml"), encoding="utf-8") as f:
            root = str(yaml.safe_load(f)["data"]["demo_root"])
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None
    path = os.path.join(root if os.path.isabs(root) else os.path.join(cli.ROOT, root), "test")
    return os.path.relpath(path) if os.path.isdir(path) else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", help="EXE-GAN checkpoint (ours, export.pt, or the released EXE_GAN_model_256.pt)")
    p.add_argument("--psp", help="pSp style encoder file (psp_ffhq_encode.pt)")
    p.add_argument("--demo", nargs="?", const="runs", metavar="RUNS",
                   help="serve the newest `make demo` run under RUNS (default runs/) instead of --ckpt / --psp")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    runtime.add_runtime_args(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another host name browsers may reach the editor by (repeatable; e.g. this "
                        "machine's name with --host 0.0.0.0); requests for other names are refused")
    p.add_argument("--max-upload-mb", default=32.0,
                   help="largest request accepted, in MB (default 32; files travel base64-encoded, +33%%)")
    p.add_argument("--max-samples", type=int, default=8, help="largest K the page may ask for (default 8)")
    p.add_argument("--align-size", type=int, default=1024,
                   help="side of the aligned crop made by the page's 'Align face' (default 1024, as align_faces.py)")
    return p


def load(args) -> Editor:
    """The editor with its model loaded (once; user errors are one sentence)."""
    if args.demo:
        if args.ckpt or args.psp:
            raise cli.CLIError("give either --demo or --ckpt and --psp, not both.")
        args.ckpt, args.psp = cli.demo_files(args.demo)
    elif not (args.ckpt and args.psp):
        raise cli.CLIError("give --ckpt and --psp (the EXE-GAN checkpoint and the pSp encoder file), or --demo.")
    if args.max_samples < 1:
        raise cli.CLIError(f"--max-samples must be at least 1, got {args.max_samples}.")
    device = cli.resolve_device(args.device)
    model = runtime.load_model(args.ckpt, args.psp, device, runtime=args.runtime, cache=args.onnx_cache)
    return Editor(model, ckpt=args.ckpt, max_samples=args.max_samples, align_size=args.align_size)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.port = webguard.check_port(args.port)
    args.max_upload_mb = webguard.check_max_upload_mb(args.max_upload_mb)
    editor = load(args)
    check_port(args.host, args.port)
    app = create_app(editor, args.max_upload_mb, port=args.port, host=args.host, allow_hosts=args.allow_host)
    import uvicorn  # optional: the server (requirements-editor.txt), needed only to serve
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"EXE-GAN editor: {args.ckpt} ({editor.model.size}x{editor.model.size}, {args.device}, "
          f"{getattr(editor.model, 'runtime', 'PyTorch')}) at "
          f"http://{host}:{args.port}  (Ctrl-C stops it)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: --host {args.host} makes the editor reachable from other machines; it has no login.",
              flush=True)
    if args.demo:
        faces = demo_faces(args.ckpt)
        if faces:
            print(f"demo faces to try (a photo and another face as the exemplar): {faces}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
