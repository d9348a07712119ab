"""Decoding one image file: every mode to RGB (checked against hand-made arrays), sizes, bad bytes named."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from synthetic import encode, noise  # tests/synthetic.py

from neuralcodes.data.decode import CorruptImageError, ImageSizeError, decode_image
from neuralcodes.data.layouts import is_image_name


@pytest.mark.parametrize(
    "mode, fmt",
    [
        ("RGB", "PNG"),
        ("L", "PNG"),
        ("LA", "PNG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("CMYK", "JPEG"),
        ("1", "BMP"),
    ],
)
def test_opaque_images_of_8_bit_modes_become_rgb_like_pil(mode, fmt) -> None:
    image = noise().quantize(32) if mode == "P" else noise().convert(mode)
    data = encode(image, fmt)
    decoded = decode_image(data, f"x.{fmt.lower()}")
    assert decoded.pixels.dtype == np.uint8 and decoded.pixels.shape == (64, 64, 3)
    assert decoded.mode == Image.open(io.BytesIO(data)).mode
    np.testing.assert_array_equal(
        decoded.pixels, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    )


def test_grayscale_pixels_repeat_the_gray_value() -> None:
    gray = noise().convert("L")
    decoded = decode_image(encode(gray, "PNG"), "g.png")
    for channel in range(3):
        np.testing.assert_array_equal(decoded.pixels[..., channel], np.asarray(gray))


def test_wrong_size_is_an_error_naming_the_file_unless_resizing() -> None:
    data = encode(noise((80, 60)), "PNG")
    with pytest.raises(
        ImageSizeError, match=r"image a/b\.png in src\.zip is 80x60 but .* must be 64x64"
    ):
        decode_image(data, "a/b.png", where="src.zip")
    decoded = decode_image(data, "a/b.png", size=32, resize=True)
    assert decoded.original_size == (80, 60)
    expected = noise((80, 60)).resize((32, 32), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(decoded.pixels, np.asarray(expected))


def test_corrupt_bytes_name_the_file_and_the_way_out() -> None:
    truncated = encode(noise(), "JPEG")[:300]
    for data in (b"garbage", truncated):
        with pytest.raises(
            CorruptImageError,
            match=r"cannot decode image t/x\.JPEG in arch\.zip: .*skip_corrupt=True",
        ):
            decode_image(data, "t/x.JPEG", where="arch.zip")


def test_misnamed_file_still_decodes() -> None:
    data = encode(noise(), "PNG")
    np.testing.assert_array_equal(
        decode_image(data, "really_a_png.JPEG").pixels, np.asarray(noise())
    )


def decode_array(image: Image.Image, fmt: str, **save) -> np.ndarray:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    width, height = image.size
    assert width == height, "these tests use square images: no resizing"
    return decode_image(buffer.getvalue(), f"x.{fmt.lower()}", size=width).pixels


def gray_rgb(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.uint8)
    return np.stack([values] * 3, axis=-1)


# --- modes beyond 8 bits: scaled by hand-computed rules ------------------------------------------


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    # round(v * 255 / 65535) by hand: PIL's own conversion clips every value above 255 to white.
    values = np.array([[0, 257, 1000], [30000, 65279, 65535], [128, 129, 12850]], dtype=np.uint16)
    expected = gray_rgb([[0, 1, 4], [117, 254, 255], [0, 1, 50]])
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    for fmt in ("PNG", "TIFF"):
        np.testing.assert_array_equal(decode_array(image, fmt), expected)
    # The same samples stored as 32-bit integers (mode I, as older Pillows open 16-bit PNGs).
    np.testing.assert_array_equal(
        decode_array(Image.fromarray(values.astype(np.int32)), "TIFF"), expected
    )


def test_32_bit_integers_outside_the_16_bit_range_are_stretched() -> None:
    values = np.array([[-1000, 0], [2000, 3000]], dtype=np.int32)  # (v + 1000) * 255 / 4000
    np.testing.assert_array_equal(
        decode_array(Image.fromarray(values), "TIFF"), gray_rgb([[0, 64], [191, 255]])
    )


def test_float_images_are_scaled() -> None:
    unit = np.array(
        [[np.nan, 0.2], [0.6, 1.0]], dtype=np.float32
    )  # within [0, 1]: times 255; NaN -> 0
    np.testing.assert_array_equal(
        decode_array(Image.fromarray(unit), "TIFF"), gray_rgb([[0, 51], [153, 255]])
    )
    wide = np.array([[-1.0, 0.0], [2.0, 3.0]], dtype=np.float32)  # stretched: (v + 1) * 255 / 4
    np.testing.assert_array_equal(
        decode_array(Image.fromarray(wide), "TIFF"), gray_rgb([[0, 64], [191, 255]])
    )


# --- transparency: composited over white ---------------------------------------------------------


def test_rgba_is_composited_over_white() -> None:
    rgba = np.array(
        [[[200, 100, 0, 128], [10, 20, 30, 255]], [[50, 60, 70, 0], [0, 0, 0, 64]]], dtype=np.uint8
    )
    # c * a / 255 + 255 * (1 - a / 255), rounded: 200 -> 100.39 + 127 = 227, ...
    expected = np.array(
        [[[227, 177, 127], [10, 20, 30]], [[255, 255, 255], [191, 191, 191]]], dtype=np.uint8
    )
    np.testing.assert_array_equal(decode_array(Image.fromarray(rgba, mode="RGBA"), "PNG"), expected)


def test_gray_with_alpha_is_composited_over_white() -> None:
    la = np.array([[[100, 128], [100, 0]], [[100, 255], [0, 191]]], dtype=np.uint8)
    expected = gray_rgb(
        [[177, 255], [100, 64]]
    )  # 100 * 128/255 + 127 = 177.2; 0 + 255 * 64/255 = 64
    np.testing.assert_array_equal(decode_array(Image.fromarray(la, mode="LA"), "PNG"), expected)


def test_transparent_colour_of_an_rgb_png_becomes_white() -> None:
    rgb = np.array([[[0, 255, 0], [1, 255, 0]], [[9, 9, 9], [0, 255, 0]]], dtype=np.uint8)
    expected = np.array(
        [[[255, 255, 255], [1, 255, 0]], [[9, 9, 9], [255, 255, 255]]], dtype=np.uint8
    )
    np.testing.assert_array_equal(
        decode_array(Image.fromarray(rgb), "PNG", transparency=(0, 255, 0)), expected
    )


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_transparent_palette_entry_becomes_white(fmt) -> None:
    image = Image.fromarray(np.array([[0, 1], [1, 2]], dtype=np.uint8), mode="P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    expected = np.array(
        [[[255, 0, 0], [255, 255, 255]], [[255, 255, 255], [0, 0, 255]]], dtype=np.uint8
    )
    np.testing.assert_array_equal(decode_array(image, fmt, transparency=1), expected)


# --- CMYK: the embedded ICC profile when there is one ---------------------------------------------


def _s15(x: float) -> bytes:
    return struct.pack(">i", round(x * 65536))


def cmyk_profile_where_cyan_alone_darkens() -> bytes:
    """A minimal ICC v2 CMYK printer profile (one mft2 A2B0 table to Lab): lightness 100 at C=0 down
    to 0 at C=255, neutral; M, Y and K are ignored. Under it (0, 0, 0, 255) is white, not black."""
    clut = b"".join(
        struct.pack(">3H", 0xFF00 if c == 0 else 0, 0x8000, 0x8000)
        for c in (0, 1)
        for _ in range(8)
    )
    identity = b"".join(_s15(float(i == j)) for i in range(3) for j in range(3))
    ramp = struct.pack(">2H", 0, 0xFFFF)
    mft2 = (
        b"mft2"
        + bytes(4)
        + bytes([4, 3, 2, 0])
        + identity
        + struct.pack(">2H", 2, 2)
        + ramp * 4
        + clut
        + ramp * 3
    )
    d50 = _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    tags = [(b"A2B0", mft2), (b"wtpt", b"XYZ " + bytes(4) + d50)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags:
        data += bytes(-len(data) % 4)
        table += signature + struct.pack(">2I", offset + len(body), len(data))
        body += data
    header = (
        struct.pack(">I", offset + len(body))
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + b"prtrCMYKLab "
        + bytes(12)
        + b"acsp"
        + bytes(24)
        + bytes(4)
        + d50
        + bytes(48)
    )
    assert len(header) == 128
    return header + table + body


def srgb_of_lightness(lightness: float) -> int:
    """8-bit sRGB of the neutral CIE L* (the CIE and sRGB formulas, written out)."""
    y = ((lightness + 16) / 116) ** 3 if lightness > 8 else lightness / 903.3
    v = 12.92 * y if y <= 0.0031308 else 1.055 * y ** (1 / 2.4) - 0.055
    return round(255 * v)


CMYK_PIXELS = np.array(
    [[[0, 0, 0, 255], [255, 0, 0, 0]], [[128, 0, 0, 0], [100, 0, 0, 50]]], dtype=np.uint8
)


def test_cmyk_without_a_profile_uses_the_plain_formula() -> None:
    # (255 - C) * (255 - K) / 255 per channel: (100, 0, 0, 50) -> 155 * 205 / 255 = 124.6 -> 125
    expected = np.array(
        [[[0, 0, 0], [0, 255, 255]], [[127, 255, 255], [125, 205, 205]]], dtype=np.uint8
    )
    np.testing.assert_array_equal(
        decode_array(Image.fromarray(CMYK_PIXELS, mode="CMYK"), "TIFF"), expected
    )


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk_goes_through_its_icc_profile(fmt) -> None:
    image = Image.fromarray(CMYK_PIXELS, mode="CMYK")
    pixels = decode_array(
        image, fmt, icc_profile=cmyk_profile_where_cyan_alone_darkens(), quality=100
    )
    mid = srgb_of_lightness(100 * (1 - 128 / 255))
    expected = gray_rgb([[255, 0], [mid, srgb_of_lightness(100 * (1 - 100 / 255))]])
    tolerance = 1 if fmt == "TIFF" else 4  # JPEG is lossy even at quality 100
    np.testing.assert_allclose(pixels.astype(int), expected.astype(int), atol=tolerance)


def test_damaged_icc_profile_falls_back_to_the_plain_formula() -> None:
    image = Image.fromarray(CMYK_PIXELS, mode="CMYK")
    plain = decode_array(image, "TIFF")
    np.testing.assert_array_equal(decode_array(image, "TIFF", icc_profile=b"\0" * 200), plain)


# --- EXIF orientation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "orientation, expected",
    [
        (1, [[1, 2, 3], [4, 5, 6], [7, 8, 9]]),
        (3, [[9, 8, 7], [6, 5, 4], [3, 2, 1]]),  # rotated 180 degrees
        (6, [[7, 4, 1], [8, 5, 2], [9, 6, 3]]),  # stored rotated: shown turned 90 degrees clockwise
        (2, [[3, 2, 1], [6, 5, 4], [9, 8, 7]]),  # mirrored
    ],
)
def test_exif_orientation_is_applied(orientation, expected) -> None:
    image = Image.fromarray(np.arange(1, 10, dtype=np.uint8).reshape(3, 3) * 20).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    np.testing.assert_array_equal(
        decode_array(image, "PNG", exif=exif), gray_rgb(np.array(expected) * 20)
    )
    # TIFF keeps the orientation among its own tags, not in an EXIF block.
    np.testing.assert_array_equal(
        decode_array(image, "TIFF", tiffinfo={0x0112: orientation}),
        gray_rgb(np.array(expected) * 20),
    )


# --- errors name the file -----------------------------------------------------------------------


def test_unidentifiable_bytes_name_the_file_not_a_buffer() -> None:
    with pytest.raises(CorruptImageError) as caught:
        decode_image(b"\x00\x01garbage" * 10, "cls/a.png", where="photos")
    message = str(caught.value)
    assert "cls/a.png in photos" in message and "BytesIO" not in message and "\n" not in message
    assert caught.value.file == "cls/a.png" and "skip_corrupt" not in caught.value.reason


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring width x height RGB pixels but holding only a few rows of them."""
    rows = zlib.compress(bytes(min(height, 4) * (1 + 3 * min(width, 1000))))
    ihdr = struct.pack(">2I5B", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", rows)
        + png_chunk(b"IEND", b"")
    )


def test_huge_declared_size_is_refused_before_decoding() -> None:
    with pytest.raises(
        CorruptImageError, match=r"bomb\.png: .*400,?000,?000 pixels.*decompression bomb"
    ):
        decode_image(png_header_only(20000, 20000), "bomb.png")
    with pytest.raises(CorruptImageError, match=r"5,000 pixels, more than the limit of 4,096"):
        decode_image(png_header_only(100, 50), "b.png", max_pixels=4096)


def test_eps_is_never_opened() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n"
    with pytest.raises(CorruptImageError, match="a.eps"):
        decode_image(eps, "a.eps")
    assert not is_image_name("a.eps") and is_image_name("a.JPEG") and is_image_name("b.tif")
