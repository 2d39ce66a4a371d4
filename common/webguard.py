"""Guards for a local web server (the editor): who may talk to it, how much it decodes, how much
it works on at once, and what its command line accepts.

* :class:`HostOriginGuard`, an ASGI middleware: only the Host names the server answers to
  (:func:`local_hosts`: ``127.0.0.1``, ``localhost`` and ``[::1]`` with its port, plus any name
  given), so that a page of another site cannot reach it through DNS rebinding; on the API,
  only ``Content-Type: application/json`` (a cross-site form or ``text/plain`` POST cannot send
  it without the browser asking first) and a same-origin ``Origin`` or none. Refusals are JSON
  ``{"error": sentence}`` with status 400 (Host), 403 (Origin) or 415 (Content-Type).
* :func:`check_image_pixels`: an image's pixel count from its header (Pillow, no decoding),
  refused above a cap before anything is decoded.
* :class:`WorkGate` and :class:`WorkGateMiddleware`: at most ``limit`` requests work at once
  and at most ``queue`` wait; more are refused with 503 and one sentence.
* :func:`loads_json`: ``json.loads`` that refuses nesting deeper than a limit with one sentence
  (instead of a RecursionError from a 50 000-level document).
* :func:`check_port`, :func:`check_max_upload_mb`: the command line's ``--port`` and
  ``--max-upload-mb``.

Every refusal is a :class:`WebGuardError` (a :class:`common.errors.UserError`) whose ``status``
is the HTTP status to answer with. Only the standard library, Pillow, Starlette (the work gate's
thread pool) and common/ are used; the middlewares speak plain ASGI, so they wrap a Starlette
app (or any other).
"""
from __future__ import annotations

import json
import math
import re
import threading
import warnings
from typing import Iterable, Optional, Tuple

from PIL import Image

from common.errors import UserError

__all__ = ["WebGuardError", "ServerBusy", "LOCAL_NAMES", "local_hosts", "HostOriginGuard",
           "check_image_pixels", "WorkGate", "WorkGateMiddleware", "loads_json",
           "MAX_JSON_DEPTH", "check_port", "check_max_upload_mb", "guard_app"]

#: The names a server bound to this machine is reached by.
LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")
#: Deepest JSON nesting :func:`loads_json` accepts (the editor's payloads are one level deep).
MAX_JSON_DEPTH = 64


class WebGuardError(UserError, ValueError):
    """A request or setting the guards refuse; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class ServerBusy(WebGuardError):
    """More requests than the server works on or queues at once (HTTP 503)."""

    def __init__(self, message: str):
        super().__init__(message, 503)


# ------------------------------------------------------------------------------ Host / Origin
def _host_name(name: str) -> str:
    """``::1`` -> ``[::1]`` (an IPv6 literal as it appears in a Host header); lower case."""
    name = name.strip().lower().rstrip(".")
    return f"[{name}]" if ":" in name and not name.startswith("[") else name


def local_hosts(port: int, extra: Iterable[str] = ()) -> frozenset:
    """The Host header values of a server on ``port``: ``127.0.0.1``, ``localhost``, ``[::1]``
    and the names in ``extra`` (e.g. the ``--host`` it binds), each as ``name:port`` (and bare on
    port 80, where browsers leave the port out). A wildcard bind (``0.0.0.0``) is no name a
    browser uses: give the machine's own name or address in ``extra`` then."""
    out = set()
    for name in tuple(LOCAL_NAMES) + tuple(extra):
        if not name:
            continue
        name = _host_name(name)
        out.add(f"{name}:{int(port)}")
        if int(port) == 80:
            out.add(name)
    return frozenset(out)


def _header(scope, name: bytes) -> Optional[str]:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _send_json(send, status: int, message: str, extra_headers=()) -> None:
    body = json.dumps({"error": message}).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + list(extra_headers)})
    await send({"type": "http.response.body", "body": body})


