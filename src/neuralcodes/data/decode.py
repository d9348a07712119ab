"""One image file's bytes -> uint8 (size, size, 3) RGB, or the project's own error naming the file.

Guarantees of :func:`decode_image`, whatever the bytes:

* it returns uint8 (size, size, 3) RGB pixels, or raises :class:`CorruptImageError` or
  :class:`ImageSizeError` (both ``ValueError``) whose message names the file and what to do; no other
  exception escapes (PIL's OSError, SyntaxError, struct.error, ... are wrapped), and no message shows
  an in-memory buffer instead of the file's name;
* every colour mode is mapped to 8-bit sRGB by a stated rule (see :func:`to_rgb`): 16-bit and 32-bit
  integer images are scaled, not clipped; float images are scaled; transparent pixels are composited
  over white; CMYK goes through its embedded ICC profile when it has one; the EXIF orientation is
  applied, so pixels are as a viewer shows them;
* images declaring more than ``max_pixels`` pixels are refused before their pixels are decoded
  (decompression bombs); Ghostscript-backed formats (EPS) are never opened.
"""

from __future__ import annotations

import functools
import io as _io
import os
import re
from typing import NamedTuple

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageOps, UnidentifiedImageError

SKIP_ADVICE = (
    "Use skip_corrupt=True (CLI: --skip-corrupt) to skip such files; they are counted and listed in the "
    "cache's meta.json and on Dataset.skipped."
)
# Transparent pixels are composited over this colour: white, as browsers and viewers show them on a page.
BACKGROUND = 255
# EPS is decoded by running Ghostscript on the file: never for bytes from an untrusted collection.
_EXCLUDED_FORMATS = frozenset({"EPS"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_BUFFER_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


class CorruptImageError(ValueError):
    """An image file could not be read or decoded.

    ``file`` is the file's path in its source; ``reason`` says what is wrong, without the advice.
    """

    def __init__(self, message: str, *, file: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.file = file
        self.reason = reason or message


class UnreadableFileError(CorruptImageError):
    """A file's bytes could not be read from its source (damaged zip member, dangling symlink,
    symlink loop, no permission, a name that is not UTF-8)."""


class ImageSizeError(ValueError):
    """An image is not of the size the source promises."""

    def __init__(self, message: str, *, file: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.file = file
        self.reason = reason or message


class DecodedImage(NamedTuple):
    pixels: np.ndarray  # uint8 (size, size, 3) RGB
    mode: str  # the file's PIL mode before conversion ("L" for grayscale, "P", "CMYK", "I;16", ...)
    original_size: tuple[int, int]  # (width, height) before any resize, after the EXIF orientation


def decode_image(
    data: bytes,
    name: str,
    size: int = 64,
    resize: bool = False,
    where: str = "",
    *,
    max_pixels: int | None = None,
) -> DecodedImage:
    """Decode one image to uint8 (size, size, 3) RGB, keeping note of its original mode and size.

    Every mode becomes RGB as :func:`to_rgb` describes. An image of another size is an
    :class:`ImageSizeError` unless ``resize`` (then it is stretched to size x size, bicubic).
    ``name`` (the file's path in its source) and ``where`` (the source) only serve error messages.
    ``max_pixels`` (default: PIL's ``Image.MAX_IMAGE_PIXELS``, about 89 million) bounds the declared
    width x height: larger images are refused before decoding, as a :class:`CorruptImageError`.
    """
    label = f"{display_name(name)}{where and ' in ' + where}"
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:
        with _open_image(data, name) as im:
            width, height = im.size
            if limit is not None and width * height > limit:
                raise ValueError(
                    f"it declares {width}x{height} = {width * height:,} pixels, more than the limit of "
                    f"{limit:,} (a decompression bomb?)"
                )
            im.load()
            mode = im.mode
            rgb = viewed_rgb(im)
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, struct.error, ... for bad bytes
        reason = _reason(exc, name)
        raise CorruptImageError(
            f"cannot decode image {label}: {reason}. {SKIP_ADVICE}",
            file=display_name(name),
            reason=reason,
        ) from None
    original_size = (rgb.shape[1], rgb.shape[0])
    if original_size != (size, size):
        if not resize:
            reason = f"it is {original_size[0]}x{original_size[1]} but this source's images must be {size}x{size}"
            raise ImageSizeError(
                f"image {label} is {original_size[0]}x{original_size[1]} but this source's images must be "
                f"{size}x{size}. A Tiny ImageNet archive holds only 64x64 images; for other images use a "
                f"folder with one sub-folder per class, which is resized. {SKIP_ADVICE}",
                file=display_name(name),
                reason=reason,
            )
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC))
    return DecodedImage(np.ascontiguousarray(rgb, dtype=np.uint8), mode, original_size)


def viewed_rgb(im: Image.Image) -> np.ndarray:
    """uint8 (H, W, 3) sRGB pixels of a PIL image as a viewer shows it: EXIF orientation applied, then
    :func:`to_rgb`. Every path that turns an image into pixels (files, query images, thumbnails) goes
    through here, so the same picture gives the same pixels whichever way it arrives."""
    im.load()  # a PNG's eXIf chunk may follow its pixels: read before the orientation is looked up
    return to_rgb(_oriented(im))


def to_rgb(im: Image.Image) -> np.ndarray:
    """uint8 (H, W, 3) sRGB pixels of a PIL image of any mode.

    * RGB as is; 1, L, P (opaque), YCbCr, HSV, LAB, RGBX through PIL's conversion.
    * 16-bit grayscale (I;16, I;16L, I;16B, I;16N) and 32-bit integer (I): ``round(v * 255 / 65535)``,
      the 16-bit range mapped onto 8 bits (PNG and TIFF store 16-bit samples this way); an ``I`` image
      with values outside 0..65535 is stretched linearly from its own minimum..maximum instead.
    * F (float): values within [0, 1] are scaled by 255; otherwise stretched linearly from the image's
      own minimum..maximum; NaN and infinities become 0.
    * Transparency (RGBA, LA, PA, premultiplied modes, a palette or colour with a transparent entry):
      composited over white, ``round(c * a / 255 + 255 * (1 - a / 255))``.
    * CMYK: through its embedded ICC profile to sRGB (perceptual intent) when it has a usable one; else
      ``R = (255 - C) * (255 - K) / 255`` (likewise G from M, B from Y), rounded.
    """
    mode = im.mode
    if mode in _ALPHA_MODES or _has_transparency(im):
        rgba = np.asarray(
            (im.convert("LA") if mode == "La" else im).convert("RGBA"), dtype=np.uint16
        )
        alpha = rgba[..., 3:]
        composite = (rgba[..., :3] * alpha + BACKGROUND * (255 - alpha) + 127) // 255
        return composite.astype(np.uint8)
    if mode == "RGB":
        return np.asarray(im)
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        return _gray(_scale_integer(np.asarray(im)))
    if mode == "F":
        return _gray(_scale_float(np.asarray(im, dtype=np.float64)))
    if mode == "CMYK":
        return _cmyk_to_rgb(im)
    return np.asarray(im.convert("RGB"))


def display_name(name: str) -> str:
    """``name`` printable and encodable as UTF-8 (bytes of a non-UTF-8 file name shown as \\xNN)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@functools.cache
def decodable_extensions() -> frozenset[str]:
    """Lower-case file extensions (".jpeg", ...) of the formats :func:`decode_image` opens."""
    Image.init()
    return frozenset(
        ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in _formats()
    )


def _has_transparency(im: Image.Image) -> bool:
    if im.mode not in ("P", "L", "1", "RGB"):
        return False
    return "transparency" in im.info or (
        im.mode == "P" and im.palette is not None and im.palette.mode == "RGBA"
    )


def _scale_integer(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        return _stretch(values.astype(np.float64))
    return ((values * 255 + 32767) // 65535).astype(np.uint8)


def _scale_float(values: np.ndarray) -> np.ndarray:
    values = np.where(np.isfinite(values), values, 0.0)
    if values.size and (values.min() < 0 or values.max() > 1):
        return _stretch(values)
    return np.rint(values * 255).astype(np.uint8)


def _stretch(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255 / (high - low))).astype(np.uint8)


def _gray(channel: np.ndarray) -> np.ndarray:
    return np.repeat(channel[..., None], 3, axis=2)


def _cmyk_to_rgb(im: Image.Image) -> np.ndarray:
    icc = im.info.get("icc_profile")
    transform = _cmyk_transform(bytes(icc)) if icc else None
    if transform is not None:
        try:
            return np.asarray(ImageCms.applyTransform(im, transform))
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a profile lcms accepted but cannot apply: the plain conversion below
    cmyk = np.asarray(im, dtype=np.uint16)
    white = 255 - cmyk[..., 3:]
    return (((255 - cmyk[..., :3]) * white + 127) // 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _cmyk_transform(icc: bytes) -> ImageCms.ImageCmsTransform | None:
    # Building a transform costs milliseconds; a collection's CMYK files usually share one profile.
    # A damaged or non-CMYK profile is ignored (None): the image is still usable without it.
    try:
        profile = ImageCms.ImageCmsProfile(_io.BytesIO(icc))
        return ImageCms.buildTransform(
            profile, ImageCms.createProfile("sRGB"), "CMYK", "RGB", ImageCms.Intent.PERCEPTUAL
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _oriented(im: Image.Image) -> Image.Image:
    if (
        "exif" not in im.info and im.format != "TIFF"
    ):  # TIFF keeps its orientation among its own tags
        return im  # most files: skip parsing (a tenth of the decode time of a small JPEG)
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block must not cost the image its pixels
        return im
    return ImageOps.exif_transpose(im) if orientation in range(2, 9) else im


def _reason(exc: Exception, name: str) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image in a format PIL reads (unknown format, or a damaged header)"
    text = _BUFFER_REPR.sub(display_name(name), str(exc)) or type(exc).__name__
    return " ".join(text.split()).rstrip(".")  # one line: PIL's messages sometimes span several


@functools.cache
def _formats() -> tuple[str, ...]:
    Image.init()
    return tuple(fmt for fmt in Image.OPEN if fmt not in _EXCLUDED_FORMATS)


def _open_image(data: bytes, name: str) -> Image.Image:
    # Trying the format the extension names first skips PIL's probing of other formats (~25% of
    # the decode time of a small JPEG); a misnamed file falls back to full probing.
    buffer = _io.BytesIO(data)
    hint = Image.registered_extensions().get(os.path.splitext(name)[1].lower())
    if hint is not None and hint in _formats():
        try:
            return Image.open(buffer, formats=[hint])
        except UnidentifiedImageError:
            buffer.seek(0)
    return Image.open(buffer, formats=_formats())
