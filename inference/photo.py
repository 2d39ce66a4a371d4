"""Your own photo, end to end: find the face, align photo and hole to the model's crop, complete the
crop, warp it back and composite it into the photo inside the hole only.

The released models only know aligned faces (CelebA-HQ / FFHQ crops). A photo goes through five
steps (``--align`` in scripts/inpaint.py and scripts/style_mix.py, "align automatically" in the
editor):

1. **find the face**: its 5 landmarks from a landmark file or the detector (:mod:`inference.detect`);
   with several faces, the one whose aligned crop holds the whole hole (:func:`choose_face`);
2. **align**: the similarity transform M (photo pixel -> crop pixel, :func:`crop_matrix`) of the
   FFHQ template (:mod:`inference.align`); only the photo region under the crop is warped
   (:func:`warp_region`), the hole pixels first set to the mean colour of the known pixels there;
   the crop's hole (:func:`crop_hole`) holds every crop pixel that the warp back reads for a hole
   pixel of the photo (the 4 x 4 bicubic footprint of M p), so no hole pixel is lost to
   interpolation, plus every crop pixel whose nearest photo pixel is a hole;
3. **complete** the crop as any aligned face (K samples, seeds, truncation, style mixing, sketch);
4. **warp back** with M^-1: every hole pixel p of the photo takes the completed crop's bicubic
   value at M p (only the hole pixels are computed, never a full-size warp);
5. **composite** inside the hole only; ``feather`` > 0 blends the outermost ``feather`` pixels of the
   hole with the photo, weight ``min(1, d / (feather + 1))`` for a pixel at distance d from the
   nearest known pixel (:func:`feather_weights`). Every pixel outside the hole is the photo's
   decoded 8-bit value, bit for bit, at the photo's size and in its EXIF orientation as displayed.

``crop_scale`` > 1 takes a larger crop around the same face (the template shrunk about the crop's
centre by that factor), for holes that reach past the standard crop. Exemplars are aligned the same
way at ``crop_scale`` 1 (:meth:`PhotoAligner.exemplar`): the style encoder was trained on aligned
faces. :meth:`AlignedPhoto.record` is the transform, the landmarks and the face box, written next to
the outputs so that a result can be reproduced.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import distance_transform_edt

from datasets.imaging import pil_to_tensor
from inference.align import apply, template, umeyama, warp
from inference.detect import Face, make_detector
from inference.errors import InferenceInputError
from inference.io import to_uint8
from inference.roundtrip import mean_colour

#: Accepted range of crop_scale (1 = the standard FFHQ crop).
CROP_SCALE_RANGE = (0.5, 4.0)
#: Largest feather, in pixels.
MAX_FEATHER = 256
#: Pixel-coordinate convention of every matrix written out.
CONVENTION = ("crop_xy = matrix @ [x, y, 1] maps photo pixels to aligned-crop pixels; pixel centres at "
              "integers, x to the right, y down, the photo as displayed (EXIF orientation applied)")

FaceChoice = Union[str, int]  # "auto", "largest" or a face index (largest face first)

#: How the messages name the user's controls: the command line's flags (the editor passes the
#: names of its page's controls instead).
CLI_NAMES = {"landmarks": "pass --landmarks with the face's 5 landmarks (left eye, right eye, nose tip, "
                          "left and right mouth corners)",
             "crop_scale": "pass --crop-scale {value:g}", "crop_scale_name": "--crop-scale",
             "face": "choose one with --face N and a larger --crop-scale",
             "exemplar": "pass --exemplar-landmarks with its 5 landmarks, or --exemplar-aligned if it is an "
                         "aligned face crop",
             "mask_hole": "use --mask-hole black for black holes"}


def parse_face(value: str) -> FaceChoice:
    """``--face`` value: auto (the face whose crop holds the hole), largest, or N (0 = largest)."""
    value = str(value).strip().lower()
    if value in ("auto", "largest"):
        return value
    if value.isdigit():
        return int(value)
    raise InferenceInputError(f"--face {value!r} is not auto, largest or a face number (0 = the largest "
                              f"face, 1 = the next, ...).")


def check_settings(crop_scale: float, feather: int) -> None:
    lo, hi = CROP_SCALE_RANGE
    if not (math.isfinite(crop_scale) and lo <= crop_scale <= hi):
        raise InferenceInputError(f"--crop-scale must be a number from {lo:g} to {hi:g} (1 = the standard "
                                  f"aligned crop), got {crop_scale}.")
    if not (0 <= feather <= MAX_FEATHER):
        raise InferenceInputError(f"--feather must be from 0 to {MAX_FEATHER} pixels, got {feather}.")


# ------------------------------------------------------------------------------------ geometry
def crop_matrix(landmarks: np.ndarray, size: int, crop_scale: float = 1.0) -> np.ndarray:
    """2x3 matrix photo pixel -> crop pixel: the template fit, the template shrunk about the crop's
    centre by ``crop_scale`` (a larger crop around the same face when > 1)."""
    c = (size - 1) / 2.0
    return umeyama(landmarks, c + (template(size) - c) / crop_scale)


def invert(matrix: np.ndarray) -> np.ndarray:
    """The inverse 2x3 affine matrix."""
    return np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]


def _scale(matrix: np.ndarray) -> float:
    return math.sqrt(abs(np.linalg.det(matrix[:, :2])))


def outside(uv: np.ndarray, size: int) -> float:
    """How far (crop pixels) the farthest of the points ``uv`` [N, 2] lies outside the crop square
    [-0.5, S - 0.5]^2; 0 when all are inside."""
    if not len(uv):
        return 0.0
    lo, hi = uv.min(0), uv.max(0)
    return float(max(0.0, -0.5 - lo.min(), hi.max() - (size - 0.5)))


def needed_crop_scale(uv: np.ndarray, size: int, crop_scale: float) -> float:
    """The crop_scale at which every point ``uv`` (crop pixels at ``crop_scale``) would fall inside
    the crop, rounded up to 0.05 with a margin of a few pixels."""
    c = (size - 1) / 2.0
    reach = float(np.abs(uv - c).max()) + 3.0
    return math.ceil(20 * crop_scale * reach / (size / 2.0)) / 20


def footprint(matrix: np.ndarray, size: int, shape: Tuple[int, int], margin: int) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the photo region under the crop, grown by ``margin`` pixels, clipped."""
    h, w = shape
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
    pts = apply(invert(matrix), corners)
    x0, y0 = np.floor(pts.min(0)).astype(int) - margin
    x1, y1 = np.ceil(pts.max(0)).astype(int) + margin + 1
    return max(0, x0), max(0, y0), min(w, x1), min(h, y1)


