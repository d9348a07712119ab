"""Where images come from: a zip or a folder in one of the layouts of :mod:`neuralcodes.data.layouts`
(Tiny ImageNet, or one sub-folder per class), the embedded sample, a downloaded archive.

:func:`load_dataset` turns a spec (``"sample"``, ``"tiny-imagenet"``, a URL, a zip, a folder) into
a :class:`~neuralcodes.data.imageset.Dataset` through the decoded-image cache.

What is guaranteed: a source that cannot be used as a whole (missing, not a zip, damaged zip
directory, wrong layout, unreadable listing files or folders) is a
:class:`~neuralcodes.data.layouts.SourceError` naming it and what to do. A file that cannot be read
(damaged zip member, symlink loop, dangling symlink, no permission) is an
:class:`~neuralcodes.data.decode.UnreadableFileError` naming it, which ``skip_corrupt`` skips like an
undecodable image. File names that are not UTF-8 do not break the folder checksum; the cache refuses
(or skips) those files by name.
"""

from __future__ import annotations

import errno
import hashlib
import lzma
import os
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from neuralcodes.data.cache import default_cache_dir, file_sha256, load_or_build
from neuralcodes.data.decode import SKIP_ADVICE, UnreadableFileError
from neuralcodes.data.download import (
    TINY_IMAGENET_MD5,
    TINY_IMAGENET_SIZE,
    TINY_IMAGENET_URL,
    download,
)
from neuralcodes.data.imageset import Dataset
from neuralcodes.data.layouts import (
    EXPECTED_SOURCES,
    SourceError,
    image_folder_listing,
    tiny_imagenet_listing,
    tiny_imagenet_root,
)
from neuralcodes.data.listing import SourceListing

SAMPLE_ZIP = Path(__file__).parent / "sample" / "tiny-imagenet-sample.zip"
TINY_IMAGENET_ENV = "NEURALCODES_TINY_IMAGENET"

# Open archives per process: a forked decoding worker must not share its parent's file offset.
_open_zips: dict[tuple, zipfile.ZipFile] = {}
# What reading one damaged member raises: CRC and header errors, broken deflate/lzma/bz2 streams, an
# unsupported compression method or encryption (NotImplementedError, RuntimeError), a short archive.
_MEMBER_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    ValueError,
)


class ZipSource:
    """A zip archive in the Tiny ImageNet layout."""

    def __init__(self, path: str | os.PathLike, name: str | None = None) -> None:
        self.path = Path(path).resolve()
        stat = self.path.stat()
        self.name = name or self.path.stem
        self.location = str(self.path)
        self._version = (stat.st_size, stat.st_mtime_ns)

    def checksum(self, cache_dir: Path) -> str:
        try:
            return file_sha256(self.path, cache_dir)
        except OSError as exc:
            raise SourceError(
                f"cannot read {self.path}: {exc.strerror or exc}; check that it is readable"
            ) from None

    def read(self, member: str) -> bytes:
        handle = self._zip()
        try:
            return handle.read(member)
        except _MEMBER_ERRORS as exc:
            reason = f"{exc or type(exc).__name__} (the archive is damaged: download it again)"
            raise UnreadableFileError(
                f"cannot read {member} in {self.location}: {reason}. {SKIP_ADVICE}",
                file=member,
                reason=reason,
            ) from None

    def read_text(self, member: str) -> str:
        """A text member of the layout (wnids.txt, ...): a damaged one is a :class:`SourceError`."""
        return _decode_text(
            lambda: self._zip().read(member), member, self.location, "download it again"
        )

    def listing(self, image_size: int) -> SourceListing:
        names = [n for n in self._zip().namelist() if not n.endswith("/")]
        root = tiny_imagenet_root(names)
        if root is None:
            raise SourceError(
                f"{self.path} is not a Tiny ImageNet archive: it should hold wnids.txt and "
                f"train/<wnid>/images/ at its top or inside one top folder"
            )
        return tiny_imagenet_listing(names, root, self.read_text, image_size, self.location)

    def _zip(self) -> zipfile.ZipFile:
        key = (self.location, os.getpid(), self._version)
        handle = _open_zips.get(key)
        if handle is None:
            for old in [k for k in _open_zips if k[0] == self.location]:
                _open_zips.pop(old).close()
            try:
                handle = _open_zips[key] = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise SourceError(
                    f"{self.path} is not a readable zip archive ({exc}); download it again"
                ) from None
        return handle


