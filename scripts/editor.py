#!/usr/bin/env python
"""Interactive editor: a local web page to paint a hole on your own photo, pick an exemplar (or two,
for style mixing) and get K completions from a trained EXE-GAN (Lu et al., Neurocomputing 2025).

    python scripts/editor.py --ckpt EXE_GAN_model_256.pt --psp psp_ffhq_encode.pt [--device cuda] [--port 7860]
    python scripts/editor.py --demo          # the newest `make demo` run (what `make editor` serves)

then open http://127.0.0.1:7860 in a browser on the same machine.

The page (scripts/editor_page.html, one self-contained file: no fonts, scripts or styles from
anywhere else) sends the photo, the painted mask and the exemplar(s) as JSON to the handlers of
:class:`Editor`, which run exactly the command-line tools' code: ``scripts/_cli_common`` reads and
validates the files and does the any-size round trip (:func:`_cli_common.prepare` /
:func:`_cli_common.paste_back`: every known pixel of a result is the photo's, bit for bit),
``inpaint.inpaint_one`` draws sample k with seed + k, ``style_mix.mix`` takes exemplar slots i..j
from exemplar B, and ``inference.align.align`` aligns a face from landmarks. With "align
automatically" the user paints on the original photo and the run goes through the face's aligned
crop and back (``inference.photo``, as ``--align`` in the command-line tools; ``/api/faces`` gives
the face boxes the page draws). Results come back as PNGs at the photo's own resolution.

The web layer is a small Starlette app served by uvicorn (see docs/applications.md for why not
Gradio). It binds 127.0.0.1 unless told otherwise, refuses requests above ``--max-upload-mb``,
loads the model once at start-up (a checkpoint that fails to load is one sentence on the terminal,
exit status 2) and runs one request on the model at a time. A user error (no hole painted, an
image that cannot be decoded, a mask of another size, a missing exemplar, ...) is one sentence
shown in the page; anything else is logged on the terminal with its traceback.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import math
import os
import sys
import threading
import traceback
from typing import Callable, Dict, Optional, Sequence

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import webguard  # noqa: E402
from inference import runtime  # noqa: E402
from inference.io import mask_warnings, read_binary, read_exemplar, to_uint8  # noqa: E402
from inference.roundtrip import prepare  # noqa: E402
from scripts import cli_common as cli  # noqa: E402

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "editor_page.html")
DEFAULT_PORT = 7860
#: Largest photo accepted, in pixels (checked from the file header before decoding).
MAX_PIXELS = 40_000_000
#: Side of the exemplar previews sent back to the page.
PREVIEW = 160
#: Name the page gives the mask it exports from the paint layer.
PAINTED = "painted mask"
#: Content-Security-Policy of every response: the page may talk to this server only.
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; form-action 'none'; base-uri 'none'")


#: How the photo pipeline's messages name the page's controls (inference.photo.CLI_NAMES).
PAGE_NAMES = {"landmarks": "upload a landmark file (5 points: left eye, right eye, nose tip, left and right "
                           "mouth corners)",
              "crop_scale": "set 'crop scale' to {value:g}", "crop_scale_name": "crop scale",
              "face": "paint on one face only", "exemplar": "tick 'exemplars are aligned crops' if it is one",
              "mask_hole": "paint over the part of the photo to fill"}


class EditorError(cli.CLIError):
    """An input the page's user can fix; its message is shown in the page."""


