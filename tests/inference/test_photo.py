"""inference/photo.py: the photo round trip with a known transform (a face placed rotated and scaled
into a larger canvas comes back through the aligned crop: every pixel outside the hole bit for bit,
the hole within interpolation error of the canvas, no hole pixel left unfilled), the crop's hole
covers what the warp back reads, the feather ramp, exemplar alignment, and the choice of face with
its one-sentence errors."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from inference import photo as ph
from inference.align import align, apply, template
from inference.detect import Face
from inference.errors import InferenceInputError
from inference.roundtrip import complete

S = 256
#: The astronaut's 5 landmarks (MTCNN on skimage.data.astronaut(), rounded).
ASTRONAUT = np.array([[205.01, 101.73], [246.76, 103.71], [224.67, 128.96], [201.72, 139.25], [245.27, 141.86]])
SENTINEL = (255, 0, 255)


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data
    return data.astronaut()


@pytest.fixture(scope="module")
def aligned(astronaut):
    """The astronaut's face aligned at S x S: the ground truth the stand-in model returns."""
    return align(astronaut, ASTRONAUT, S)[0]


class KnownCompletion:
    """A model whose completion is known: ``truth`` [S, S, 3] inside the crop's hole (a constant colour
    when ``truth`` is an RGB triple); it records what it was given."""

    def __init__(self, truth):
        self.size, self.device = S, torch.device("cpu")
        t = np.broadcast_to(np.asarray(truth, np.uint8), (S, S, 3))
        self.truth = torch.from_numpy(np.ascontiguousarray(t)).permute(2, 0, 1)[None].float() / 127.5 - 1
        self.masks = []

    def complete(self, image, mask, codes, *, seed, truncation):
        self.masks.append(mask)
        return torch.where(mask > 0.5, self.truth, image)


def similarity(scale, degrees, tx, ty):
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


def place(photo, matrix, height, width):
    """``photo`` resampled into a height x width canvas so that canvas pixel q shows photo point
    M^-1 q (Pillow's bicubic affine transform: another resampler than the pipeline's)."""
    inv = ph.invert(matrix)
    a, b, c = inv[0]
    d, e, f = inv[1]
    # Pillow's coordinates put pixel centres at +0.5.
    coeffs = (a, b, c + 0.5 - 0.5 * (a + b), d, e, f + 0.5 - 0.5 * (d + e))
    return np.asarray(Image.fromarray(photo).transform((width, height), Image.AFFINE, coeffs, Image.BICUBIC))


def psnr(a, b):
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return 10 * math.log10(255 ** 2 / max(mse, 1e-12))


# The canvas face is 0.6x (the crop enlarges it), 1.7x, and 4x (the warp first reduces with Lanczos).
@pytest.mark.parametrize("scale,degrees", [(0.6, 20.0), (1.7, -35.0), (4.0, 8.0)])
def test_round_trip_with_a_known_transform(astronaut, aligned, scale, degrees):
    to_canvas = similarity(scale, degrees, 0.0, 0.0)
    corners = apply(to_canvas, [[0, 0], [511, 0], [0, 511], [511, 511]])
    to_canvas[:, 2] = 40 - corners.min(0)
    width, height = np.ceil(corners.max(0) - corners.min(0) + 80).astype(int)
    canvas = place(astronaut, to_canvas, height, width)
    marks = apply(to_canvas, ASTRONAUT)
    # The hole, drawn in canvas coordinates: an ellipse over the nose and mouth plus a 1-pixel line.
    yy, xx = np.mgrid[0:height, 0:width]
    nose = marks[2]
    hole = ((xx - nose[0]) / (18 * scale)) ** 2 + ((yy - nose[1] - 8 * scale) / (22 * scale)) ** 2 < 1
    hole[int(marks[0, 1]), int(marks[0, 0]) - int(10 * scale):int(marks[1, 0])] = True
    damaged = canvas.copy()
    damaged[hole] = SENTINEL           # what the hole held must not come back

    model = KnownCompletion(aligned)
    prep = ph.align_photo(damaged, hole, [Face.from_landmarks(marks, "test")], S)
    result = complete(model, prep, torch.zeros(1), seed=0, truncation=1.0)

    assert result.shape == canvas.shape and result.dtype == np.uint8
    assert np.array_equal(result[~hole], damaged[~hole])              # outside the hole: bit for bit
    assert not (result[hole] == SENTINEL).all(-1).any()               # no hole pixel left unfilled
    assert psnr(result[hole], canvas[hole]) >= 30.0, psnr(result[hole], canvas[hole])
    # The model saw the crop's hole, and the crop's known pixels hold no sentinel colour.
    assert torch.equal(model.masks[0][0], prep.mask)
    known = ~prep.crop_hole
    assert np.abs(prep.crop[known].astype(int) - np.array(SENTINEL)).sum(-1).min() > 60