class FolderSource:
    """An extracted folder: the Tiny ImageNet layout (here or in its single child) or one sub-folder per class."""

    def __init__(self, root: str | os.PathLike, name: str | None = None) -> None:
        self.root = Path(root).resolve()
        self.name = name or self.root.name
        self.location = str(self.root)

    def checksum(self, cache_dir: Path) -> str:
        """sha256 of the sorted relative paths with their sizes and mtimes (hashing every byte of
        100,000 files would make each load slow)."""
        h = hashlib.sha256()
        for rel, size, mtime_ns in self._files():
            # surrogateescape: a name that is not UTF-8 is hashed by its bytes (the cache then refuses it by name)
            h.update(f"{rel}\t{size}\t{mtime_ns}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    def read(self, member: str) -> bytes:
        path = self.root / member
        try:
            return path.read_bytes()
        except OSError as exc:
            reason = _unreadable_reason(path, exc)
            raise UnreadableFileError(
                f"cannot read {member} in {self.location}: {reason}. {SKIP_ADVICE}",
                file=member,
                reason=reason,
            ) from None

    def read_text(self, member: str) -> str:
        """A text file of the layout (wnids.txt, ...): an unreadable one is a :class:`SourceError`."""
        return _decode_text(
            (self.root / member).read_bytes, member, self.location, "fix or replace it"
        )

    def listing(self, image_size: int) -> SourceListing:
        names = [rel for rel, _, _ in self._files()]
        root = tiny_imagenet_root(names)
        if root is not None:
            return tiny_imagenet_listing(names, root, self.read_text, image_size, self.location)
        return image_folder_listing(names, image_size, self.location)

    def _files(self) -> list[tuple[str, int, int]]:
        def unreadable_folder(exc: OSError) -> None:
            raise SourceError(
                f"cannot list the folder {exc.filename} of {self.location}: {exc.strerror}; make it readable "
                f"or remove it"
            )

        files = []
        for dirpath, _, filenames in os.walk(self.root, onerror=unreadable_folder):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            prefix = "" if rel_dir == "." else rel_dir + "/"
            for filename in filenames:
                path = os.path.join(dirpath, filename)
                try:
                    stat = os.stat(path)
                except (
                    OSError
                ):  # a dangling link or a link loop: listed, and refused (or skipped) on reading
                    stat = os.lstat(path)
                files.append((prefix + filename, stat.st_size, stat.st_mtime_ns))
        return sorted(files)


def _decode_text(read: Callable[[], bytes], member: str, where: str, fix: str) -> str:
    try:
        return read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{where}: {member} is not UTF-8 text ({exc.reason} at byte {exc.start}); {fix}"
        ) from None
    except _MEMBER_ERRORS as exc:
        raise SourceError(
            f"{where}: cannot read {member} ({exc or type(exc).__name__}); {fix}"
        ) from None


def _unreadable_reason(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "it is a symbolic link loop; fix or remove the link"
    if path.is_symlink() and not path.exists():
        return f"it is a dangling symbolic link (to {os.readlink(path)}, which does not exist); fix or remove it"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied; make it readable"
    return f"{exc.strerror or exc}"


def find_tiny_imagenet() -> Path | None:
    """The local Tiny ImageNet zip: ``$NEURALCODES_TINY_IMAGENET``, else
    ``../shared/data/tiny-imagenet-200.zip`` beside the current folder or this package's checkout."""
    env = os.environ.get(TINY_IMAGENET_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise SourceError(
                f"{TINY_IMAGENET_ENV}={env} does not exist; point it at tiny-imagenet-200.zip"
            )
        return path.resolve()
    repo = Path(__file__).resolve().parents[3]
    for base in (Path.cwd(), repo):
        candidate = base.parent / "shared" / "data" / "tiny-imagenet-200.zip"
        if candidate.is_file():
            return candidate.resolve()
    return None


def resolve_source(spec: str | os.PathLike | None, cache_dir: Path) -> ZipSource | FolderSource:
    """The source a spec names, downloading it first if it is a URL (see :func:`load_dataset`)."""
    if spec is None or spec == "sample":
        if not SAMPLE_ZIP.is_file():
            raise SourceError(
                f"the embedded sample {SAMPLE_ZIP} is missing: reinstall neuralcodes or run scripts/make_sample.py"
            )
        return ZipSource(SAMPLE_ZIP)
    if spec == "tiny-imagenet":
        local = find_tiny_imagenet()
        return (
            ZipSource(local) if local is not None else resolve_source(TINY_IMAGENET_URL, cache_dir)
        )
    if isinstance(spec, str) and spec.startswith(("http://", "https://")):
        official = spec == TINY_IMAGENET_URL
        path = download(
            spec,
            cache_dir / "downloads",
            md5=TINY_IMAGENET_MD5 if official else None,
            size=TINY_IMAGENET_SIZE if official else None,
        )
        return ZipSource(path)
    path = Path(spec).expanduser()
    if not path.exists():
        raise SourceError(f"{path} does not exist; {EXPECTED_SOURCES}")
    if path.is_dir():
        return FolderSource(path)
    if not zipfile.is_zipfile(path):
        raise SourceError(f"{path} is not a zip archive; {EXPECTED_SOURCES}")
    return ZipSource(path)


def load_dataset(
    spec: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    skip_corrupt: bool = False,
    image_size: int = 64,
    workers: int | None = None,
    verify: bool = False,
) -> Dataset:
    """Load a dataset, decoding it into the cache on first use.

    ``spec``: None or ``"sample"`` (the embedded 30-class sample), ``"tiny-imagenet"`` (the local
    archive found by :func:`find_tiny_imagenet`, else downloaded), an http(s) URL (downloaded into
    ``<cache_dir>/downloads``), a zip in the Tiny ImageNet layout, or a folder (Tiny ImageNet layout,
    else one sub-folder per class, resized to ``image_size``).

    ``skip_corrupt``: leave out files that cannot be read or decoded (listed on ``Dataset.skipped``)
    instead of stopping at the first. ``verify``: check the whole cached image arrays against their
    checksums (a second or so per gigabyte), not only a sample of rows; a damaged cache is rebuilt.
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    source = resolve_source(spec, cache_dir)
    dataset = load_or_build(
        source,
        cache_dir,
        skip_corrupt=skip_corrupt,
        image_size=image_size,
        workers=workers,
        verify=verify,
    )
    dataset.location = (
        str(Path(source.location).resolve()) if "://" not in source.location else source.location
    )
    return dataset
