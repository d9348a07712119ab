"""Decoding one image file: every mode to RGB, sizes, corrupt bytes named."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from neuralcodes.data.decode import CorruptImageError, ImageSizeError, decode_image


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def noise(size=(64, 64), seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "mode, fmt",
    [("RGB", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"), ("1", "BMP")],
)
def test_every_mode_becomes_rgb_like_pil(mode, fmt) -> None:
    image = noise().quantize(32) if mode == "P" else noise().convert(mode)
    data = encode(image, fmt)
    decoded = decode_image(data, f"x.{fmt.lower()}")
    assert decoded.pixels.dtype == np.uint8 and decoded.pixels.shape == (64, 64, 3)
    assert decoded.mode == Image.open(io.BytesIO(data)).mode
    np.testing.assert_array_equal(decoded.pixels, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_grayscale_pixels_repeat_the_gray_value() -> None:
    gray = noise().convert("L")
    decoded = decode_image(encode(gray, "PNG"), "g.png")
    for channel in range(3):
        np.testing.assert_array_equal(decoded.pixels[..., channel], np.asarray(gray))


def test_wrong_size_is_an_error_naming_the_file_unless_resizing() -> None:
    data = encode(noise((80, 60)), "PNG")
    with pytest.raises(ImageSizeError, match=r"image a/b\.png in src\.zip is 80x60 but .* must be 64x64"):
        decode_image(data, "a/b.png", where="src.zip")
    decoded = decode_image(data, "a/b.png", size=32, resize=True)
    assert decoded.original_size == (80, 60)
    expected = noise((80, 60)).resize((32, 32), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(decoded.pixels, np.asarray(expected))


def test_corrupt_bytes_name_the_file_and_the_way_out() -> None:
    truncated = encode(noise(), "JPEG")[:300]
    for data in (b"garbage", truncated):
        with pytest.raises(CorruptImageError, match=r"cannot decode image t/x\.JPEG in arch\.zip: .*skip_corrupt=True"):
            decode_image(data, "t/x.JPEG", where="arch.zip")


def test_misnamed_file_still_decodes() -> None:
    data = encode(noise(), "PNG")
    np.testing.assert_array_equal(decode_image(data, "really_a_png.JPEG").pixels, np.asarray(noise()))