def test_the_matrix_is_the_template_fit(aligned):
    to_canvas = similarity(0.6, 20.0, 100.0, 30.0)
    marks = apply(to_canvas, template(S))  # the template itself, placed: the fit is exact
    m = ph.crop_matrix(marks, S)
    assert np.allclose(m, ph.invert(to_canvas), atol=1e-9)
    # crop_scale c shrinks the template about the crop's centre by c.
    m2 = ph.crop_matrix(marks, S, 2.0)
    c = (S - 1) / 2
    assert np.allclose(apply(m2, marks), c + (template(S) - c) / 2, atol=1e-9)


@pytest.mark.parametrize("scale", [0.3, 1.0, 3.5])
def test_the_crop_hole_holds_every_pixel_the_warp_back_reads(scale):
    rng = np.random.default_rng(1)
    h = w = int(300 * scale) + 40
    hole = np.zeros((h, w), bool)
    hole[rng.integers(20, h - 20, 30), rng.integers(20, w - 20, 30)] = True   # isolated pixels
    hole[h // 2, 25:w - 25] = True                                             # a 1-pixel line
    marks = apply(similarity(scale, 13.0, 20.0, 20.0), template(S))
    m = ph.crop_matrix(marks, S)
    ys, xs = np.nonzero(hole)
    uv = apply(m, np.stack([xs, ys], 1))
    ch = ph.crop_hole(m, hole, uv, S)
    base = np.floor(uv).astype(int)
    for dy in (-1, 0, 1, 2):
        for dx in (-1, 0, 1, 2):
            x, y = base[:, 0] + dx, base[:, 1] + dy
            ok = (x >= 0) & (x < S) & (y >= 0) & (y < S)
            assert ch[y[ok], x[ok]].all()
    # ... and nothing more: every crop hole pixel lies within the footprint (2 px per axis) or the
    # nearest-pixel cell (half a photo pixel per axis, in crop pixels) of a hole pixel's image.
    from scipy.spatial import cKDTree
    d, _ = cKDTree(uv).query(np.argwhere(ch)[:, ::-1].astype(float))
    cell = 0.5 * math.sqrt(2) * ph._scale(m)
    assert d.max() <= max(2 * math.sqrt(2), cell) + 1e-6, (d.max(), cell)


def test_feather_blends_only_inside_the_hole_with_a_distance_ramp():
    rng = np.random.default_rng(2)
    h, w = 280, 300
    photo = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    hole = np.zeros((h, w), bool)
    hole[100:180, 110:200] = True
    marks = apply(similarity(1.0, 0.0, 30.0, 10.0), template(S))
    fill = (10, 200, 90)
    model = KnownCompletion(fill)
    hard = complete(model, ph.align_photo(photo, hole, [Face.from_landmarks(marks, "t")], S), torch.zeros(1),
                    seed=0, truncation=1.0)
    soft = complete(model, ph.align_photo(photo, hole, [Face.from_landmarks(marks, "t")], S, feather=3),
                    torch.zeros(1), seed=0, truncation=1.0)
    assert np.array_equal(hard[~hole], photo[~hole]) and np.array_equal(soft[~hole], photo[~hole])
    assert (hard[hole] == fill).all()                       # a constant crop comes back constant
    # The ramp: distance d to the nearest known pixel, weight min(1, d / 4).
    for d, (y, x) in ((1, (100, 150)), (2, (101, 150)), (3, (102, 150)), (4, (103, 150)), (20, (140, 150))):
        wgt = min(1.0, d / 4)
        want = np.round(wgt * np.array(fill) + (1 - wgt) * photo[y, x].astype(float))
        assert np.array_equal(soft[y, x], want.astype(np.uint8)), (d, soft[y, x], want)


def test_an_exemplar_given_rotated_and_scaled_gives_the_upright_codes(astronaut, aligned):
    from metrics.standins import standin_style_encoder
    enc = standin_style_encoder(4, 10, 14, 32, seed=0).eval()

    def codes(t):
        with torch.no_grad():
            return enc(t[None])[0]

    def tensor(a):
        return torch.from_numpy(np.array(a)).permute(2, 0, 1).float() / 127.5 - 1

    to_canvas = similarity(0.7, 25.0, 0.0, 0.0)
    corners = apply(to_canvas, [[0, 0], [511, 0], [0, 511], [511, 511]])
    to_canvas[:, 2] = 20 - corners.min(0)
    size = int(np.ceil((corners.max(0) - corners.min(0)).max() + 40))
    rotated = place(astronaut, to_canvas, size, size)
    face = Face.from_landmarks(apply(to_canvas, ASTRONAUT), "test")
    upright = codes(tensor(aligned))
    realigned = codes(ph.align_exemplar(rotated, face, S)[0])
    centre_crop = codes(tensor(np.asarray(Image.fromarray(rotated).resize((S, S), Image.LANCZOS))))
    err = (realigned - upright).norm() / upright.norm()
    unaligned = (centre_crop - upright).norm() / upright.norm()
    assert err < 0.05, err                       # the stated tolerance: 5 % of the codes' norm
    assert err < 0.25 * unaligned, (err, unaligned)  # and far closer than the unaligned exemplar


def _two_faces(aligned):
    """A canvas with two copies of the aligned face (left 0.5x, right 0.8x): (canvas, faces largest first)."""
    canvas = np.full((300, 520, 3), 90, np.uint8)
    faces = []
    for scale, tx in ((0.5, 10.0), (0.8, 250.0)):
        m = similarity(scale, 0.0, tx, 40.0)
        tile = place(aligned, m, 300, 520)
        inside = place(np.full_like(aligned, 255), m, 300, 520)[..., 0] > 127
        canvas[inside] = tile[inside]
        faces.append(Face.from_landmarks(apply(m, template(S)), "test"))
    return canvas, faces[::-1]


def test_the_face_whose_crop_holds_the_hole_is_chosen(aligned):
    canvas, faces = _two_faces(aligned)
    hole = np.zeros(canvas.shape[:2], bool)
    left_nose = apply(ph.invert(ph.crop_matrix(faces[1].landmarks, S)), template(S)[2:3])[0]
    hole[int(left_nose[1]) - 5:int(left_nose[1]) + 5, int(left_nose[0]) - 5:int(left_nose[0]) + 5] = True
    assert ph.align_photo(canvas, hole, faces, S).face_index == 1            # auto: the small left face
    assert ph.align_photo(canvas, hole, faces, S, face=1).face_index == 1
    with pytest.raises(InferenceInputError, match=r"outside the aligned crop of face 0 .*--crop-scale"):
        ph.align_photo(canvas, hole, faces, S, face="largest")


def test_one_sentence_errors_for_faces_and_holes(aligned):
    canvas, faces = _two_faces(aligned)
    h, w = canvas.shape[:2]
    across = np.zeros((h, w), bool)
    across[150:160, 60:460] = True                     # from one face to the other
    with pytest.raises(InferenceInputError, match=r"spreads over 2 faces \(faces 0 and 1"):
        ph.align_photo(canvas, across, faces, S, name="two.png")
    with pytest.raises(InferenceInputError, match=r"--face 2 but 2 faces were found in two.png .* --face 0\.\.1"):
        ph.align_photo(canvas, across, faces, S, face=2, name="two.png")
    with pytest.raises(InferenceInputError, match=r"no face was found in two.png; pass --landmarks"):
        ph.align_photo(canvas, across, [], S, name="two.png")
    with pytest.raises(InferenceInputError, match=r"no hole pixels"):
        ph.align_photo(canvas, np.zeros((h, w), bool), faces, S)
    # A hole past the crop: the message's --crop-scale is one that holds it.
    big = np.zeros((h, w), bool)
    big[20:290, 250:510] = True
    with pytest.raises(InferenceInputError) as e:
        ph.align_photo(canvas, big, faces[:1], S, name="one.png")
    msg = str(e.value)
    assert msg.startswith("the hole of one.png reaches ") and msg.count(".") <= 3, msg
    need = float(msg.split("--crop-scale ")[1].split(" ")[0])
    assert ph.align_photo(canvas, big, faces[:1], S, crop_scale=need).crop_scale == need
    with pytest.raises(InferenceInputError, match="--crop-scale must be"):
        ph.align_photo(canvas, big, faces[:1], S, crop_scale=float("nan"))
    with pytest.raises(InferenceInputError, match="--face 'x' is not auto"):
        ph.parse_face("x")
