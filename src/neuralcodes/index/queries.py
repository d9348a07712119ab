"""What a search starts from: a query image prepared exactly as the collection's images were, or codes.

A query is a file path, image bytes, a PIL image or a uint8 (H, W, 3) array; one that does not decode is
a :class:`BadQueryImage`, refused before the model loads. A float array is taken as codes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from neuralcodes.data.decode import viewed_rgb
from neuralcodes.index.collection import Skipped, decode_bytes

Query = Union[str, os.PathLike, bytes, np.ndarray, Image.Image]


class BadQueryImage(ValueError):
    """A query image that cannot be used: its file or bytes do not decode. ``kind`` sorts it as the skipped
    files of a build are sorted ("unreadable", "too large", "empty"), ``reason`` says why in words."""

    def __init__(self, message: str, kind: str, reason: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.reason = reason


def query_codes(queries: np.ndarray, dim: int) -> np.ndarray:
    """A float array taken as codes: (Q, dim) float32, from (Q, dim) or (dim,)."""
    codes = queries[None] if queries.ndim == 1 else queries
    if codes.ndim != 2 or codes.shape[1] != dim:
        hint = (
            "; an image array must be uint8 (H, W, 3) RGB" if queries.ndim > 2 else ""
        )  # a float image
        raise ValueError(
            f"a float array is taken as codes, which must have {dim} dimensions "
            f"(this index's), got shape {queries.shape}{hint}"
        )
    return np.ascontiguousarray(codes, dtype=np.float32)


def query_pixels(query: Query, size: int) -> np.ndarray:
    """uint8 (size, size, 3): a query image prepared exactly as the collection's images were;
    :class:`BadQueryImage` when it does not decode."""
    if isinstance(query, (str, os.PathLike)):
        path = Path(query)
        try:
            return decode_bytes(path.read_bytes(), str(path), size).pixels
        except OSError as exc:
            raise FileNotFoundError(f"query image {path}: {exc.strerror or exc}") from None
        except Skipped as skipped:
            raise BadQueryImage(
                f"query image {path} cannot be used: {skipped.reason}",
                skipped.kind,
                skipped.reason,
            ) from None
    if isinstance(query, bytes):
        try:
            return decode_bytes(query, "query", size).pixels
        except Skipped as skipped:
            raise BadQueryImage(
                f"the query image cannot be used: {skipped.reason}",
                skipped.kind,
                skipped.reason,
            ) from None
    if isinstance(query, np.ndarray):
        if query.dtype != np.uint8 or query.ndim != 3 or query.shape[2] != 3:
            raise ValueError(
                f"an image array must be uint8 (H, W, 3) RGB, got {query.dtype} {query.shape}"
            )
        query = Image.fromarray(query)
    if isinstance(query, Image.Image):
        return _image_pixels(query, size)
    raise TypeError(
        f"cannot search with a {type(query).__name__}; give a path, bytes, a PIL image or an array"
    )


def _image_pixels(image: Image.Image, size: int) -> np.ndarray:
    # The same conversion as the collection's files (EXIF orientation, transparency over white,
    # 16-bit scaling, CMYK profile): Image.open(f) must find what the path f finds.
    try:
        rgb = Image.fromarray(viewed_rgb(image))
    except (
        OSError,
        ValueError,
        SyntaxError,
    ) as exc:  # a lazily loaded image whose file is damaged
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise BadQueryImage(
            f"the query image cannot be used: {reason}", "unreadable", reason
        ) from None
    if rgb.size != (size, size):  # the same stretch as decode_image applies to files
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)
