"""The interactive editor's request handlers (scripts/editor.py serves them as a web page): each
takes the page's JSON payload (a dict) and returns the dict sent back, or raises a user error whose
one sentence the page shows. Independent of the web layer, so the tests drive them directly too.

They run exactly the command-line tools' code: :mod:`inference.io` reads and validates the uploads,
:mod:`inference.roundtrip` does the any-size round trip (:func:`~inference.roundtrip.prepare` /
:func:`~inference.roundtrip.paste_back`: every known pixel of a result is the photo's, bit for bit)
and :func:`~inference.roundtrip.inpaint_one` draws sample k with seed + k,
:func:`inference.stylemix.mix` takes exemplar slots i..j from exemplar B, and
:func:`inference.align.align` aligns a face from landmarks. With "align automatically" the run goes
through the face's aligned crop and back (:mod:`inference.photo`, as ``--align`` in the command-line
tools). Uploads arrive as ``data:`` URLs and results go back as PNG ``data:`` URLs at the photo's own
resolution.
"""
from __future__ import annotations

import base64
import binascii
import io
import math
import os
import threading
import warnings
from typing import Callable, Dict, Optional

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from common import webguard
from datasets.imaging import rel_stem
from inference.align import align as align_face
from inference.align import lookup, parse_points, to_five
from inference.detect import INSTALL, DetectorUnavailable, Face, make_detector
from inference.errors import InferenceInputError
from inference.io import mask_warnings, read_binary, read_exemplar, read_rgb, to_uint8
from inference.photo import PhotoAligner, align_exemplar, transform_json
from inference.roundtrip import inpaint_one, prepare
from inference.stylemix import mix

#: Largest photo accepted, in pixels (checked from the file header before decoding).
MAX_PIXELS = 40_000_000
#: Side of the exemplar previews sent back to the page.
PREVIEW = 160
#: Name the page gives the mask it exports from the paint layer.
PAINTED = "painted mask"
#: How the photo pipeline's messages name the page's controls (inference.photo.CLI_NAMES).
PAGE_NAMES = {"landmarks": "upload a landmark file (5 points: left eye, right eye, nose tip, left and right "
                           "mouth corners)",
              "crop_scale": "set 'crop scale' to {value:g}", "crop_scale_name": "crop scale",
              "face": "paint on one face only", "exemplar": "tick 'exemplars are aligned crops' if it is one",
              "mask_hole": "paint over the part of the photo to fill"}


class EditorError(InferenceInputError):
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
    dict) and returns the dict sent back, or raises a user error (a :class:`common.errors.UserError`).

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
        return read_rgb(self._capped(f, what))

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
            data = lookup(data, rel_stem(name), name, f.label)
        return to_five(data, label)

    def _find_faces(self, rgb: np.ndarray, name: str, landmarks=None, what: str = "photo") -> list:
        """Faces of an image, largest first: the uploaded landmarks' face, or the detector's."""
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
        rgb = self._photo(payload)
        name = os.path.basename(str(payload.get("photo_name") or "photo"))
        faces = self._find_faces(rgb, name, self._landmarks(payload, name))
        aligned, _ = align_face(rgb, faces[0].landmarks, self.align_size)
        return {"photo": png_data_url(aligned), "width": aligned.shape[1], "height": aligned.shape[0]}

    def faces(self, payload: dict) -> dict:
        """The faces "align automatically" can use in the photo (largest first), to draw their boxes."""
        rgb = self._photo(payload)
        name = os.path.basename(str(payload.get("photo_name") or "photo"))
        found = self._find_faces(rgb, name, self._landmarks(payload, name))
        return {"faces": [{"box": np.round(f.box, 1).tolist(), "landmarks": np.round(f.landmarks, 1).tolist(),
                           "score": f.score} for f in found]}

    def _aligner(self, payload: dict):
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
        rgb = self._image(f, what)
        faces = self._find_faces(rgb, f.label, None, what)
        return align_exemplar(rgb, faces[0], size)[0]

    def run(self, payload: dict) -> dict:
        """K completions at the photo's resolution (sample k drawn with seed + k), plus the mask.

        Plain mode is :func:`inference.roundtrip.inpaint_one`; style mixing (``mix`` true) is
        :func:`inference.stylemix.mix` with exemplar slots ``slot_first``..``slot_last`` from exemplar
        B, for seeds seed..seed + K - 1.
        """
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
                results = [mix(self.model, prep, ex_a, ex_b, first, last, seed=seed + k, truncation=truncation,
                               codes=codes) for k in range(samples)]
            else:
                results = inpaint_one(self.model, prep, ex_a, samples=samples, seed=seed, truncation=truncation)

        stem = rel_stem(os.path.basename(str(payload.get("photo_name") or "photo"))) or "photo"
        tag = f"_mix_{first}-{last}" if mixing else ""
        meta = {"exegan:ckpt": os.path.basename(self.ckpt), "exegan:truncation": truncation,
                "exegan:runtime": getattr(self.model, "runtime", "PyTorch")}
        if mixing:
            meta["exegan:slots_from_b"] = f"{first}..{last}"
        if record is not None:
            meta["exegan:transform"] = transform_json(record)
        out = []
        for k, res in enumerate(results):
            out.append({"name": f"{stem}{tag}_sample{k}.png", "seed": seed + k,
                        "png": png_data_url(res, {**meta, "exegan:seed": seed + k})})
        # The painted layer is always white = hole; whether it looks inverted was said at upload.
        mask_notes = [w for w in self._warnings(hole, "white") if w.kind != "inverted"]
        reply = {"results": out, "width": original.shape[1], "height": original.shape[0], "warnings": mask_notes,
                 "mask": {"name": f"{stem}_mask.png", "png": png_data_url(hole.astype(np.uint8) * 255)}}
        if record is not None:
            reply["face"] = {"box": record["face"]["box"], "index": record["face_index"],
                             "found": record["faces_found"]}
            reply["transform"] = record
        return reply


