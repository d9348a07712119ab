"""download(): verified, atomic, against a local HTTP server started by the test."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
from pathlib import Path

import pytest

from neuralcodes.data.download import DownloadError, download, file_md5

PAYLOAD_SIZE = 3 * (1 << 20) + 12345  # several read chunks, and not a multiple of one


@pytest.fixture
def served(tmp_path: Path, serve_directory):
    """(base URL, payload bytes) of a server holding archive.zip."""
    folder = tmp_path / "www"
    folder.mkdir()
    payload = os.urandom(PAYLOAD_SIZE)
    (folder / "archive.zip").write_bytes(payload)
    return serve_directory(folder), payload


def test_download_verifies_and_writes_the_file(served, tmp_path: Path) -> None:
    url, payload = served
    dest = tmp_path / "dest"
    path = download(
        f"{url}/archive.zip", dest, md5=hashlib.md5(payload).hexdigest(), size=len(payload)
    )
    assert path == dest / "archive.zip"
    assert path.read_bytes() == payload
    assert sorted(os.listdir(dest)) == ["archive.zip"]


def test_md5_mismatch_raises_and_leaves_nothing(served, tmp_path: Path) -> None:
    url, payload = served
    dest = tmp_path / "dest"
    wrong = hashlib.md5(payload + b"x").hexdigest()
    actual = hashlib.md5(payload).hexdigest()
    with pytest.raises(DownloadError, match=rf"md5 {actual} does not match the expected {wrong}"):
        download(f"{url}/archive.zip", dest, md5=wrong)
    assert os.listdir(dest) == []


@pytest.mark.parametrize("size", [PAYLOAD_SIZE - 1, PAYLOAD_SIZE + 1])
def test_size_mismatch_raises_and_leaves_nothing(served, tmp_path: Path, size: int) -> None:
    url, payload = served
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match=f"{size:,}"):
        download(f"{url}/archive.zip", dest, md5=hashlib.md5(payload).hexdigest(), size=size)
    assert os.listdir(dest) == []


def test_size_mismatch_without_content_length_is_caught_after_streaming(
    tmp_path: Path, serve_directory, served
) -> None:
    _, payload = served

    class NoLength(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)

    url = serve_directory(tmp_path, handler=NoLength)
    dest = tmp_path / "dest"
    with pytest.raises(
        DownloadError, match=rf"received {len(payload):,} bytes but expected {len(payload) + 7:,}"
    ):
        download(f"{url}/archive.zip", dest, size=len(payload) + 7)
    assert os.listdir(dest) == []


def test_truncated_transfer_raises_and_leaves_nothing(tmp_path: Path, serve_directory) -> None:
    class Truncating(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 40000)  # then the connection closes

    url = serve_directory(tmp_path, handler=Truncating)
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="archive.zip"):
        download(f"{url}/archive.zip", dest)
    assert os.listdir(dest) == []


def test_missing_file_on_server_gives_a_clear_error(served, tmp_path: Path) -> None:
    url, _ = served
    with pytest.raises(DownloadError, match=r"could not download .*/nothing\.zip: HTTP 404"):
        download(f"{url}/nothing.zip", tmp_path / "dest")


def test_an_existing_verified_download_is_not_fetched_again(
    served, tmp_path: Path, serve_directory
) -> None:
    url, payload = served
    dest = tmp_path / "dest"
    md5 = hashlib.md5(payload).hexdigest()
    download(f"{url}/archive.zip", dest, md5=md5, size=len(payload))
    assert serve_directory.requests == 1
    download(f"{url}/archive.zip", dest, md5=md5, size=len(payload))
    download(f"{url}/archive.zip", dest, md5=md5)  # no size: md5 of the file on disk is checked
    assert serve_directory.requests == 1
    # A file of the wrong size under that name (not ours) is replaced by a fresh, verified copy.
    (dest / "archive.zip").write_bytes(b"stale")
    assert download(f"{url}/archive.zip", dest, md5=md5, size=len(payload)).read_bytes() == payload
    assert serve_directory.requests == 2


def test_file_md5_matches_hashlib(tmp_path: Path) -> None:
    data = os.urandom(5 * (1 << 20) + 3)
    (tmp_path / "f").write_bytes(data)
    assert file_md5(tmp_path / "f") == hashlib.md5(data).hexdigest()


def test_url_without_a_file_name_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="file name"):
        download("http://127.0.0.1:1/", tmp_path)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_a_one_line_message_with_the_way_out(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/tiny-imagenet-200.zip"
    with pytest.raises(DownloadError) as caught:
        download(url, tmp_path / "dest", timeout=5)
    message = str(caught.value)
    assert message.startswith(f"could not download {url}: ") and "refused" in message.lower()
    assert "pass the local zip instead of the URL" in message and "\n" not in message
    # A ValueError as well as an OSError: the command line prints it instead of a traceback.
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, OSError)


def test_unwritable_download_folder_is_named(served, tmp_path: Path) -> None:
    url, _ = served
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the downloads folder should be")
    with pytest.raises(
        DownloadError,
        match=rf"could not download {url}/archive\.zip: cannot create "
        rf"{blocker}/downloads: .*NEURALCODES_CACHE.*pass the local zip",
    ):
        download(f"{url}/archive.zip", blocker / "downloads")


def test_every_failure_names_the_url_and_the_way_out(served, tmp_path: Path) -> None:
    url, _ = served
    with pytest.raises(DownloadError) as caught:
        download(f"{url}/archive.zip", tmp_path / "dest", md5="0" * 32)
    message = str(caught.value)
    assert message.startswith(f"could not download {url}/archive.zip: md5 ")
    assert message.endswith("pass the local zip instead of the URL.") and "\n" not in message
