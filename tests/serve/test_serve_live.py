"""The server while another shell adds, removes or switches the backend (issue 23, the live index): the
next request answers from the changed index, never a 500, and a removed image's pages give 404."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from neuralcodes.data.sources import SAMPLE_ZIP
from neuralcodes.index import Index
from neuralcodes.serve import create_app


def run_neuralcodes(*args: str | Path) -> None:
    """`neuralcodes ARGS` in a process of its own (another shell), which must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "neuralcodes", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def new_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 photos of a class the served index does not hold."""
    folder = tmp_path_factory.mktemp("new") / "photos"
    with zipfile.ZipFile(SAMPLE_ZIP) as archive:
        names = sorted(n for n in archive.namelist() if "/train/" in n and n.endswith(".JPEG"))
        wnid = sorted({n.split("/")[-3] for n in names})[2]
        (folder / wnid).mkdir(parents=True)
        for name in [n for n in names if n.split("/")[-3] == wnid][:3]:
            (folder / wnid / name.rsplit("/", 1)[1]).write_bytes(archive.read(name))
    return folder


@pytest.fixture
def live(served_index: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(served_index, tmp_path / "idx"))


@pytest.fixture
def client(live: Path):
    with Index.open(live) as index:
        yield TestClient(create_app(index), raise_server_exceptions=False)


def _upload(client: TestClient, file: Path, k: int = 5) -> list[dict]:
    response = client.post(f"/api/search?k={k}", files={"image": ("q.jpg", file.read_bytes())})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_images_added_from_another_shell_are_served(
    client: TestClient, live: Path, new_photos: Path
) -> None:
    assert client.get("/api/images").json()["total"] == 12
    run_neuralcodes("index", "add", live, new_photos)
    assert client.get("/api/images").json()["total"] == 15
    for file in sorted(new_photos.rglob("*.JPEG")):
        first = _upload(client, file)[0]
        assert first["path"] == file.relative_to(new_photos).as_posix() and first["id"] >= 12
        response = client.get(f"/api/images/{first['id']}/neighbours?k=3")
        assert response.status_code == 200, response.text
        assert response.json()["query"]["id"] == response.json()["results"][0]["id"] == first["id"]
        assert client.get(f"/api/images/{first['id']}/thumbnail").status_code == 200


def test_an_image_removed_from_another_shell_is_gone_without_errors(
    client: TestClient, live: Path, served_photos: Path
) -> None:
    gone = sorted(served_photos.rglob("*.JPEG"))[3]
    gone_id = _upload(client, gone)[0]["id"]
    assert client.get(f"/api/images/{gone_id}/thumbnail").status_code == 200  # cached now
    run_neuralcodes("index", "remove", live, gone)
    assert gone_id not in [r["id"] for r in _upload(client, gone, k=11)]
    for image_id in set(range(12)) - {gone_id}:
        response = client.get(f"/api/images/{image_id}/neighbours?k=11")
        assert response.status_code == 200, response.text
        assert gone_id not in [r["id"] for r in response.json()["results"]]
        assert len(response.json()["results"]) == 11  # every image left
    for page in ("neighbours", "thumbnail", ""):
        assert client.get(f"/api/images/{gone_id}/{page}".rstrip("/")).status_code == 404
    assert client.get("/api/images").json()["total"] == 11


def test_a_backend_switched_from_another_shell_is_used_and_reported(
    client: TestClient, live: Path, served_photos: Path
) -> None:
    files = sorted(served_photos.rglob("*.JPEG"))[::3]
    before = [[r["id"] for r in _upload(client, f)] for f in files]
    assert client.get("/api/health").json()["backend"] == "exact"
    run_neuralcodes("index", "backend", live, "hnsw")
    assert client.get("/api/health").json()["backend"] == "hnsw"
    assert [[r["id"] for r in _upload(client, f)] for f in files] == before