class HostOriginGuard:
    """ASGI middleware: refuse requests for other Host names (400), cross-origin requests
    (``Origin`` other than the server's own, or ``Sec-Fetch-Site`` cross-site / same-site on
    the API: 403), and API requests that change state without ``Content-Type:
    application/json`` (415). Requests other than HTTP and WebSocket pass through.

    Args:
        app: the wrapped ASGI app.
        hosts: the accepted Host header values, e.g. :func:`local_hosts` (compared in lower
            case; a test client's ``testserver`` must be listed to be served).
        api_prefix: the path prefix of the API (default ``/api/``).
    """

    SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

    def __init__(self, app, hosts: Iterable[str], api_prefix: str = "/api/"):
        self.app = app
        self.hosts = frozenset(h.strip().lower() for h in hosts)
        self.api_prefix = api_prefix

    def refusal(self, scope) -> Optional[Tuple[int, str]]:
        """(status, sentence) when the request is refused, else None."""
        host = (_header(scope, b"host") or "").strip().lower()
        if host not in self.hosts:
            shown = host or "none"
            return 400, (f"this server answers only to {', '.join(sorted(self.hosts))}, not to the "
                         f"Host '{shown}'; open it at one of those addresses.")
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        origin = _header(scope, b"origin")
        if origin is not None and origin.strip().lower().rstrip("/") != f"{scheme}://{host}":
            return 403, (f"cross-origin requests are refused (Origin '{origin}' is not "
                         f"{scheme}://{host}); use the page this server serves.")
        api = scope.get("path", "").startswith(self.api_prefix)
        site = (_header(scope, b"sec-fetch-site") or "").strip().lower()
        if api and site in ("cross-site", "same-site"):
            return 403, (f"cross-site requests are refused (Sec-Fetch-Site '{site}'); use the "
                         f"page this server serves.")
        if api and scope["type"] == "http" and scope.get("method", "GET") not in self.SAFE_METHODS:
            ctype = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return 415, (f"the API accepts only Content-Type application/json, not "
                             f"'{ctype or 'none'}'; send the request as JSON (the page does).")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        refused = self.refusal(scope)
        if refused is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        await _send_json(send, *refused)


# ------------------------------------------------------------------------------- pixel caps
def check_image_pixels(source, max_pixels: int, what: str = "image",
                       name: Optional[str] = None, *,
                       allow_unreadable: bool = False) -> Optional[Tuple[int, int]]:
    """(width, height) of an image file or file object, read from its header without decoding
    the pixels; raises :class:`WebGuardError` (413) above ``max_pixels`` and (400) when Pillow
    cannot read the header — or, with ``allow_unreadable``, returns None then, so that the
    caller's own reader gives its sentence. A file object is left where it was."""
    label = name or str(getattr(source, "label", None) or getattr(source, "name", None)
                        or (source if isinstance(source, str) else what))
    start = source.tell() if hasattr(source, "tell") else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                w, h = im.size
    except Image.DecompressionBombError:
        w = h = None
    except (OSError, ValueError, SyntaxError) as e:
        if allow_unreadable:
            return None
        raise WebGuardError(f"{what} {label} is not an image Pillow can read ({e}); use a PNG or "
                            f"JPEG file.", 400) from None
    finally:
        if start is not None:
            source.seek(start)
    if w is None or w * h > max_pixels:
        size = "larger than Pillow opens" if w is None else f"{w}x{h} pixels"
        raise WebGuardError(f"{what} {label} is {size}, more than the limit of "
                            f"{max_pixels / 1e6:g} megapixels; use a smaller file.", 413)
    return w, h


# -------------------------------------------------------------------------------- work gate
class WorkGate:
    """At most ``limit`` holders at once and at most ``queue`` waiting; one more is refused
    with :class:`ServerBusy`. Thread-safe; ``with gate:`` admits, waits and works, or raises.

    The middleware form admits first (:meth:`admit`, never blocks), waits for a slot in a
    worker thread (:meth:`acquire`) and frees both with :meth:`release`.
    """

    def __init__(self, limit: int = 1, queue: int = 0, what: str = "the server"):
        if int(limit) < 1 or int(queue) < 0:
            raise ValueError(f"WorkGate needs limit >= 1 and queue >= 0, got {limit}, {queue}")
        self.limit, self.queue, self.what = int(limit), int(queue), what
        self._cond = threading.Condition()
        self._admitted = 0     # working + waiting
        self._working = 0

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._admitted

    def busy_message(self) -> str:
        return (f"{self.what} is busy with {self.limit + self.queue} request(s) already; try "
                f"again in a moment.")

    def admit(self) -> bool:
        """Count one more request in flight; False (nothing counted) when full."""
        with self._cond:
            if self._admitted >= self.limit + self.queue:
                return False
            self._admitted += 1
            return True

    def acquire(self) -> None:
        """Wait (blocking this thread) for a working slot; call after :meth:`admit`."""
        with self._cond:
            while self._working >= self.limit:
                self._cond.wait()
            self._working += 1

    def release(self) -> None:
        """Free the slot taken by :meth:`acquire` and the admission."""
        with self._cond:
            self._working -= 1
            self._admitted -= 1
            self._cond.notify()

    def leave(self) -> None:
        """Drop an admission that never acquired a slot."""
        with self._cond:
            self._admitted -= 1

    def __enter__(self):
        if not self.admit():
            raise ServerBusy(self.busy_message())
        try:
            self.acquire()
        except BaseException:
            self.leave()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class WorkGateMiddleware:
    """ASGI middleware: HTTP requests under ``prefix`` pass through ``gate`` (:class:`WorkGate`);
    beyond its limit and queue they are answered 503 with ``{"error": sentence}`` and
    ``Retry-After: 1``, before their body is read."""

    def __init__(self, app, gate: WorkGate, prefix: str = "/api/"):
        self.app, self.gate, self.prefix = app, gate, prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope.get("path", "").startswith(self.prefix):
            return await self.app(scope, receive, send)
        if not self.gate.admit():
            return await _send_json(send, 503, self.gate.busy_message(), [(b"retry-after", b"1")])
        from starlette.concurrency import run_in_threadpool  # optional: the editor's dependency
        taken = []

        def take():
            self.gate.acquire()
            taken.append(True)
        try:
            await run_in_threadpool(take)
        finally:
            if not taken:              # cancelled before a slot was taken
                self.gate.leave()
        try:
            await self.app(scope, receive, send)
        finally:
            self.gate.release()


