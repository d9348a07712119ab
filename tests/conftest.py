"""Shared fixtures: a quiet, sandboxed environment and the datasets tests run on."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch
from synthetic import tiny_imagenet_members, write_folder, write_zip  # noqa: F401  (re-exported for fixtures)

from neuralcodes.data.imageset import Dataset
from neuralcodes.data.sources import find_tiny_imagenet, load_dataset


if os.environ.get("PYTEST_XDIST_WORKER"):
    # A worker per core (pytest -n auto): more compute threads would only make the workers wait on each other.
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _sandboxed_environment(tmp_path_factory: pytest.TempPathFactory):
    """No progress bars, and a cache under pytest's temp dir: tests never write to ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEURALCODES_NO_PROGRESS", "1")
        mp.setenv("NEURALCODES_CACHE", str(tmp_path_factory.mktemp("neuralcodes-cache")))
        yield


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """The embedded 30-class sample (3,000 train, 600 val images), decoded once per session."""
    return load_dataset("sample", cache_dir=tmp_path_factory.mktemp("sample-cache"))


@pytest.fixture(scope="session")
def tiny_imagenet_zip() -> Path:
    """The real Tiny ImageNet archive, or skip."""
    path = find_tiny_imagenet()
    if path is None:
        pytest.skip(
            "Tiny ImageNet archive not found: set NEURALCODES_TINY_IMAGENET or place it at "
            "../shared/data/tiny-imagenet-200.zip"
        )
    return path


# --- synthetic sources -------------------------------------------------------------------------


@pytest.fixture
def synthetic_tiny_imagenet(tmp_path: Path):
    """Factory: ``make(name="t.zip", as_folder=False, **tiny_imagenet_members kwargs) -> path``."""

    def make(name: str = "tiny.zip", as_folder: bool = False, **kwargs) -> Path:
        members = tiny_imagenet_members(**{"wnids": ["n03", "n01", "n02"], **kwargs})
        target = tmp_path / name
        return write_folder(target, members) if as_folder else write_zip(target, members)

    return make


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # clients that stop reading on purpose (failed checks) reset the connection


@pytest.fixture
def serve_directory():
    """Factory: ``serve(folder) -> base URL`` of a local HTTP server (stopped after the test).
    The handler class counts GET requests in ``serve.requests``."""
    servers = []

    def serve(folder: Path, handler: type[http.server.BaseHTTPRequestHandler] | None = None) -> str:
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                serve.requests += 1
                super().do_GET()

        handler_class = handler or functools.partial(Quiet, directory=str(folder))
        server = _QuietServer(("127.0.0.1", 0), handler_class)
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    serve.requests = 0
    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()
