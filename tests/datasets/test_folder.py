"""ImageFolderDataset: format conversion, cropping, resizing, corrupt files, order, flips."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.errors import DatasetError
from datasets.folder import ImageFolderDataset
SIZE = 32  # the fixtures' image size

GOOD = ["a_rgb.png", "b_gray.png", "c_rgba.png", "d_gray16.png", "e_rgb16.png", "f_wide.jpg",
        "g_palette.png", "sub/h_nested.BMP"]


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> exact uint8 [H, W, 3] (every value is k / 127.5 - 1)."""
    a = (t + 1) * 127.5
    assert torch.allclose(a, a.round(), atol=1e-4), "values are not on the 8-bit grid"
    return a.round().to(torch.uint8).permute(1, 2, 0).numpy()


def test_mixed_folder_skip_loads_good_files_and_reports_corrupt(mixed_folder):
    root, _ = mixed_folder
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable image.*corrupt\.png"):
        ds = ImageFolderDataset(root, SIZE)
    assert ds.names == GOOD  # sorted, recursive, hidden + non-image files ignored
    assert ds.bad == [str(root / "corrupt.png")]
    assert len(ds) == len(GOOD)
    for i in range(len(ds)):
        x = ds[i]
        assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1


def test_mixed_folder_raise_names_the_corrupt_file(mixed_folder):
    root, _ = mixed_folder
    with pytest.raises(DatasetError, match=r"corrupt\.png") as e:
        ImageFolderDataset(root, SIZE, on_error="raise")
    assert "\n" not in str(e.value)


def test_mode_conversions_are_exact(mixed_folder):
    root, info = mixed_folder
    with pytest.warns(UserWarning):
        ds = ImageFolderDataset(root, SIZE)
    get = {n: to_uint8(ds[i]) for i, n in enumerate(ds.names)}

    np.testing.assert_array_equal(get["a_rgb.png"], info["a_rgb.png"])
    gray = info["b_gray.png"]
    np.testing.assert_array_equal(get["b_gray.png"], np.stack([gray] * 3, -1))
    # 16-bit grayscale scales to 8 bit (Pillow's own conversion would clip at 255).
    g16 = info["d_gray16.png"]
    np.testing.assert_array_equal(get["d_gray16.png"][..., 0],
                                  np.round(g16 / 257.0).astype(np.uint8))
    # 16-bit colour: within one 8-bit level of v / 257.
    c16 = info["e_rgb16.png"]
    assert np.abs(get["e_rgb16.png"].astype(int) - c16 / 257.0).max() <= 1.0
    np.testing.assert_array_equal(get["g_palette.png"], info["g_palette.png"])
    np.testing.assert_array_equal(get["sub/h_nested.BMP"], info["sub/h_nested.BMP"])


def test_rgba_is_composited_on_white(mixed_folder):
    root, info = mixed_folder
    with pytest.warns(UserWarning):
        ds = ImageFolderDataset(root, SIZE)
    out = to_uint8(ds[ds.names.index("c_rgba.png")]).astype(int)
    rgb, alpha = info["c_rgba.png"]
    a = alpha[..., None] / 255.0
    expected = rgb * a + 255 * (1 - a)
    assert np.abs(out - expected).max() <= 1
    transparent = alpha == 0
    assert (out[transparent] == 255).all()  # hidden colours do not leak through
    opaque = alpha == 255
    np.testing.assert_array_equal(out[opaque], rgb[opaque])


def test_non_square_is_centre_cropped(mixed_folder):
    root, info = mixed_folder
    with pytest.warns(UserWarning):
        ds = ImageFolderDataset(root, SIZE)
    out = to_uint8(ds[ds.names.index("f_wide.jpg")])
    decoded = np.asarray(Image.open(root / "f_wide.jpg").convert("RGB"))
    np.testing.assert_array_equal(out, decoded[:, 8:8 + SIZE])  # red / blue margins cut off


def test_resize_uses_lanczos(mixed_folder):
    root, info = mixed_folder
    with pytest.warns(UserWarning):
        ds = ImageFolderDataset(root, 16)
    out = to_uint8(ds[ds.names.index("a_rgb.png")])
    ref = np.asarray(Image.fromarray(info["a_rgb.png"]).resize((16, 16), Image.LANCZOS))
    np.testing.assert_array_equal(out, ref)
    bilinear = np.asarray(Image.fromarray(info["a_rgb.png"]).resize((16, 16), Image.BILINEAR))
    assert not np.array_equal(out, bilinear)


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((SIZE, SIZE, 3), np.uint8)
    a[:4, :] = 255  # white band at the top of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(a).save(tmp_path / "r.png", exif=exif.tobytes())
    out = to_uint8(ImageFolderDataset(tmp_path, SIZE)[0])
    assert out[:, -4:].min() == 255 and out[:, :SIZE - 4].max() == 0  # band is now on the right


def test_missing_and_empty_folders_are_one_sentence(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as e:
        ImageFolderDataset(tmp_path / "nope", SIZE)
    assert "nope" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="contains no images"):
        ImageFolderDataset(tmp_path / "empty", SIZE)
    (tmp_path / "allbad").mkdir()
    (tmp_path / "allbad" / "x.jpg").write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="no readable images"):
        ImageFolderDataset(tmp_path / "allbad", SIZE)


def test_truncated_jpeg_is_caught_when_decoded(tmp_path):
    good = np.full((SIZE, SIZE, 3), 90, np.uint8)
    Image.fromarray(good).save(tmp_path / "a.png")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        buf, format="JPEG")
    (tmp_path / "b.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    Image.fromarray(good + 50).save(tmp_path / "c.png")

    ds = ImageFolderDataset(tmp_path, SIZE)  # header check passes for a truncated JPEG
    assert len(ds) == 3
    with pytest.warns(UserWarning, match=r"b\.jpg.*next image"):
        x = ds[1]
    assert torch.equal(x, ds[2])  # the next readable image stands in
    strict = ImageFolderDataset(tmp_path, SIZE, on_error="raise")
    with pytest.raises(DatasetError, match=r"b\.jpg"):
        strict[1]
    with pytest.warns(UserWarning, match=r"b\.jpg"):
        full = ImageFolderDataset(tmp_path, SIZE, validate="full")
    assert full.names == ["a.png", "c.png"]


def test_hflip_is_seeded_and_flips_about_half(mixed_folder):
    root, _ = mixed_folder
    with pytest.warns(UserWarning):
        plain = ImageFolderDataset(root, SIZE)
        a = ImageFolderDataset(root, SIZE, hflip=True, seed=3)
        b = ImageFolderDataset(root, SIZE, hflip=True, seed=3)
    flips = []
    for epoch in range(8):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in range(len(a)):
            x, y, ref = a[i], b[i], plain[i]
            assert torch.equal(x, y)
            flipped = torch.equal(x, ref.flip(-1)) and not torch.equal(x, ref)
            assert flipped or torch.equal(x, ref)
            flips.append(flipped)
    assert 0.3 < np.mean(flips) < 0.7
    assert a.should_flip(0) == a.should_flip(0)  # pure function of (seed, epoch, index)
