"""Fixtures for the data tests: small image folders with every awkward file kind."""
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

SIZE = 32


def png16(arr: np.ndarray) -> bytes:
    """Encode a uint16 array [H, W, C] (C = 1, 2, 3, 4) as a 16-bit PNG (Pillow cannot write
    16-bit colour PNGs)."""
    h, w, c = arr.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _pattern(rng, h, w):
    """Smooth colour pattern (compresses fine as JPEG, distinct per pixel)."""
    y, x = np.mgrid[0:h, 0:w]
    base = rng.uniform(40, 200, size=3)
    return np.clip(np.stack([base[0] + 40 * np.sin(x / 3.0), base[1] + 2 * y,
                             base[2] + x + y], -1), 0, 255).astype(np.uint8)


@pytest.fixture
def mixed_folder(tmp_path):
    """A folder with RGB, grayscale, RGBA, 16-bit gray and colour, palette, nested BMP,
    non-square JPEG, a corrupt file, a hidden file and a non-image file. Returns (root, info)."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    info = {}

    rgb = _pattern(rng, SIZE, SIZE)
    Image.fromarray(rgb).save(root / "a_rgb.png")
    info["a_rgb.png"] = rgb

    gray = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 251).astype(np.uint8)
    Image.fromarray(gray, "L").save(root / "b_gray.png")
    info["b_gray.png"] = gray

    rgba = _pattern(rng, SIZE, SIZE)
    alpha = np.zeros((SIZE, SIZE), np.uint8)
    alpha[:, SIZE // 3:2 * SIZE // 3] = 128
    alpha[:, 2 * SIZE // 3:] = 255
    Image.fromarray(np.dstack([rgba, alpha]), "RGBA").save(root / "c_rgba.png")
    info["c_rgba.png"] = (rgba, alpha)

    g16 = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) * 63).astype(np.uint16)
    Image.fromarray(g16).save(root / "d_gray16.png")  # Pillow writes mode I;16 as 16-bit PNG
    info["d_gray16.png"] = g16

    c16 = (rng.integers(0, 65536, size=(SIZE, SIZE, 3))).astype(np.uint16)
    (root / "e_rgb16.png").write_bytes(png16(c16))
    info["e_rgb16.png"] = c16

    wide = np.zeros((SIZE, SIZE + 16, 3), np.uint8)
    wide[:, :8] = (255, 0, 0)
    wide[:, -8:] = (0, 0, 255)
    wide[:, 8:-8] = _pattern(rng, SIZE, SIZE)
    Image.fromarray(wide).save(root / "f_wide.jpg", quality=95)
    info["f_wide.jpg"] = wide

    pal = Image.fromarray(_pattern(rng, SIZE, SIZE)).convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.save(root / "g_palette.png")
    info["g_palette.png"] = np.asarray(pal.convert("RGB"))

    bmp = _pattern(rng, SIZE, SIZE)
    Image.fromarray(bmp).save(root / "sub" / "h_nested.BMP")
    info["sub/h_nested.BMP"] = bmp

    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (root / ".hidden.png").write_bytes(b"not an image")
    (root / "notes.txt").write_text("not an image")
    return root, info


@pytest.fixture
def clean_folder(tmp_path):
    """Readable images only (several modes, a non-square one, nested): for LMDB round trips."""
    root = tmp_path / "clean"
    (root / "nested").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(_pattern(rng, SIZE, SIZE)).save(root / f"{i:03d}.png")
    Image.fromarray(_pattern(rng, 40, 24)).save(root / "nested" / "tall.jpg", quality=90)
    Image.fromarray((np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 256).astype(np.uint8),
                    "L").save(root / "nested" / "gray.png")
    rgba = np.dstack([_pattern(rng, SIZE, SIZE), np.full((SIZE, SIZE), 100, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "rgba.webp", lossless=True)
    return root
