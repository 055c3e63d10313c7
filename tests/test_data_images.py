"""images.py: one conversion for every PIL mode, and a clear error for every kind of bad file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medauc.data.images import load_image, read_image, resize, save_png
from medauc.errors import DataError


def _gray(h: int = 24, w: int = 32) -> np.ndarray:
    """uint8 (h, w) gradient with every value distinct enough to check the scaling."""
    y, x = np.mgrid[0:h, 0:w]
    return ((x * 7 + y * 3) % 256).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_l_mode_lossless_formats_give_value_over_255(tmp_path, fmt):
    g = _gray()
    p = tmp_path / f"a.{fmt.lower()}"
    Image.fromarray(g).save(p, format=fmt)
    img = load_image(p)
    assert img.dtype == np.float32 and img.shape == g.shape
    np.testing.assert_allclose(img, g / 255.0, atol=1e-6)


def test_jpeg_is_close_to_the_original(tmp_path):
    g = np.kron(_gray(6, 8), np.ones((4, 4), np.uint8))  # blocky: survives JPEG well
    Image.fromarray(g).save(tmp_path / "a.jpg", quality=95)
    img, info = read_image(tmp_path / "a.jpg")
    assert info.format == "JPEG" and info.mode == "L"
    assert np.abs(img - g / 255.0).mean() < 0.02


def test_rgb_is_luminance_and_gray_rgb_equals_l(tmp_path):
    g = _gray()
    Image.fromarray(np.stack([g, g, g], -1)).save(tmp_path / "grey_rgb.png")
    np.testing.assert_allclose(load_image(tmp_path / "grey_rgb.png"), g / 255.0, atol=1e-6)
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "red.png")
    np.testing.assert_allclose(load_image(tmp_path / "red.png"), 0.299, atol=1e-6)


def test_rgba_and_la_are_composited_on_black(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 0
    rgba[0, 0, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img[0, 0] == pytest.approx(200 / 255, abs=1e-5)
    assert img[1, 1] == 0.0  # transparent -> black, not the hidden colour
    la = Image.fromarray(np.full((4, 4), 255, np.uint8)).convert("LA")
    la.putalpha(Image.fromarray(np.full((4, 4), 51, np.uint8)))
    la.save(tmp_path / "la.png")
    np.testing.assert_allclose(load_image(tmp_path / "la.png"), 0.2, atol=1e-6)


def test_palette_mode(tmp_path):
    g = _gray()
    Image.fromarray(np.stack([g, g, g], -1)).convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(tmp_path / "p.png")
    info = read_image(tmp_path / "p.png")[1]
    assert info.mode == "P"
    assert np.abs(load_image(tmp_path / "p.png") - g / 255.0).max() < 0.05


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_sixteen_bit_scales_by_65535(tmp_path, ext):
    a = np.array([[0, 1000, 65535], [32768, 12, 40000]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / f"a.{ext}")
    img, info = read_image(tmp_path / f"a.{ext}")
    assert info.mode.startswith("I")
    np.testing.assert_allclose(img, a / 65535.0, atol=1e-6)


def test_int32_and_float_modes(tmp_path):
    a = np.array([[0, 300], [65535, 7]], dtype=np.int32)
    Image.fromarray(a, "I").save(tmp_path / "i.tif")
    np.testing.assert_allclose(load_image(tmp_path / "i.tif"), a / 65535.0, atol=1e-6)
    wide = np.array([[-5, 0], [95, 45]], dtype=np.int32)  # outside 16 bits: min-max
    Image.fromarray(wide, "I").save(tmp_path / "wide.tif")
    np.testing.assert_allclose(load_image(tmp_path / "wide.tif"), [[0, 0.05], [1, 0.5]], atol=1e-6)
    f = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    Image.fromarray(f).save(tmp_path / "f.tif")
    np.testing.assert_allclose(load_image(tmp_path / "f.tif"), f, atol=1e-7)
    f2 = np.array([[-1.0, 0.0], [1.0, 3.0]], dtype=np.float32)
    Image.fromarray(f2).save(tmp_path / "f2.tif")
    np.testing.assert_allclose(load_image(tmp_path / "f2.tif"), [[0, 0.25], [0.5, 1]], atol=1e-6)


def test_cmyk_and_bilevel(tmp_path):
    Image.new("CMYK", (5, 4), (0, 0, 0, 0)).save(tmp_path / "c.jpg", quality=100)  # no ink = white
    img, info = read_image(tmp_path / "c.jpg")
    assert info.mode == "CMYK" and img.shape == (4, 5)
    assert img.min() > 0.95
    one = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1")
    one.save(tmp_path / "one.png")
    img, info = read_image(tmp_path / "one.png")
    assert info.mode == "1"
    np.testing.assert_array_equal(img, [[0, 1], [1, 0]])


def _bad_files(d):
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("this is not an image")
    buf = d / "full.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buf)
    (d / "truncated.png").write_bytes(buf.read_bytes()[: buf.stat().st_size // 2])
    Image.fromarray(_gray()).save(d / "full.jpg")
    (d / "truncated.jpg").write_bytes((d / "full.jpg").read_bytes()[:200])
    return {
        "empty.png": "zero-byte",
        "text.png": "not an image",
        "truncated.png": "truncated or corrupt",
        "truncated.jpg": "truncated or corrupt",
        "missing.png": "cannot read",
    }


def test_every_bad_file_kind_raises_dataerror_naming_the_file(tmp_path):
    for name, reason in _bad_files(tmp_path).items():
        with pytest.raises(DataError) as exc:
            load_image(tmp_path / name)
        assert name in str(exc.value) and reason in str(exc.value)


def test_save_png_round_trip_and_resize(tmp_path):
    img = _gray() / 255.0
    out = save_png(tmp_path / "sub" / "x.png", img)
    assert out.exists() and not list((tmp_path / "sub").glob(".*tmp"))
    np.testing.assert_allclose(load_image(out), img, atol=1 / 510)
    small = resize(img.astype(np.float32), 12)
    assert small.shape == (12, 12) and small.dtype == np.float32
    assert 0.0 <= small.min() and small.max() <= 1.0
    assert resize(img, (6, 8)).shape == (6, 8)
    const = resize(np.full((40, 30), 0.3, np.float32), (10, 7))
    np.testing.assert_allclose(const, 0.3, atol=1e-6)
    with pytest.raises(ValueError):
        save_png(tmp_path / "bad.png", np.zeros((2, 2, 3)))