class Upload(io.BytesIO):
    """Bytes of an uploaded file that read like a file named after the upload, so that the shared
    readers' one-sentence errors ("Cannot decode image 'photo.jpg' ...") name what the user chose."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.label = name

    def __str__(self) -> str:
        return self.label

    __repr__ = __str__


# ---------------------------------------------------------------------------------- payloads
def _field(payload: dict, key: str, what: str):
    value = payload.get(key)
    if value in (None, ""):
        raise EditorError(f"{what} is missing; {_HOW[key]}")
    return value


_HOW = {
    "photo": "upload a photo first.",
    "mask": "paint the hole on the photo (brush or rectangle) or upload a mask.",
    "exemplar_a": "upload an exemplar face (its attributes guide the filled region).",
    "exemplar_b": "upload exemplar B, or switch style mixing off.",
    "landmarks": "upload a landmark file.",
}


def upload(payload: dict, key: str, what: str) -> Upload:
    """The file of field ``key``: a ``data:<type>;base64,<bytes>`` URL, named by ``<key>_name``."""
    value = _field(payload, key, what)
    name = os.path.basename(str(payload.get(f"{key}_name") or what))
    if not isinstance(value, str) or not value.startswith("data:") or ";base64," not in value[:200]:
        raise EditorError(f"{what} {name} did not arrive as a file (a base64 data URL); upload it again.")
    try:
        data = base64.b64decode(value.split(",", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        raise EditorError(f"{what} {name} arrived damaged (bad base64); upload it again.") from None
    if not data:
        raise EditorError(f"{what} {name} is an empty file; upload another one.")
    return Upload(data, name)


def _number(payload: dict, key: str, what: str, kind: type, lo, hi, default):
    value = payload.get(key, default)
    if value in (None, ""):
        value = default
    try:
        if isinstance(value, bool):
            raise ValueError
        x = kind(value)
        if kind is int and float(value) != x:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise EditorError(f"{what} must be {'a whole number' if kind is int else 'a number'} from {lo} to {hi}, "
                          f"got {value!r}.") from None
    if not (lo <= x <= hi) or (kind is float and not math.isfinite(x)):
        raise EditorError(f"{what} must be from {lo} to {hi}, got {value!r}.")
    return x


def png_data_url(img, meta: Optional[Dict[str, str]] = None) -> str:
    """uint8 array [H, W(, 3|4)] or Pillow image -> ``data:image/png;base64,...`` (lossless)."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    info = PngInfo()
    for k, v in (meta or {}).items():
        info.add_text(k, str(v))
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def hole_overlay(hole: np.ndarray) -> np.ndarray:
    """bool [H, W] -> RGBA [H, W, 4]: opaque white on the hole, transparent elsewhere (what the
    page's paint layer holds)."""
    out = np.zeros(hole.shape + (4,), np.uint8)
    out[hole] = 255
    return out


def _header_size(f) -> tuple:
    """(width, height) from an image header (Pillow reads no pixels), or "?" for each."""
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # only the header is read
            with Image.open(f) as img:
                return img.size
    except Exception:  # noqa: BLE001 - only for the message; the cap already refused it
        return "?", "?"
    finally:
        f.seek(0)


