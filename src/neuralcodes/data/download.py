"""Fetch an archive over HTTP(S) into a folder, verified, never leaving half a file behind.

The bytes go to a temporary file beside the target (see :func:`neuralcodes.io.atomic_path`); the
file is renamed into place only after its size and md5 match what was expected, so an interrupted
or corrupted download leaves nothing that a later run could mistake for the archive.

Every failure (network, HTTP status, short transfer, wrong size or md5, unwritable folder) is a
:class:`DownloadError` whose message is one line naming the URL and the way out: download the file
some other way and pass its local path instead of the URL.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from neuralcodes.io import atomic_path
from neuralcodes.progress import ProgressBar

log = logging.getLogger(__name__)

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_IMAGENET_SIZE = 248_100_043

_CHUNK = 1 << 20


class DownloadError(OSError, ValueError):
    """A download failed or its bytes are not the expected ones.

    An ``OSError``, and a ``ValueError`` so that the command line prints its message, not a traceback.
    """


def download(
    url: str,
    dest_dir: str | os.PathLike,
    md5: str | None = None,
    size: int | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` into ``dest_dir`` (file name from the URL) and return the file's path.

    ``md5`` / ``size``, when given, are checked before the file appears under its name; on a
    mismatch :class:`DownloadError` is raised and neither the file nor a temporary one is left.
    An existing file of the right size is returned without downloading again: only a verified
    download is ever renamed to that name.
    """
    dest_dir = Path(dest_dir)
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise DownloadError(
            f"cannot derive a file name from URL {url!r}: it should end in the file's name"
        )
    target = dest_dir / name
    if _already_downloaded(target, md5, size):
        log.info("using the already downloaded %s", target)
        return target

    response = _open(url, dest_dir, timeout)
    try:
        with response, atomic_path(target) as tmp:
            announced = _content_length(response)
            if size is not None and announced is not None and announced != size:
                raise _failed(
                    url,
                    f"the server announces {announced:,} bytes but {size:,} were expected "
                    f"(it holds a different file); nothing was written to {dest_dir}",
                )
            digest, received = _stream(
                response, tmp, total=size or announced, description=f"download {name}", url=url
            )
            _verify(
                url,
                dest_dir,
                received=received,
                digest=digest,
                announced=announced,
                md5=md5,
                size=size,
            )
    except DownloadError:
        raise
    except OSError as exc:  # the temporary file beside the target: permissions, full disk
        raise _failed(url, f"cannot write into {dest_dir}: {exc.strerror or exc}") from None
    log.info("downloaded %s (%s bytes)", target, f"{received:,}")
    return target


def _open(url: str, dest_dir: Path, timeout: float) -> Any:
    """The folder made, the URL's response opened; :class:`DownloadError` saying which failed."""
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _failed(
            url,
            f"cannot create {dest_dir}: {exc.strerror or exc} (NEURALCODES_CACHE can point "
            f"the cache, and its downloads/ folder, elsewhere)",
        ) from None
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        is_http = isinstance(exc, urllib.error.HTTPError)
        reason = f"HTTP {exc.code} {exc.reason}" if is_http else getattr(exc, "reason", exc)
        raise _failed(url, f"{reason}; check the network") from exc


def file_md5(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _already_downloaded(target: Path, md5: str | None, size: int | None) -> bool:
    # Only verified downloads are renamed to ``target``, so a matching size is trusted without
    # re-hashing 250 MB on every run; with no size to compare, the md5 is checked.
    if not target.is_file():
        return False
    if size is not None:
        return target.stat().st_size == size
    return md5 is None or file_md5(target) == md5.lower()


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _stream(response, tmp: Path, total: int | None, description: str, url: str) -> tuple[str, int]:
    """Copy the body to ``tmp`` with a byte progress bar; return (md5 hex, byte count)."""
    h = hashlib.md5()
    received = 0
    try:
        with open(tmp, "wb") as f, ProgressBar(total, description, unit="B") as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                f.write(chunk)
                h.update(chunk)
                received += len(chunk)
                bar.advance(len(chunk))
    except (OSError, http.client.HTTPException) as exc:  # IncompleteRead is an HTTPException
        if isinstance(exc, OSError) and exc.errno in (
            errno.ENOSPC,
            errno.EDQUOT,
            errno.EACCES,
            errno.EROFS,
        ):
            raise _failed(url, f"cannot write {tmp}: {exc.strerror}") from exc
        raise _failed(
            url, f"the transfer broke off after {received:,} bytes ({exc}); try again"
        ) from exc
    return h.hexdigest(), received


def _failed(url: str, what: str) -> DownloadError:
    """The one-line error of a failed download: the URL, what went wrong, the way out."""
    what = " ".join(str(what).split())
    return DownloadError(
        f"could not download {url}: {what}. Way out: download the file some other way (a browser, curl, "
        f"another network) and pass the local zip instead of the URL."
    )


def _verify(
    url: str,
    dest_dir: Path,
    received: int,
    digest: str,
    announced: int | None,
    md5: str | None,
    size: int | None,
) -> None:
    nothing_kept = f"nothing was kept in {dest_dir}; try again"
    if announced is not None and received != announced:
        raise _failed(
            url, f"received {received:,} of the {announced:,} announced bytes; {nothing_kept}"
        )
    if size is not None and received != size:
        raise _failed(url, f"received {received:,} bytes but expected {size:,}; {nothing_kept}")
    if md5 is not None and digest != md5.lower():
        raise _failed(
            url, f"md5 {digest} does not match the expected {md5.lower()}; {nothing_kept}"
        )
