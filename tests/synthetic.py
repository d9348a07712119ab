"""Synthetic images and archives for tests (imported by name: tests/ is on sys.path as the rootdir of the conftest)."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str) -> bytes:
    """An image's file bytes in ``fmt`` (PNG, JPEG, ...)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def noise(size=(64, 64), seed=0) -> Image.Image:
    """A seeded RGB image of pixel noise."""
    return Image.fromarray(
        np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    )


def random_jpeg(
    rng: np.random.Generator, size: tuple[int, int] = (64, 64), mode: str = "RGB"
) -> bytes:
    """A JPEG of random smooth-ish content (blocks of noise survive JPEG better than pixel noise)."""
    blocks = rng.integers(0, 256, size=(size[1] // 8 or 1, size[0] // 8 or 1, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize(size, Image.Resampling.NEAREST).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def tiny_imagenet_members(
    wnids: list[str],
    train_per_class: int = 3,
    val_per_class: int = 2,
    top: str = "tiny-imagenet-200",
    grayscale: tuple[str, ...] = (),
    corrupt: tuple[str, ...] = (),
    seed: int = 0,
) -> dict[str, bytes]:
    """Members (path -> bytes) of a small archive in the Tiny ImageNet layout.

    ``wnids`` is written to wnids.txt in the given (possibly unsorted) order; ``grayscale`` /
    ``corrupt`` name files (e.g. "n001_2.JPEG", "val_3.JPEG") to write as mode L / as garbage.
    """
    rng = np.random.default_rng(seed)
    prefix = f"{top}/" if top else ""
    members = {
        f"{prefix}wnids.txt": "".join(w + "\n" for w in wnids).encode(),
        f"{prefix}words.txt": "".join(f"{w}\tname of {w}, synonym\n" for w in wnids).encode()
        + b"n99999999\tnot in this archive\n",
    }

    def image(filename: str) -> bytes:
        if filename in corrupt:
            return b"\xff\xd8 this is not a JPEG"
        return random_jpeg(rng, mode="L" if filename in grayscale else "RGB")

    for wnid in wnids:
        members[f"{prefix}train/{wnid}/{wnid}_boxes.txt"] = b"ignored\n"
        for i in range(train_per_class):
            members[f"{prefix}train/{wnid}/images/{wnid}_{i}.JPEG"] = image(f"{wnid}_{i}.JPEG")
    lines = []
    for i in range(val_per_class * len(wnids)):
        wnid = wnids[(i * 7) % len(wnids)]  # val classes interleaved, as in the real file
        members[f"{prefix}val/images/val_{i}.JPEG"] = image(f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63\n")
    members[f"{prefix}val/val_annotations.txt"] = "".join(lines).encode()
    return members


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def write_folder(root: Path, members: dict[str, bytes]) -> Path:
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def png_header(width: int, height: int) -> bytes:
    """A valid PNG declaring width x height pixels but holding almost no data (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
