"""Fuzzing the decode path the cache uses (decode_pool.decode_file): over 2,000 generated inputs.

Each input either decodes to uint8 (64, 64, 3) pixels or raises the project's own error
(CorruptImageError / ImageSizeError) naming the file, on one line; nothing else escapes, and no
input may take longer than a hard limit. Inputs: random bytes, random bytes behind real format
signatures, truncated and bit-flipped real JPEGs (the embedded sample) and their PNG/GIF/BMP/TIFF/WebP
re-encodings, valid images of odd modes and sizes (which must decode), and headers declaring huge
sizes (decompression bombs).
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import signal
import struct
import zipfile
import zlib
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from neuralcodes.data.decode import CorruptImageError, ImageSizeError, display_name
from neuralcodes.data.decode_pool import decode_file
from neuralcodes.data.sources import SAMPLE_ZIP

SIZE = 64
PER_INPUT_LIMIT_S = 10  # hard limit: far above any real decode of these inputs (milliseconds)
WHERE = "fuzz-source.zip"
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=5),
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::PIL.Image.DecompressionBombWarning"
)


class BytesSource:
    """A source holding one file's bytes under any name."""

    name = "fuzz"
    location = WHERE

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, member: str) -> bytes:
        return self.data


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Interrupt a decode stuck in Python code; faulthandler (below) ends one stuck in C."""

    def interrupt(signum, frame):
        raise Hang(f"decoding took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True, scope="module")
def _kill_if_stuck_in_c():
    faulthandler.dump_traceback_later(
        10 * 60, exit=True
    )  # a whole-module bound: CI then fails, not hangs
    yield
    faulthandler.cancel_dump_traceback_later()


def check(data: bytes, name: str, resize: bool, must_decode: bool = False) -> None:
    """The property: pixels of the promised shape, or our error naming the file."""
    try:
        with time_limit(PER_INPUT_LIMIT_S):
            decoded = decode_file(BytesSource(data), name, SIZE, resize)
    except (CorruptImageError, ImageSizeError) as exc:
        message = str(exc)
        shown = display_name(name)
        assert shown in message or repr(shown) in message, message
        assert WHERE in message and "BytesIO" not in message and "\n" not in message, message
        assert exc.file == shown and exc.reason
        assert not (resize and isinstance(exc, ImageSizeError)), message
        assert not must_decode or (isinstance(exc, ImageSizeError) and not resize), message
        return
    assert isinstance(decoded.pixels, np.ndarray)
    assert decoded.pixels.dtype == np.uint8 and decoded.pixels.shape == (SIZE, SIZE, 3)
    assert resize or decoded.original_size == (SIZE, SIZE)


# --- the corpus: real files of the embedded sample, re-encoded in several formats -----------------


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _corpus() -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(SAMPLE_ZIP) as z:
        jpegs = [n for n in sorted(z.namelist()) if n.endswith(".JPEG")][::300][:10]
        files = [(n, z.read(n)) for n in jpegs]
    for i, (_, data) in enumerate(files[:4]):
        rgb = Image.open(io.BytesIO(data)).convert("RGB")
        files += [
            (f"re/{i}.png", _encode(rgb, "PNG")),
            (
                f"re/{i}_gray16.png",
                _encode(Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257), "PNG"),
            ),
            (f"re/{i}.gif", _encode(rgb.quantize(64), "GIF", transparency=0)),
            (f"re/{i}.bmp", _encode(rgb, "BMP")),
            (f"re/{i}.tif", _encode(rgb.convert("CMYK"), "TIFF", compression="tiff_lzw")),
            (f"re/{i}.webp", _encode(rgb.convert("RGBA"), "WEBP", quality=80)),
        ]
    return files


CORPUS = _corpus()
SIGNATURES = [
    b"\xff\xd8\xff\xe0",
    b"\xff\xd8\xff\xdb",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"GIF87a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"P6\n",
    b"P5\n",
    b"8BPS",
    b"\x00\x00\x01\x00",
    b"qoif",
    b"DDS ",
    b"\x01\xda",
    b"\x0a\x05\x01\x08",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n",
    b"%!PS-Adobe-3.0 EPSF-3.0\n",
]
NAMES = st.sampled_from(
    [
        "train/n01/images/n01_0.JPEG",
        "x.png",
        "x.gif",
        "x.bmp",
        "x.tif",
        "x.webp",
        "x.eps",
        "no_extension",
        "class/ü photo.jpg",
    ]
)


@pytest.mark.parametrize("name", ["a\nb.png", "caf\udce9.jpg"])
def test_names_the_cache_cannot_store(name) -> None:
    with pytest.raises(CorruptImageError, match="rename the file"):
        decode_file(BytesSource(CORPUS[0][1]), name, SIZE, False)
    check(CORPUS[0][1], name, False)


@settings(FUZZ, max_examples=600)
@given(data=st.binary(max_size=3000), name=NAMES, resize=st.booleans())
def test_random_bytes(data, name, resize) -> None:
    check(data, name, resize)


@settings(FUZZ, max_examples=600)
@given(
    signature=st.sampled_from(SIGNATURES),
    tail=st.binary(max_size=2000),
    name=NAMES,
    resize=st.booleans(),
)
def test_random_bytes_behind_real_signatures(signature, tail, name, resize) -> None:
    check(signature + tail, name, resize)


@st.composite
def mutated_real_files(draw) -> tuple[str, bytes]:
    name, original = draw(st.sampled_from(CORPUS))
    rnd = draw(
        st.randoms(use_true_random=False)
    )  # uniform positions (hypothesis favours small integers)
    data = bytearray(original)
    truncate = draw(st.booleans())
    if truncate:
        data = data[: rnd.randrange(len(data))]
    for _ in range(draw(st.integers(0 if truncate else 1, 8))):
        if not data:
            break
        # Half the flips hit the headers, where a single bit changes sizes, modes and tables.
        end = min(len(data), 200) if rnd.random() < 0.5 else len(data)
        data[rnd.randrange(end)] ^= 1 << rnd.randrange(8)
    return name, bytes(data)


@settings(FUZZ, max_examples=1500)
@given(case=mutated_real_files(), resize=st.booleans())
def test_truncated_and_bit_flipped_real_images(case, resize) -> None:
    name, data = case
    check(data, name, resize)


# (mode, format, save options): every one a valid file, which must decode.
ODD = [
    ("1", "PNG", {}),
    ("1", "BMP", {}),
    ("L", "PNG", {}),
    ("LA", "PNG", {}),
    ("P", "PNG", {}),
    ("P", "GIF", {}),
    ("P", "PNG", {"transparency": 3}),
    ("RGBA", "PNG", {}),
    ("RGBA", "WEBP", {"lossless": True}),
    ("RGBA", "TGA", {}),
    ("RGB", "PPM", {}),
    ("RGB", "SGI", {}),
    ("L", "PCX", {}),
    ("RGB", "JPEG", {}),
    ("L", "JPEG", {}),
    ("CMYK", "JPEG", {}),
    ("CMYK", "TIFF", {}),
    ("I;16", "PNG", {}),
    ("I;16", "TIFF", {}),
    ("I", "TIFF", {}),
    ("F", "TIFF", {}),
    ("LAB", "TIFF", {}),
    ("YCbCr", "TIFF", {}),
    ("RGB", "TIFF", {}),
]


@settings(FUZZ, max_examples=400)
@given(
    kind=st.sampled_from(ODD),
    width=st.one_of(st.just(SIZE), st.integers(1, 90)),
    height=st.one_of(st.just(SIZE), st.integers(1, 90)),
    seed=st.integers(0, 2**32 - 1),
    resize=st.booleans(),
)
def test_valid_images_of_odd_modes_and_sizes_decode(kind, width, height, seed, resize) -> None:
    mode, fmt, options = kind
    rng = np.random.default_rng(seed)
    if mode in ("I;16", "I", "F"):
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        values = rng.integers(-(2**20) if mode != "I;16" else 0, 65536, (height, width)).astype(
            dtype
        )
        image = Image.fromarray(values)
    else:
        rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        image = rgb.quantize(16) if mode == "P" else rgb.convert(mode)
    check(_encode(image, fmt, **options), f"odd/{mode}.{fmt.lower()}", resize, must_decode=True)


def _png(width: int, height: int, mode_byte: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">2I5B", width, height, 8, mode_byte, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _gif(width: int, height: int) -> bytes:
    return (
        b"GIF89a"
        + struct.pack("<2H", width, height)
        + b"\x00\x00\x00,\x00\x00\x00\x00"
        + struct.pack("<2H", width, height)
        + b"\x00\x02\x02\x44\x01\x00;"
    )


def _bmp(width: int, height: int) -> bytes:
    info = struct.pack("<I2i2H6I", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<I2HI", 54 + 64, 0, 0, 54) + info + bytes(64)


@settings(FUZZ, max_examples=300)
@given(
    fmt=st.sampled_from(["png", "gif", "bmp"]),
    width=st.one_of(st.integers(1, 2**16 - 1), st.integers(2**16, 2**31 - 1)),
    height=st.one_of(st.integers(1, 2**16 - 1), st.integers(2**16, 2**31 - 1)),
    zeros=st.integers(0, 4096),
    resize=st.booleans(),
)
def test_huge_declared_sizes_and_bombs(fmt, width, height, zeros, resize) -> None:
    if fmt == "png":
        data = _png(width, height, 0, zlib.compress(bytes(zeros)))
    else:
        data = _gif(width % 2**16, height % 2**16) if fmt == "gif" else _bmp(width, height)
    check(data, f"bomb.{fmt}", resize)
