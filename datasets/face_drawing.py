"""The demo faces' drawing: the attribute tables, one face's random attributes, and the renderer.

A face is a large, centred head in an FFHQ-like framing; the attributes EXE-GAN transfers from
exemplars vary by seed (skin tone, face shape, hair colour and style, eyes, brows, nose, mouth,
beard, glasses, blush, clothes, background). Shapes are lit by a random light through a
spherical pseudo-normal (smooth shading), hair carries a strand texture, and each image gets
mild Gaussian noise. :func:`draw_face` paints the parts back to front, one function per part;
:mod:`datasets.demo` writes the dataset folder.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SUPERSAMPLE = 2  # drawing scale before the box downsample (antialiasing of Pillow shapes)

SKIN_TONES = {
    "porcelain": (250, 222, 202), "fair": (241, 200, 168), "light": (228, 180, 142),
    "medium": (205, 148, 108), "olive": (184, 136, 92), "tan": (160, 110, 74),
    "brown": (122, 80, 54), "dark": (88, 58, 40),
}
HAIR_COLORS = {
    "black": (28, 24, 24), "dark_brown": (66, 42, 28), "brown": (112, 72, 42),
    "auburn": (140, 62, 34), "red": (178, 82, 38), "blonde": (214, 178, 112),
    "platinum": (232, 222, 196), "grey": (150, 150, 156),
}
EYE_COLORS = {
    "brown": (98, 58, 30), "dark_brown": (58, 34, 20), "hazel": (128, 100, 50),
    "green": (70, 124, 76), "blue": (62, 112, 186), "grey": (116, 128, 140),
}
HAIR_STYLES = ("short", "bangs", "side_part", "long", "curly", "bald")
HAIR_STYLE_P = (0.24, 0.16, 0.16, 0.24, 0.12, 0.08)
MOUTHS = ("neutral", "smile", "open")
GLASSES = ("none", "round", "square", "sunglasses")
GLASSES_P = (0.7, 0.12, 0.1, 0.08)
BEARDS = ("none", "moustache", "beard")
BEARDS_P = (0.8, 0.08, 0.12)


# ----------------------------------------------------------------------------------------------
# Drawing


class _Canvas:
    """Float RGB canvas in unit coordinates (x right, y down, both in [0, 1])."""

    def __init__(self, width: int):
        self.w = width
        self.img = np.zeros((width, width, 3), np.float32)
        c = (np.arange(width, dtype=np.float32) + 0.5) / width
        self.x = c[None, :]
        self.y = c[:, None]

    def paint(self, alpha: np.ndarray, color, shade: Optional[np.ndarray] = None,
              opacity: float = 1.0) -> None:
        """Composite ``color`` (times ``shade``) over the canvas with coverage ``alpha``."""
        alpha = np.broadcast_to(alpha, self.img.shape[:2])
        rows = np.flatnonzero(alpha.any(axis=1))
        if rows.size == 0:
            return
        cols = np.flatnonzero(alpha[rows[0]:rows[-1] + 1].any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))  # touched pixels only
        col = np.asarray(color, np.float32)
        if shade is not None:
            col = col * np.broadcast_to(shade, self.img.shape[:2])[box][..., None]
        a = alpha[box][..., None]
        if opacity != 1.0:
            a = a * opacity
        target = self.img[box]
        target += (col - target) * a

    def draw_mask(self, fn, blur: float = 0.0) -> np.ndarray:
        """Alpha [W, W] in [0, 1] from a Pillow drawing callback ``fn(draw, px)``, where
        ``px(v)`` converts unit lengths to pixels."""
        m = Image.new("L", (self.w, self.w), 0)
        fn(ImageDraw.Draw(m), lambda v: v * self.w)
        if blur > 0:
            box = m.getbbox()
            if box is not None:  # blur only around what was drawn
                r = int(3 * blur * self.w) + 2
                box = (max(0, box[0] - r), max(0, box[1] - r), min(self.w, box[2] + r),
                       min(self.w, box[3] + r))
                m.paste(m.crop(box).filter(ImageFilter.GaussianBlur(blur * self.w)), box[:2])
        return np.asarray(m, np.float32) / 255.0


def _smoothstep(edge: float, x: np.ndarray) -> np.ndarray:
    """Soft step 0 -> 1 across ``x = 0`` over ``edge`` (antialiased implicit shapes)."""
    return np.clip(0.5 + x / edge, 0.0, 1.0)


def _mix(a, b, t: float):
    return tuple(float(x) * (1 - t) + float(y) * t for x, y in zip(a, b))


def _jitter(rng, color, amount: float):
    return tuple(float(np.clip(c * (1 + rng.uniform(-amount, amount)), 0, 255)) for c in color)


def _sphere_shade(u: np.ndarray, v: np.ndarray, light: np.ndarray, ambient: float = 0.55,
                  diffuse: float = 0.5) -> np.ndarray:
    """Lambert shading of a pseudo-sphere with normalised coordinates (u, v)."""
    nz = np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, 1.0))
    lam = np.clip(u * light[0] + v * light[1] + nz * light[2], 0.0, 1.0)
    return ambient + diffuse * lam


def _ellipse(draw, px, cx, cy, rx, ry, **kw):
    draw.ellipse([px(cx - rx), px(cy - ry), px(cx + rx), px(cy + ry)], **kw)


def _hsv(h: float, s: float, v: float):
    return tuple(255 * c for c in colorsys.hsv_to_rgb(h, s, v))


@dataclass
class _Face:
    """What every part of one face is drawn from: the canvas, the light and the head's geometry
    (unit coordinates; ``u``, ``v`` are the head's normalised coordinates)."""
    attrs: dict
    cv: _Canvas
    edge: float            # antialiasing width of implicit shapes
    L: np.ndarray          # unit light direction [3]
    cx: float
    cy: float
    rx: float
    ry: float
    u: np.ndarray
    v: np.ndarray
    skin: np.ndarray
    hair_col: np.ndarray
    strands: np.ndarray    # the hair's strand texture
    hair_shade: np.ndarray
    head: Optional[np.ndarray] = None  # the head's coverage, set by _head
    eye_y: float = 0.0     # the eyes' height and size, set by _eyes
    ew: float = 0.0
    eh: float = 0.0
    my: float = 0.0        # the mouth's height and half width, set by _mouth
    mw: float = 0.0


def draw_face(attrs: dict, size: int, rng: np.random.Generator,
              noise: float = 2.5) -> Image.Image:
    """Render one face described by ``attrs`` (see :func:`datasets.demo.sample_attributes`) at ``size``."""
    ss = SUPERSAMPLE if size <= 384 else 1
    f = _layout(attrs, _Canvas(size * ss))
    _background(f)
    _body(f)
    _head(f)
    _eyes(f)
    _nose(f)
    _blush(f)
    _mouth(f)
    _facial_hair(f)
    _hair(f)
    _glasses(f)
    # Box-downsample (exact area average), add mild sensor-like noise, quantise.
    img = f.cv.img.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
    if noise > 0:
        img = img + rng.normal(0.0, noise, img.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8), "RGB")