# ---------------------------------------------------------------------------------- handlers
class Editor:
    """The request handlers, independent of the web layer: each takes the page's JSON payload (a
    dict) and returns the dict sent back, or raises a user error (:func:`cli.user_errors`).

    ``model`` is loaded once by the caller and shared by every request; ``lock`` serialises the
    requests that run it.
    """

    def __init__(self, model, *, ckpt: str = "", max_samples: int = 8, align_size: int = 1024,
                 max_pixels: int = MAX_PIXELS, detector: Optional[Callable] = None):
        self.model = model
        self.ckpt = ckpt
        self.max_samples = max_samples
        self.align_size = align_size
        self.max_pixels = max_pixels
        self._detector = detector
        self.lock = threading.Lock()
        g = model.generator
        self.slots = (g.exemplar_start, g.exemplar_start + g.n_exemplar - 1)  # first, last exemplar slot

    # ---------------------------------------------------------------- reading the uploads
    def _photo(self, payload: dict) -> np.ndarray:
        return self._image(upload(payload, "photo", "photo"), "photo")

    def _capped(self, f: Upload, what: str) -> Upload:
        """``f`` after its header says it is at most ``max_pixels`` pixels (nothing is decoded
        before that; an unreadable header is left to the reader's own sentence)."""
        try:
            webguard.check_image_pixels(f, self.max_pixels, what, f.label, allow_unreadable=True)
        except webguard.WebGuardError:
            w, h = _header_size(f)
            raise EditorError(f"{what} {f} is {w}x{h} pixels, more than the editor's limit of "
                              f"{self.max_pixels / 1e6:g} megapixels; use a smaller image.") from None
        return f

    def _image(self, f: Upload, what: str) -> np.ndarray:
        """Decoded RGB of an upload whose header says it is at most ``max_pixels`` pixels."""
        return cli.read_rgb(self._capped(f, what))

    @staticmethod
    def _warnings(hole: np.ndarray, colour: str) -> list:
        """The command line's warnings about a valid but implausible mask (``mask_warnings``),
        with the page's control named instead of ``--mask-hole``."""
        return mask_warnings(hole, colour, flip="switch 'black marks the hole' and upload the mask again")

    def _hole(self, payload: dict, shape: tuple) -> np.ndarray:
        f = self._capped(upload(payload, "mask", "mask"), "mask")
        white = payload.get("mask_hole", "white") != "black"
        # "mask m.png is 40x30 but its image is ..." / "the painted mask is ..."
        option = "the" if f.label == PAINTED else "mask"
        return read_binary(f, shape, "mask", option, white_is_on=white)

    # ----------------------------------------------------------------------------- handlers
    def info(self, payload: Optional[dict] = None) -> dict:
        """What the page needs to set up its controls."""
        return {"size": self.model.size, "slot_first": self.slots[0], "slot_last": self.slots[1],
                "max_samples": self.max_samples, "ckpt": os.path.basename(self.ckpt)}

    def photo(self, payload: dict) -> dict:
        """An uploaded photo as the model will read it (decoded, EXIF orientation applied, alpha on
        white) as a PNG, so that the page paints on exactly these pixels."""
        rgb = self._photo(payload)
        return {"photo": png_data_url(rgb), "width": rgb.shape[1], "height": rgb.shape[0]}

    def mask(self, payload: dict) -> dict:
        """An uploaded mask file checked against the photo (size, black-and-white) and returned as
        the page's paint layer."""
        shape = (_number(payload, "height", "photo height", int, 1, 10 ** 6, None),
                 _number(payload, "width", "photo width", int, 1, 10 ** 6, None))
        hole = self._hole(payload, shape)
        return {"mask": png_data_url(hole_overlay(hole)), "hole_pixels": int(hole.sum()),
                "warnings": self._warnings(hole, "black" if payload.get("mask_hole") == "black" else "white")}

    def exemplar(self, payload: dict) -> dict:
        """An uploaded exemplar, decoded, as the model sees it (centre square, resized)."""
        key = "exemplar_b" if payload.get("slot") == "b" else "exemplar_a"
        preview = self._exemplar(payload, key, "exemplar B" if key == "exemplar_b" else "exemplar", PREVIEW)
        return {"preview": png_data_url(to_uint8(preview))}

    def _landmarks(self, payload: dict, name: str):
        """[5, 2] points of an uploaded landmark file for the photo ``name``, or None without one."""
        from inference.align import lookup, parse_points, to_five
        if not payload.get("landmarks"):
            return None
        f = upload(payload, "landmarks", "landmark file")
        label = f"landmark file {f.label}"
        try:
            text = f.getvalue().decode("utf-8")
        except UnicodeDecodeError:
            raise EditorError(f"{label} is not a text file; upload 10 numbers or JSON.") from None
        data = parse_points(text, f.label, f.label.lower().endswith(".json"))
        if isinstance(data, dict):
            data = lookup(data, cli.rel_stem(name), name, f.label)
        return to_five(data, label)

    def _find_faces(self, rgb: np.ndarray, name: str, landmarks=None, what: str = "photo") -> list:
        """Faces of an image, largest first: the uploaded landmarks' face, or the detector's."""
        from inference.detect import INSTALL, DetectorUnavailable, Face, make_detector
        if landmarks is not None:
            return [Face.from_landmarks(landmarks, "landmark file")]
        if self._detector is None:
            try:
                self._detector = make_detector(self.model.device)
            except DetectorUnavailable as e:
                raise EditorError(f"no landmark file was given and the face detector cannot be used ({e.reason}); "
                                  f"upload a landmark file (5 points: left eye, right eye, nose tip, left and "
                                  f"right mouth corners), or install the detector with `{INSTALL}` and restart "
                                  f"the editor.") from None
        with self.lock:
            faces = self._detector(rgb)
        if not faces:
            fix = ("upload a landmark file (5 points: left eye, right eye, nose tip, left and right mouth "
                   "corners)" if what == "photo" else "tick 'exemplars are aligned crops' if it is one")
            raise EditorError(f"no face was found in {what} {name}; {fix}.")
        return faces

    def align(self, payload: dict) -> dict:
        """The photo aligned and cropped like the training faces (``inference.align.align``), from an
        uploaded landmark file or, without one, the largest face the detector finds."""
        from inference.align import align
        rgb = self._photo(payload)
        name = os.path.basename(str(payload.get("photo_name") or "photo"))
        faces = self._find_faces(rgb, name, self._landmarks(payload, name))
        aligned, _ = align(rgb, faces[0].landmarks, self.align_size)
        return {"photo": png_data_url(aligned), "width": aligned.shape[1], "height": aligned.shape[0]}

    def faces(self, payload: dict) -> dict:
        """The faces "align automatically" can use in the photo (largest first), to draw their boxes."""
        rgb = self._photo(payload)
        name = os.path.basename(str(payload.get("photo_name") or "photo"))
        found = self._find_faces(rgb, name, self._landmarks(payload, name))
        return {"faces": [{"box": np.round(f.box, 1).tolist(), "landmarks": np.round(f.landmarks, 1).tolist(),
                           "score": f.score} for f in found]}

    def _aligner(self, payload: dict):
        from inference.photo import PhotoAligner
        crop_scale = _number(payload, "crop_scale", "crop scale", float, 0.5, 4.0, 1.0)
        feather = _number(payload, "feather", "feather", int, 0, 256, 0)
        return PhotoAligner(self.model.size, crop_scale=crop_scale, feather=feather, face="auto",
                            names=PAGE_NAMES)

    def _exemplar(self, payload: dict, key: str, what: str, size: int):
        """Exemplar [3, S, S]: centre-cropped, or (``align`` on, ``exemplar_aligned`` off) its largest
        face aligned like the training faces."""
        f = self._capped(upload(payload, key, what), what)
        if not (payload.get("align") and not payload.get("exemplar_aligned")):
            return read_exemplar(f, size)
        from inference.photo import align_exemplar
        rgb = self._image(f, what)
        faces = self._find_faces(rgb, f.label, None, what)
        return align_exemplar(rgb, faces[0], size)[0]

    def run(self, payload: dict) -> dict:
        """K completions at the photo's resolution (sample k drawn with seed + k), plus the mask.

        Plain mode is ``inpaint.inpaint_one``; style mixing (``mix`` true) is ``style_mix.mix`` with
        exemplar slots ``slot_first``..``slot_last`` from exemplar B, for seeds seed..seed + K - 1.
        """
        from scripts import inpaint, style_mix
        samples = _number(payload, "samples", "number of samples", int, 1, self.max_samples, 1)
        truncation = _number(payload, "truncation", "truncation", float, 0.0, 1.0, 1.0)
        seed = _number(payload, "seed", "seed", int, 0, 2 ** 63 - 1, 0)
        mixing = bool(payload.get("mix"))
        if mixing:
            lo, hi = self.slots
            first = _number(payload, "slot_first", "first slot i", int, lo, hi, lo)
            last = _number(payload, "slot_last", "last slot j", int, lo, hi, hi)
            if last < first:
                raise EditorError(f"the slot range i..j = {first}..{last} is empty; choose i <= j "
                                  f"(exemplar slots of this model: {lo}..{hi}).")

        original = self._photo(payload)
        hole = self._hole(payload, original.shape[:2])
        if not hole.any():
            raise EditorError("no hole is painted: paint over the part of the photo to fill (brush or "
                              "rectangle), or upload a mask.")
        size = self.model.size
        name = os.path.basename(str(payload.get("photo_name") or "photo"))
        record = None
        if payload.get("align"):  # the photo through its face's aligned crop (inference.photo)
            aligner = self._aligner(payload)
            prep = aligner.photo(original, hole, name, self._find_faces(original, name, self._landmarks(payload, name)))
            record = prep.record()
        else:
            prep = prepare(original, hole, size)
        ex_a = self._exemplar(payload, "exemplar_a", "exemplar", size)
        ex_b = self._exemplar(payload, "exemplar_b", "exemplar B", size) if mixing else None

        with self.lock:
            if mixing:
                codes = (self.model.encode_exemplars(ex_a[None]), self.model.encode_exemplars(ex_b[None]))
                results = [style_mix.mix(self.model, prep, ex_a, ex_b, first, last, seed=seed + k,
                                         truncation=truncation, codes=codes) for k in range(samples)]
            else:
                results = inpaint.inpaint_one(self.model, prep, ex_a, samples=samples, seed=seed,
                                              truncation=truncation)

        stem = cli.rel_stem(os.path.basename(str(payload.get("photo_name") or "photo"))) or "photo"
        tag = f"_mix_{first}-{last}" if mixing else ""
        meta = {"exegan:ckpt": os.path.basename(self.ckpt), "exegan:truncation": truncation,
                "exegan:runtime": getattr(self.model, "runtime", "PyTorch")}
        if mixing:
            meta["exegan:slots_from_b"] = f"{first}..{last}"
        if record is not None:
            meta["exegan:transform"] = cli.transform_json(record)
        out = []
        for k, res in enumerate(results):
            out.append({"name": f"{stem}{tag}_sample{k}.png", "seed": seed + k,
                        "png": png_data_url(res, {**meta, "exegan:seed": seed + k})})
        # The painted layer is always white = hole; whether it looks inverted was said at upload.
        warnings = [w for w in self._warnings(hole, "white") if w.kind != "inverted"]
        reply = {"results": out, "width": original.shape[1], "height": original.shape[0], "warnings": warnings,
                 "mask": {"name": f"{stem}_mask.png", "png": png_data_url(hole.astype(np.uint8) * 255)}}
        if record is not None:
            reply["face"] = {"box": record["face"]["box"], "index": record["face_index"],
                             "found": record["faces_found"]}
            reply["transform"] = record
        return reply


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
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

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
def demo_files(runs: str) -> tuple:
    """(export.pt, standin_psp.pt) of the newest ``make demo`` run under ``runs``."""
    from training.pretrained import STANDIN_PSP_FILE
    found = []
    if os.path.isdir(runs):
        for d in sorted(os.listdir(runs)):
            ckpt = os.path.join(runs, d, "checkpoints", "export.pt")
            if d.endswith("-demo") and os.path.isfile(ckpt):
                found.append((ckpt, os.path.join(runs, d, "checkpoints", STANDIN_PSP_FILE)))
    if not found:
        raise cli.CLIError(f"no demo run with checkpoints/export.pt under {runs}/; run `make demo` first "
                           f"(or give --ckpt and --psp).")
    return found[-1]


def check_port(host: str, port: int) -> None:
    """One sentence instead of uvicorn's log lines when the address cannot be listened on."""
    import socket
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
    import yaml
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
        args.ckpt, args.psp = demo_files(args.demo)
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
    import uvicorn
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
