"""An upload is decoded once, by the index (the server hands it the bytes), and a bad one still gets
the 4xx that says why."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from synthetic import png_header  # tests/synthetic.py
import neuralcodes.data.decode
import neuralcodes.index.queries
from neuralcodes.index import Index
from neuralcodes.serve import create_app


@pytest.fixture(scope="module")
def index(served_index: Path):
    with Index.open(served_index) as opened:
        yield opened


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often the bytes are decoded, and how often pixels are made RGB (once per decode, once more
    if decoded pixels were handed back to the index as an array)."""
    calls = {"decode": 0, "rgb": 0}
    decode, rgb = neuralcodes.index.queries.decode_bytes, neuralcodes.data.decode.viewed_rgb

    def counted_decode(*args, **kwargs):
        calls["decode"] += 1
        return decode(*args, **kwargs)

    def counted_rgb(*args, **kwargs):
        calls["rgb"] += 1
        return rgb(*args, **kwargs)

    monkeypatch.setattr(neuralcodes.index.queries, "decode_bytes", counted_decode)
    monkeypatch.setattr(neuralcodes.index.queries, "viewed_rgb", counted_rgb)
    monkeypatch.setattr(neuralcodes.data.decode, "viewed_rgb", counted_rgb)
    return calls


def _upload(client: TestClient, data: bytes):
    return client.post("/api/search?k=3", files={"image": ("photo.jpg", data, "image/jpeg")})


def test_an_upload_is_decoded_once(
    index: Index, served_photos: Path, counted: dict[str, int]
) -> None:
    client = TestClient(create_app(index), raise_server_exceptions=False)
    photo = sorted(served_photos.rglob("*.JPEG"))[0]
    response = _upload(client, photo.read_bytes())
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["path"] == photo.relative_to(served_photos).as_posix()
    assert counted == {"decode": 1, "rgb": 1}


@pytest.mark.parametrize(
    "data, status, reason",
    [
        (
            b"just some text, not an image",
            415,
            "not an image in a format PIL reads (unknown format, or a damaged header)",
        ),
        (png_header(30000, 30000), 413, None),  # PIL's words, which name the pixel limit
    ],
    ids=["not-an-image", "bomb"],
)
def test_an_undecodable_upload_is_decoded_once_and_refused_as_before(
    index: Index, counted: dict[str, int], data: bytes, status: int, reason: str | None
) -> None:
    client = TestClient(create_app(index), raise_server_exceptions=False)
    response = _upload(client, data)
    assert response.status_code == status
    detail = response.json()["detail"]
    assert detail.startswith("the upload is not an image this server can read: ")
    assert detail.endswith(reason) if reason else "decompression bomb" in detail
    assert counted["decode"] == 1
