"""One image file's bytes -> uint8 (size, size, 3) RGB, or the project's own error naming the file."""
from __future__ import annotations

import io as _io
import os
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError


class CorruptImageError(ValueError):
    """An image could not be decoded."""


class ImageSizeError(ValueError):
    """An image is not of the size the source promises."""


class DecodedImage(NamedTuple):
    pixels: np.ndarray  # uint8 (size, size, 3) RGB
    mode: str  # the file's PIL mode before conversion ("L" for grayscale, "P", "CMYK", ...)
    original_size: tuple[int, int]  # (width, height) before any resize


def decode_image(data: bytes, name: str, size: int = 64, resize: bool = False, where: str = "") -> DecodedImage:
    """Decode one image to uint8 (size, size, 3) RGB, keeping note of its original mode and size.

    Grayscale, palette, RGBA (alpha dropped), CMYK etc. become RGB. An image of another size is an
    :class:`ImageSizeError` unless ``resize`` (then it is stretched to size x size, bicubic).
    ``name`` (the file's path in its source) and ``where`` (the source) only serve error messages.
    """
    try:
        with _open_image(data, name) as im:
            im.load()
            mode = im.mode
            rgb = im.convert("RGB") if mode != "RGB" else im.copy()
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... for bad bytes
        raise CorruptImageError(
            f"cannot decode image {name}{where and ' in ' + where}: {exc}. Use skip_corrupt=True "
            f"(CLI: --skip-corrupt) to skip unreadable images; they are counted and listed in the cache's meta.json."
        ) from None
    original_size = rgb.size
    if original_size != (size, size):
        if not resize:
            raise ImageSizeError(
                f"image {name}{where and ' in ' + where} is {rgb.size[0]}x{rgb.size[1]} but this source's "
                f"images must be {size}x{size}. "
                f"A Tiny ImageNet archive holds only 64x64 images; for other images use a folder with one "
                f"sub-folder per class, which is resized."
            )
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return DecodedImage(np.asarray(rgb, dtype=np.uint8), mode, original_size)


def _open_image(data: bytes, name: str) -> Image.Image:
    # Trying the format the extension names first skips PIL's probing of other formats (~25% of
    # the decode time of a small JPEG); a misnamed file falls back to full probing.
    buffer = _io.BytesIO(data)
    hint = Image.registered_extensions().get(os.path.splitext(name)[1].lower())
    if hint is not None:
        try:
            return Image.open(buffer, formats=[hint])
        except UnidentifiedImageError:
            buffer.seek(0)
    return Image.open(buffer)