def _layout(attrs: dict, cv: _Canvas) -> _Face:
    X, Y = cv.x, cv.y
    L = np.array([attrs["light"][0], attrs["light"][1], 1.0], np.float32)
    L /= np.linalg.norm(L)
    h = attrs["head"]
    cx, cy, rx = h["cx"], h["cy"], h["rx"]
    ry = rx * h["aspect"]
    u = (X - cx) / rx
    v = (Y - cy) / ry
    # Hair strands radiate from the crown, with a slow wave so they do not look ruled.
    phi = np.arctan2(X - cx, Y - (cy - ry * 1.35))
    strands = 1.0 + 0.06 * np.sin(phi * 70.0 + 2.0 * np.sin(v * 6.0 + u * 3.0))
    hair_shade = _sphere_shade(np.clip(u / 1.3, -1, 1), np.clip((v + 0.1) / 1.3, -1, 1), L,
                               0.6, 0.55) * strands
    return _Face(attrs=attrs, cv=cv, edge=1.5 / cv.w, L=L, cx=cx, cy=cy, rx=rx, ry=ry, u=u, v=v,
                 skin=np.array(SKIN_TONES[attrs["skin_tone"]], np.float32),
                 hair_col=np.array(HAIR_COLORS[attrs["hair_color"]], np.float32),
                 strands=strands, hair_shade=hair_shade)