def warp_region(photo: np.ndarray, matrix: np.ndarray, size: int, hole: Optional[np.ndarray] = None) -> np.ndarray:
    """``inference.align.warp`` of the photo into the S x S crop, reading only the photo region
    under the crop (a 24-megapixel photo is never resampled whole). Hole pixels are first set to
    the mean colour of the region's known pixels, so that what the hole held does not leak into the
    crop's known pixels."""
    scale = _scale(matrix)
    factor = int(1.0 / scale) if scale < 0.5 else 1
    # The margin covers the Lanczos reduce (3 reduced pixels) and the bicubic taps (2) at the edge.
    x0, y0, x1, y1 = footprint(matrix, size, photo.shape[:2], margin=6 * factor + 4)
    if x1 <= x0 or y1 <= y0:
        raise InferenceInputError("the face's aligned crop lies outside the photo; check the landmarks.")
    region = photo[y0:y1, x0:x1]
    if hole is not None and hole[y0:y1, x0:x1].any():
        region_hole = hole[y0:y1, x0:x1]
        region = region.copy()
        region[region_hole] = mean_colour(region, region_hole)
    shifted = matrix.copy()
    shifted[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
    return warp(np.ascontiguousarray(region), shifted, size, "reflect")


def crop_hole(matrix: np.ndarray, hole: np.ndarray, uv: np.ndarray, size: int) -> np.ndarray:
    """bool [S, S]: the crop's hole for the photo's ``hole`` [H, W] whose pixels map to ``uv``.

    Every crop pixel in the 4 x 4 bicubic footprint of a hole pixel's image is a hole (what the
    warp back reads, so no photo hole pixel takes a known crop pixel's value), and so is every crop
    pixel whose nearest photo pixel is a hole (the whole cell of a hole pixel when the crop
    enlarges the photo)."""
    out = np.zeros((size, size), bool)
    base = np.floor(uv).astype(np.int64)
    for dy in (-1, 0, 1, 2):
        y = base[:, 1] + dy
        for dx in (-1, 0, 1, 2):
            x = base[:, 0] + dx
            ok = (x >= 0) & (x < size) & (y >= 0) & (y < size)
            out[y[ok], x[ok]] = True
    h, w = hole.shape
    ys, xs = np.mgrid[0:size, 0:size]
    p = np.rint(apply(invert(matrix), np.stack([xs.ravel(), ys.ravel()], 1))).astype(np.int64)
    ok = (p[:, 0] >= 0) & (p[:, 0] < w) & (p[:, 1] >= 0) & (p[:, 1] < h)
    idx = np.flatnonzero(ok)
    out.ravel()[idx[hole[p[idx, 1], p[idx, 0]]]] = True
    return out


def feather_weights(hole: np.ndarray, ys: np.ndarray, xs: np.ndarray, feather: int) -> Optional[np.ndarray]:
    """Weight [N] of the completion at the hole pixels (ys, xs): ``min(1, d / (feather + 1))``, d the
    Euclidean distance to the nearest known pixel (the photo's border is no seam); None when 0."""
    if feather <= 0:
        return None
    h, w = hole.shape
    y0, x0 = max(0, int(ys.min()) - feather - 1), max(0, int(xs.min()) - feather - 1)
    y1, x1 = min(h, int(ys.max()) + feather + 2), min(w, int(xs.max()) + feather + 2)
    region = hole[y0:y1, x0:x1]
    if region.all():  # no known pixel near the hole: nothing to blend with
        return None
    d = distance_transform_edt(region)[ys - y0, xs - x0]
    return np.minimum(1.0, d / (feather + 1)).astype(np.float32)


# ------------------------------------------------------------------------------- face choice
def choose_face(faces: Sequence[Face], uv_of: Callable[[int], np.ndarray], size: int, crop_scale: float,
                choice: FaceChoice, name: str, names: Optional[dict] = None) -> int:
    """Index of the face to complete: ``choice`` N or "largest" (faces are largest first), or for
    "auto" the face whose crop holds the whole hole (the hole nearest its crop's centre when
    several do). ``uv_of(i)`` maps the hole pixels into face i's crop. ``names``: how the messages
    name the controls (:data:`CLI_NAMES`)."""
    names = names or CLI_NAMES
    if not faces:
        raise InferenceInputError(f"no face was found in {name}; {names['landmarks']}.")

    def scale_of(i: int) -> float:
        return _scale(crop_matrix(faces[i].landmarks, size, crop_scale))

    n = len(faces)
    if choice == "largest":
        choice = 0
    if isinstance(choice, int):
        if choice >= n:
            raise InferenceInputError(f"--face {choice} but {n} face{'s were' if n > 1 else ' was'} found in "
                                      f"{name} (numbered from 0, the largest); pass --face 0"
                                      f"{f'..{n - 1}' if n > 1 else ''}, largest or auto.")
        _check_inside(uv_of(choice), size, crop_scale, choice, name, names, scale_of(choice))
        return choice
    uvs = [uv_of(i) for i in range(n)]
    holding = [i for i in range(n) if outside(uvs[i], size) == 0]
    if holding:
        c = (size - 1) / 2.0
        return min(holding, key=lambda i: float(np.abs(uvs[i].mean(0) - c).max()))
    touching = [i for i in range(n) if _inside_count(uvs[i], size) > 0]
    if len(touching) > 1:
        listed = ", ".join(str(i) for i in touching[:-1]) + f" and {touching[-1]}"
        raise InferenceInputError(f"the hole of {name} spreads over {len(touching)} faces (faces {listed}, "
                                  f"numbered from 0, the largest); paint the hole on one face at a time, or "
                                  f"{names['face']}.")
    best = touching[0] if touching else min(range(n), key=lambda i: outside(uvs[i], size))
    _check_inside(uvs[best], size, crop_scale, best, name, names, scale_of(best))
    return best  # not reached: _check_inside raised


def _inside_count(uv: np.ndarray, size: int) -> int:
    return int(((uv >= -0.5) & (uv <= size - 0.5)).all(1).sum())


def _check_inside(uv: np.ndarray, size: int, crop_scale: float, index: int, name: str, names: dict,
                  photo_scale: float) -> None:
    """One sentence when the hole's crop coordinates ``uv`` leave the crop; ``photo_scale`` = crop
    pixels per photo pixel."""
    over = outside(uv, size)
    if over == 0:
        return
    need = needed_crop_scale(uv, size, crop_scale)
    hi = CROP_SCALE_RANGE[1]
    fix = (f"{names['crop_scale'].format(value=need)} for a larger crop around the same face, or make the "
           f"hole smaller" if need <= hi else
           f"make the hole smaller (even {names['crop_scale_name']} {hi:g}, the largest, would not hold it)")
    raise InferenceInputError(f"the hole of {name} reaches {over / photo_scale:.0f} photo pixels ({over * 100 / size:.0f} "
                              f"% of the crop's side) outside the aligned crop of face {index} (crop scale "
                              f"{crop_scale:g}); {fix}.")


# ------------------------------------------------------------------------------- the round trip
@dataclass
class AlignedPhoto:
    """A photo on its way through the aligned crop and back: what :func:`inference.roundtrip.complete`
    needs (``image``, ``mask``, ``paste``) plus the record of the transform."""
    original: np.ndarray              # [H, W, 3] uint8 photo as decoded
    hole: np.ndarray                  # [H, W] bool, True = hole
    face: Face
    face_index: int
    faces_found: int
    matrix: np.ndarray                # 2x3, photo pixel -> crop pixel
    crop_scale: float
    feather: int
    crop: np.ndarray                  # [S, S, 3] uint8, the aligned photo (hole pixels mean colour)
    crop_hole: np.ndarray             # [S, S] bool
    ys: np.ndarray = field(repr=False)   # [N] hole pixel rows / columns of the photo
    xs: np.ndarray = field(repr=False)
    uv: np.ndarray = field(repr=False)   # [N, 2] their crop coordinates
    weights: Optional[np.ndarray] = field(default=None, repr=False)  # [N] feather weights

    @property
    def size(self) -> int:
        return int(self.crop.shape[0])

    @property
    def image(self) -> torch.Tensor:    # [3, S, S] in [-1, 1]
        return pil_to_tensor(Image.fromarray(self.crop))

    @property
    def mask(self) -> torch.Tensor:     # [1, S, S], 1 = hole
        return torch.from_numpy(self.crop_hole.astype(np.float32))[None]

    def model_sketch(self, strokes: np.ndarray) -> torch.Tensor:
        """User strokes (bool [H, W] at the photo's size) -> [1, S, S] in {0, 1} in the crop: a crop
        pixel is a stroke when its nearest photo pixel is one (inside the hole), or when a stroke
        pixel's image falls in it (thin strokes survive a shrink)."""
        on = strokes & self.hole
        out = np.zeros((self.size, self.size), bool)
        ys, xs = np.nonzero(on)
        if len(ys):
            uv = np.rint(apply(self.matrix, np.stack([xs, ys], 1))).astype(np.int64)
            ok = (uv >= 0).all(1) & (uv < self.size).all(1)
            out[uv[ok, 1], uv[ok, 0]] = True
            out |= crop_hole(self.matrix, on, np.empty((0, 2)), self.size)
        return torch.from_numpy((out & self.crop_hole).astype(np.float32))[None]

    def paste(self, completed: torch.Tensor) -> np.ndarray:
        """Completed crop [3, S, S] in [-1, 1] -> the photo [H, W, 3] uint8 with its hole filled by the
        crop warped back (bicubic at M p for every hole pixel p, 8-bit crop values as the other round
        trip uses); every pixel outside the hole is the photo's, bit for bit."""
        crop = torch.from_numpy(to_uint8(completed)).permute(2, 0, 1)[None].float()  # [1, 3, S, S]
        s = self.size
        grid = torch.from_numpy((2 * self.uv + 1) / s - 1).float().view(1, 1, -1, 2)
        vals = F.grid_sample(crop, grid, mode="bicubic", padding_mode="border", align_corners=False)
        vals = vals[0, :, 0].T                                                            # [N, 3]
        if self.weights is not None:
            known = torch.from_numpy(self.original[self.ys, self.xs]).float()
            w = torch.from_numpy(self.weights)[:, None]
            vals = w * vals + (1 - w) * known
        out = self.original.copy()
        out[self.ys, self.xs] = vals.round().clamp(0, 255).to(torch.uint8).numpy()
        return out

    def record(self) -> dict:
        """The transform, the face and the settings: enough to redo the round trip."""
        h, w = self.hole.shape
        return {"photo_size": [w, h], "model_size": self.size, "crop_scale": self.crop_scale,
                "feather": self.feather, "face_index": self.face_index, "faces_found": self.faces_found,
                "face": self.face.record(), "matrix": np.round(self.matrix, 10).tolist(),
                "inverse": np.round(invert(self.matrix), 10).tolist(), "convention": CONVENTION,
                "hole_pixels": int(len(self.ys)), "crop_hole_pixels": int(self.crop_hole.sum())}


def transform_json(record: dict) -> str:
    """A transform record (:meth:`AlignedPhoto.record`, plus the exemplars' records) as the compact
    JSON of every result's ``exegan:transform`` PNG text chunk."""
    return json.dumps(record, separators=(",", ":"))


def align_photo(photo: np.ndarray, hole: np.ndarray, faces: Sequence[Face], size: int, *,
                crop_scale: float = 1.0, face: FaceChoice = "auto", feather: int = 0,
                name: str = "the photo", names: Optional[dict] = None) -> AlignedPhoto:
    """Steps 1-2 of the module docstring for a photo [H, W, 3] uint8 and its hole [H, W] bool."""
    names = names or CLI_NAMES
    check_settings(crop_scale, feather)
    if hole.shape != photo.shape[:2]:
        raise InferenceInputError(f"the mask of {name} is {hole.shape[1]}x{hole.shape[0]} but the photo is "
                                  f"{photo.shape[1]}x{photo.shape[0]}; give a mask of the photo's size.")
    ys, xs = np.nonzero(hole)
    if not len(ys):
        raise InferenceInputError(f"the mask of {name} has no hole pixels (nothing to fill); white marks the "
                                  f"hole ({names['mask_hole']}).")
    pts = np.stack([xs, ys], 1).astype(np.float64)
    matrices = {}

    def uv_of(i: int) -> np.ndarray:
        matrices[i] = crop_matrix(faces[i].landmarks, size, crop_scale)
        return apply(matrices[i], pts)

    index = choose_face(faces, uv_of, size, crop_scale, face, name, names)
    matrix = matrices[index] if index in matrices else crop_matrix(faces[index].landmarks, size, crop_scale)
    uv = apply(matrix, pts)
    crop = warp_region(photo, matrix, size, hole)
    return AlignedPhoto(photo, hole, faces[index], index, len(faces), matrix, crop_scale, feather, crop,
                        crop_hole(matrix, hole, uv, size), ys, xs, uv, feather_weights(hole, ys, xs, feather))


def align_exemplar(rgb: np.ndarray, face: Face, size: int) -> Tuple[torch.Tensor, np.ndarray]:
    """(exemplar [3, S, S] in [-1, 1] aligned like the training faces, its 2x3 matrix)."""
    matrix = crop_matrix(face.landmarks, size, 1.0)
    return pil_to_tensor(Image.fromarray(warp_region(rgb, matrix, size))), matrix


class PhotoAligner:
    """Faces from given landmarks or the detector (made on first use), photos and exemplars aligned
    with the same settings; what the CLIs and the editor hold for ``--align``."""

    def __init__(self, size: int, *, crop_scale: float = 1.0, face: FaceChoice = "auto", feather: int = 0,
                 device: torch.device | str = "cpu", detector: Optional[Callable] = None,
                 names: Optional[dict] = None):
        check_settings(crop_scale, feather)
        self.size, self.crop_scale, self.face, self.feather = size, crop_scale, face, feather
        self.names = names or CLI_NAMES
        self.device = device
        self._detector = detector

    @property
    def detector(self) -> Callable:
        if self._detector is None:
            self._detector = make_detector(self.device)
        return self._detector

    def faces(self, rgb: np.ndarray, landmarks: Optional[np.ndarray] = None, source: str = "") -> List[Face]:
        """The photo's faces, largest first: the given landmarks' face, or every detected face."""
        if landmarks is not None:
            return [Face.from_landmarks(landmarks, source or "landmarks")]
        return list(self.detector(rgb))

    def photo(self, rgb: np.ndarray, hole: np.ndarray, name: str, faces: Sequence[Face]) -> AlignedPhoto:
        return align_photo(rgb, hole, faces, self.size, crop_scale=self.crop_scale, face=self.face,
                           feather=self.feather, name=name, names=self.names)

    def exemplar(self, rgb: np.ndarray, name: str, faces: Sequence[Face]) -> Tuple[torch.Tensor, dict]:
        """(aligned exemplar [3, S, S], its record) from the largest of ``faces``."""
        if not faces:
            raise InferenceInputError(f"no face was found in exemplar {name}; {self.names['exemplar']}.")
        tensor, matrix = align_exemplar(rgb, faces[0], self.size)
        return tensor, {"face": faces[0].record(), "matrix": np.round(matrix, 10).tolist()}