def guard_app(app, *, port: int, hosts: Iterable[str] = (), max_in_flight: int = 1,
              max_queued: int = 2, what: str = "the server", api_prefix: str = "/api/"):
    """``app`` behind both middlewares: :class:`HostOriginGuard` outside (a refused request
    takes no slot) for :func:`local_hosts` ``(port, hosts)``, and a :class:`WorkGate` of
    ``max_in_flight`` working and ``max_queued`` waiting API requests inside."""
    gate = WorkGate(max_in_flight, max_queued, what=what)
    inner = WorkGateMiddleware(app, gate, prefix=api_prefix)
    guarded = HostOriginGuard(inner, local_hosts(port, hosts), api_prefix=api_prefix)
    guarded.gate = gate
    return guarded


# ------------------------------------------------------------------------------------- JSON
_JSON_TOKENS = re.compile(r'["\\\[\]{}]')


def json_depth(text: str) -> int:
    """The deepest nesting of arrays / objects in JSON ``text`` (strings skipped), computed
    without recursion."""
    depth = deepest = 0
    in_string, escaped_at = False, -1
    for m in _JSON_TOKENS.finditer(text):
        ch, at = m.group(), m.start()
        if in_string:
            if at == escaped_at:
                continue
            if ch == "\\":
                escaped_at = at + 1
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def loads_json(data, max_depth: int = MAX_JSON_DEPTH, what: str = "the request"):
    """``json.loads`` of bytes or text, refusing (:class:`WebGuardError`, 400) text that is
    not UTF-8 JSON or that nests arrays / objects deeper than ``max_depth``."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise WebGuardError(f"{what} is not UTF-8 JSON; send it as JSON (reload the page).",
                                400) from None
    if json_depth(data) > max_depth:
        raise WebGuardError(f"{what} nests JSON deeper than {max_depth} levels; send a flat JSON "
                            f"object (reload the page).", 400)
    try:
        return json.loads(data)
    except (json.JSONDecodeError, RecursionError):
        raise WebGuardError(f"{what} is not valid JSON; send it as JSON (reload the page).",
                            400) from None


# ----------------------------------------------------------------------------- command line
def check_port(port, option: str = "--port") -> int:
    """``port`` as an int from 1 to 65535, else :class:`WebGuardError` with one sentence."""
    try:
        if isinstance(port, bool) or float(port) != int(port):
            raise ValueError
        value = int(port)
    except (TypeError, ValueError, OverflowError):
        value = None
    if value is None or not 1 <= value <= 65535:
        raise WebGuardError(f"{option} must be a whole number from 1 to 65535, got {port!r}; "
                            f"pick a free port such as 7860.")
    return value


def check_max_upload_mb(value, option: str = "--max-upload-mb") -> float:
    """``value`` as a finite float above 0, else :class:`WebGuardError` with one sentence."""
    try:
        if isinstance(value, bool):
            raise ValueError
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        x = math.nan
    if not math.isfinite(x) or x <= 0:
        raise WebGuardError(f"{option} must be a finite number of megabytes above 0, got "
                            f"{value!r}; the default is 32.")
    return x