def _background(f: _Face) -> None:
    """A vertical gradient between two hues, darker towards the corners."""
    cv, X, Y = f.cv, f.cv.x, f.cv.y
    bg = f.attrs["background"]
    top = np.array(_hsv(bg["hue"], bg["sat"], bg["top"]), np.float32)
    bottom = np.array(_hsv(bg["hue2"], bg["sat"], bg["bottom"]), np.float32)
    vignette = 1.0 - 0.25 * ((X - 0.5) ** 2 + (Y - 0.5) ** 2)
    cv.img[:] = (top * (1 - Y[..., None]) + bottom * Y[..., None]) * vignette[..., None]


def _body(f: _Face) -> None:
    """Long hair behind the head, then the neck and the torso."""
    cv, X, Y, u, v = f.cv, f.cv.x, f.cv.y, f.u, f.v
    cx, cy, rx, ry, edge, L = f.cx, f.cy, f.rx, f.ry, f.edge, f.L
    attrs = f.attrs
    # Long hair falls behind the head onto the shoulders.
    if attrs["hair_style"] == "long":
        back = ((u / 1.28) ** 2 + ((v + 0.08) / 1.12) ** 2 <= 1) | (
            (np.abs(u) < 1.22 - 0.15 * np.clip(v - 0.9, 0, None)) & (v > -0.1) & (v < 1.45))
        cv.paint(back.astype(np.float32), f.hair_col * 0.85, f.hair_shade)

    clothes = np.array(_hsv(attrs["clothes"]["hue"], attrs["clothes"]["sat"],
                            attrs["clothes"]["val"]), np.float32)
    neck = (np.abs(X - cx) < rx * 0.42) & (Y > cy + ry * 0.3) & (Y < 1.0)
    neck_shade = 0.72 + 0.18 * np.clip((Y - (cy + ry * 0.85)) / 0.12, 0, 1)
    cv.paint(neck.astype(np.float32), f.skin, neck_shade)
    torso_u = (X - cx) / (rx * 2.1)
    torso_v = (Y - (cy + ry + 0.32)) / 0.3
    torso = _smoothstep(edge * 4, 1 - torso_u ** 2 - torso_v ** 2)
    collar = _smoothstep(edge * 4, np.abs(X - cx) * 2.2 - (Y - (cy + ry * 0.88)))
    cv.paint(torso * np.clip(collar + (Y > cy + ry * 1.25), 0, 1), clothes,
             _sphere_shade(np.clip(torso_u, -1, 1), np.clip(torso_v, -1, 1), L, 0.6, 0.45))


def _head(f: _Face) -> None:
    """Ears, then the head: a superellipse whose lower half narrows towards the chin."""
    cv, u, v, skin, L = f.cv, f.u, f.v, f.skin, f.L
    cx, cy, rx, ry = f.cx, f.cy, f.rx, f.ry
    h = f.attrs["head"]
    ey = cy + ry * 0.02
    ears = cv.draw_mask(lambda d, px: [_ellipse(d, px, cx + s * rx * 0.97, ey, rx * 0.17,
                                                ry * 0.2, fill=255) for s in (-1, 1)])
    cv.paint(ears, skin * 0.92, _sphere_shade(np.clip(u, -1, 1) * 0.5, v * 0.5, L))
    uj = u * (1 + h["jaw_taper"] * np.clip(v, 0, None))
    p = h["squareness"]
    head_f = 1 - (np.abs(uj) ** p + np.abs(v) ** np.where(v > 0, p, 2.0))
    f.head = _smoothstep(f.edge / rx * 2, head_f)
    skin_shade = _sphere_shade(np.clip(uj, -1, 1), np.clip(v, -1, 1), L)
    cv.paint(f.head, skin, skin_shade)


def _eyes(f: _Face) -> None:
    """Each eye (socket, sclera, iris, pupil, glint, lid) and its eyebrow."""
    cv, X, Y, skin, L = f.cv, f.cv.x, f.cv.y, f.skin, f.L
    cx, cy, rx, ry = f.cx, f.cy, f.rx, f.ry
    e = f.attrs["eyes"]
    eye_y = f.eye_y = cy + ry * e["dy"]
    ew = f.ew = rx * e["width"]
    eh = f.eh = ew * e["openness"]
    eye_col = EYE_COLORS[f.attrs["eye_color"]]
    for s in (-1, 1):
        ex = cx + s * rx * e["dx"]
        socket = cv.draw_mask(lambda d, px: _ellipse(d, px, ex, eye_y - eh * 0.3, ew * 1.5,
                                                     eh * 2.2, fill=255), blur=0.012)
        cv.paint(socket, skin * 0.72, opacity=0.35)
        sclera = cv.draw_mask(lambda d, px: _ellipse(d, px, ex, eye_y, ew, eh, fill=255))
        cv.paint(sclera, (236, 232, 226))
        ix = ex + e["gaze"] * ew
        ir = eh * 0.95
        iris = cv.draw_mask(lambda d, px: _ellipse(d, px, ix, eye_y, ir, ir, fill=255)) * sclera
        iris_shade = 0.75 + 0.35 * np.clip(1 - ((X - ix) ** 2 + (Y - eye_y) ** 2) / ir ** 2, 0, 1)
        cv.paint(iris, eye_col, iris_shade)
        pupil = cv.draw_mask(lambda d, px: _ellipse(d, px, ix, eye_y, ir * 0.45, ir * 0.45,
                                                    fill=255)) * sclera
        cv.paint(pupil, (12, 10, 10))
        glint = cv.draw_mask(lambda d, px: _ellipse(d, px, ix + L[0] * ir * 0.4,
                                                    eye_y + L[1] * ir * 0.5, ir * 0.2, ir * 0.2,
                                                    fill=255)) * sclera
        cv.paint(glint, (255, 255, 255), opacity=0.9)
        lid = cv.draw_mask(lambda d, px: d.arc([px(ex - ew), px(eye_y - eh), px(ex + ew),
                                                px(eye_y + eh)], 190, 350, fill=255,
                                               width=max(1, int(px(eh * 0.35)))))
        cv.paint(lid, skin * 0.3)
        _brow(f, s, ex)


def _brow(f: _Face, s: int, ex: float) -> None:
    """One eyebrow (side ``s``, eye centre ``ex``): a thick arc in a darker hair colour, tilted
    per face."""
    eye_y, ew, eh = f.eye_y, f.ew, f.eh
    b = f.attrs["brows"]
    by = eye_y - eh * b["lift"] - ew * 0.2
    inner, outer = ex - s * ew * 1.05, ex + s * ew * 1.15
    t = b["tilt"] * eh * s
    pts = [(inner, by + t), (ex, by - eh * 0.5), (outer, by - t * 0.3 + eh * 0.3)]
    brow = f.cv.draw_mask(lambda d, px: d.line([(px(a), px(c)) for a, c in pts], fill=255,
                                               width=max(1, int(px(eh * b["thickness"] + 0.006))),
                                               joint="curve"))
    brow_col = np.minimum(f.hair_col * 0.7, f.skin * 0.55)
    f.cv.paint(brow * f.head, brow_col, f.strands)


def _nose(f: _Face) -> None:
    """A shaded bridge on the side away from the light, nostrils and a tip highlight."""
    cv, skin, L = f.cv, f.skin, f.L
    cx, cy, rx, ry, eye_y, eh = f.cx, f.cy, f.rx, f.ry, f.eye_y, f.eh
    nose_y = cy + ry * 0.24
    side = -1 if L[0] > 0 else 1
    bridge = cv.draw_mask(lambda d, px: d.line([(px(cx + side * rx * 0.07), px(eye_y + eh)),
                                                (px(cx + side * rx * 0.11), px(nose_y))],
                                               fill=255, width=max(1, int(px(rx * 0.07)))),
                          blur=0.006)
    cv.paint(bridge, skin * 0.75, opacity=0.6)
    under = cv.draw_mask(lambda d, px: _ellipse(d, px, cx, nose_y + rx * 0.04, rx * 0.16,
                                                rx * 0.05, fill=255), blur=0.006)
    cv.paint(under, skin * 0.7, opacity=0.55)
    for s in (-1, 1):
        nostril = cv.draw_mask(lambda d, px: _ellipse(d, px, cx + s * rx * 0.075, nose_y,
                                                      rx * 0.045, rx * 0.028, fill=255))
        cv.paint(nostril, skin * 0.4)
    tip = cv.draw_mask(lambda d, px: _ellipse(d, px, cx + L[0] * rx * 0.04,
                                              nose_y - rx * 0.06, rx * 0.06, rx * 0.05,
                                              fill=255), blur=0.008)
    cv.paint(tip, np.minimum(skin * 1.15, 255), opacity=0.6)


def _blush(f: _Face) -> None:
    if f.attrs["blush"]:
        cx, cy, rx, ry = f.cx, f.cy, f.rx, f.ry
        blush = f.cv.draw_mask(lambda d, px: [_ellipse(d, px, cx + s * rx * 0.48, cy + ry * 0.22,
                                                       rx * 0.2, rx * 0.13, fill=255)
                                              for s in (-1, 1)], blur=0.02)
        f.cv.paint(blush, (224, 110, 110), opacity=0.3)


def _mouth(f: _Face) -> None:
    """The lips: open (with teeth), a smile, or neutral."""
    cv, Y, cx = f.cv, f.cv.y, f.cx
    my = f.my = f.cy + f.ry * 0.52
    mw = f.mw = f.rx * 0.38
    lips = np.array(_mix(f.skin, (176, 58, 70), 0.55), np.float32)
    mouth = f.attrs["mouth"]
    if mouth == "open":
        inside = cv.draw_mask(lambda d, px: _ellipse(d, px, cx, my, mw * 0.85, mw * 0.38,
                                                     fill=255))
        lip_ring = cv.draw_mask(lambda d, px: _ellipse(d, px, cx, my, mw, mw * 0.5, fill=255))
        cv.paint(lip_ring, lips)
        cv.paint(inside, (70, 18, 26))
        teeth = inside * (Y < my - mw * 0.12)
        cv.paint(teeth, (238, 234, 222))
    elif mouth == "smile":
        lower = cv.draw_mask(lambda d, px: d.chord([px(cx - mw), px(my - mw * 0.55),
                                                    px(cx + mw), px(my + mw * 0.45)], 0, 180,
                                                   fill=255))
        cv.paint(lower, lips)
        line = cv.draw_mask(lambda d, px: d.arc([px(cx - mw), px(my - mw * 0.6), px(cx + mw),
                                                 px(my + mw * 0.1)], 10, 170, fill=255,
                                                width=max(1, int(px(mw * 0.08)))))
        cv.paint(line, lips * 0.45)
    else:
        upper = cv.draw_mask(lambda d, px: d.polygon(
            [(px(cx - mw), px(my)), (px(cx - mw * 0.35), px(my - mw * 0.22)),
             (px(cx), px(my - mw * 0.12)), (px(cx + mw * 0.35), px(my - mw * 0.22)),
             (px(cx + mw), px(my))], fill=255))
        lower = cv.draw_mask(lambda d, px: d.chord([px(cx - mw * 0.85), px(my - mw * 0.3),
                                                    px(cx + mw * 0.85), px(my + mw * 0.3)],
                                                   0, 180, fill=255))
        cv.paint(np.maximum(upper, lower), lips,
                 1.0 + 0.12 * np.clip((Y - my) / (mw * 0.3), -1, 1))
        line = cv.draw_mask(lambda d, px: d.line([(px(cx - mw), px(my)), (px(cx + mw), px(my))],
                                                 fill=255, width=max(1, int(px(mw * 0.06)))))
        cv.paint(line, lips * 0.4)


def _facial_hair(f: _Face) -> None:
    """A beard (jaw and cheeks, around the mouth) and / or a moustache."""
    cv, Y, u, v, head, cx, my, mw = f.cv, f.cv.y, f.u, f.v, f.head, f.cx, f.my, f.mw
    if f.attrs["beard"] == "beard":
        beard = head * _smoothstep(0.03, Y - (my - mw * 0.45)) * \
            (1 - cv.draw_mask(lambda d, px: _ellipse(d, px, cx, my, mw * 1.05, mw * 0.42,
                                                     fill=255)))
        beard = np.maximum(beard, head * _smoothstep(0.03, np.abs(u) - 0.72) *
                           _smoothstep(0.03, v - 0.0))
        cv.paint(beard, f.hair_col, f.hair_shade, opacity=0.9)
    if f.attrs["beard"] in ("beard", "moustache"):
        moustache = cv.draw_mask(lambda d, px: d.chord([px(cx - mw * 1.05), px(my - mw * 0.55),
                                                        px(cx + mw * 1.05), px(my + mw * 0.25)],
                                                       180, 360, fill=255))
        cv.paint(moustache * (Y < my - mw * 0.05), f.hair_col, f.hair_shade, opacity=0.9)


def _hair(f: _Face) -> None:
    """Hair on top of the head: inside a slightly larger ellipse, above a hairline curve (for a
    bald head, only the sides)."""
    u, v, style = f.u, f.v, f.attrs["hair_style"]
    if style != "bald":
        theta = np.arctan2(v, u)
        bump = 0.06 * np.sin(theta * 14) if style == "curly" else 0.0
        outer = 1 + bump - ((u / 1.1) ** 2 + ((v + 0.06) / 1.1) ** 2)
        if style == "bangs":
            hairline = -0.3 + 0.25 * u ** 2
        elif style == "side_part":
            hairline = -0.5 + 0.45 * u ** 2 + 0.12 * u
        elif style == "long":
            hairline = -0.52 + 0.55 * u ** 2
        else:
            hairline = -0.55 + 0.5 * u ** 2
        top_hair = _smoothstep(f.edge / f.rx * 2, outer) * _smoothstep(0.04, hairline - v)
        if style == "long":
            strands_front = (np.abs(u) > 0.82) & (np.abs(u) < 1.22) & (v > -0.3) & (v < 1.3)
            top_hair = np.maximum(top_hair, strands_front.astype(np.float32))
        f.cv.paint(top_hair, f.hair_col, f.hair_shade)
    else:
        sides = f.head * _smoothstep(0.03, np.abs(u) - 0.86) * (v > -0.35) * (v < 0.2)
        f.cv.paint(sides, f.hair_col, f.hair_shade, opacity=0.9)


def _glasses(f: _Face) -> None:
    """Round, square or sun glasses: lenses, rims, the bridge and the temples."""
    g = f.attrs["glasses"]
    if g == "none":
        return
    cv, cx, rx, eye_y, ew = f.cv, f.cx, f.rx, f.eye_y, f.ew
    e = f.attrs["eyes"]
    frame_col = (30, 28, 32) if g != "square" else (120, 80, 40)
    lens_r = ew * 1.45
    lw = max(1, int(cv.w * 0.012))
    for s in (-1, 1):
        ex = cx + s * rx * e["dx"]
        box = lambda px: [px(ex - lens_r), px(eye_y - lens_r * 0.8),  # noqa: E731
                          px(ex + lens_r), px(eye_y + lens_r * 0.8)]
        if g == "sunglasses":
            lens = cv.draw_mask(lambda d, px: d.ellipse(box(px), fill=255))
            cv.paint(lens, (24, 26, 34), opacity=0.9)
        shape = "rectangle" if g == "square" else "ellipse"
        rim = cv.draw_mask(lambda d, px: getattr(d, shape)(box(px), outline=255, width=lw))
        cv.paint(rim, frame_col)
    bridge_g = cv.draw_mask(lambda d, px: d.line(
        [(px(cx - rx * e["dx"] + lens_r), px(eye_y - lens_r * 0.2)),
         (px(cx + rx * e["dx"] - lens_r), px(eye_y - lens_r * 0.2))], fill=255, width=lw))
    temples = cv.draw_mask(lambda d, px: [d.line(
        [(px(cx + s * (rx * e["dx"] + lens_r)), px(eye_y - lens_r * 0.3)),
         (px(cx + s * rx * 0.98), px(eye_y - lens_r * 0.1))], fill=255, width=lw)
        for s in (-1, 1)])
    cv.paint(np.maximum(bridge_g, temples), frame_col)
