"""Where an index's images live (a folder tree, or a data source as ``--data`` takes it), and reading
one image safely: every way a file can be bad becomes a :class:`Skipped` with a reason, never a crash.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from neuralcodes.data.decode import DecodedImage, decode_image, display_name
from neuralcodes.data.layouts import SourceError, is_image_name
from neuralcodes.data.sources import resolve_source

MAX_FILE_BYTES = 256 << 20  # larger files are not read at all

FOLDER, DATA = "folder", "data"


@dataclass(frozen=True)
class Entry:
    """One file of a collection: its path inside the collection and its label (None if unknown)."""

    path: str
    label: str | None


class Skipped(Exception):
    """A file that is not indexed; ``kind`` groups the reasons for the summary."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class Collection(Protocol):
    kind: str
    location: str

    def entries(self) -> tuple[list[Entry], list[tuple[str, Skipped]]]: ...

    def read(self, path: str) -> bytes: ...


class FolderCollection:
    """Every file under ``root`` (hidden folders and ``exclude`` not walked, symbolic links not followed).

    The label of a file inside a sub-folder is that top-level sub-folder's name (class folders), else None.
    """

    kind = FOLDER

    def __init__(
        self, root: str | os.PathLike, labels: bool = True, exclude: str | os.PathLike | None = None
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(
                f"{root} is not a folder of images; pass the folder that holds them (any depth)"
            )
        self.location = str(self.root)
        self.labels = labels
        self.exclude = Path(exclude).resolve() if exclude is not None else None

    def entries(self) -> tuple[list[Entry], list[tuple[str, Skipped]]]:
        images: list[Entry] = []
        others: list[tuple[str, Skipped]] = []

        def unreadable(
            exc: OSError,
        ) -> None:  # os.walk would leave such a folder out without a word
            folder = Path(exc.filename) if exc.filename else self.root
            reason = f"folder cannot be read: {exc.strerror or exc}"
            others.append((_shown(folder, self.root), Skipped("unreadable", reason)))

        for dirpath, dirnames, filenames in os.walk(self.root, onerror=unreadable):
            here = Path(dirpath)
            dirnames[:] = sorted(
                d for d in dirnames if not d.startswith(".") and here / d != self.exclude
            )
            for name in [
                d for d in dirnames if (here / d).is_symlink()
            ]:  # os.walk would drop them unsaid
                others.append(
                    (
                        _shown(here / name, self.root),
                        Skipped(
                            "not followed", "symbolic link to a folder: links are not followed"
                        ),
                    )
                )
            for name in sorted(filenames):
                rel = (here / name).relative_to(self.root).as_posix()
                if (
                    display_name(rel) != rel
                ):  # not UTF-8: SQLite (and every later command) takes the path as UTF-8 text
                    others.append(
                        (
                            _shown(here / name, self.root),
                            Skipped(
                                "unreadable",
                                "its name is not valid UTF-8 (shown with \\xNN): rename it",
                            ),
                        )
                    )
                elif (here / name).is_symlink():
                    others.append(
                        (rel, Skipped("not followed", "symbolic link: links are not followed"))
                    )
                elif name.startswith(
                    "."
                ):  # an editor's or OS's file, not a photo, even with an image extension
                    others.append(
                        (rel, Skipped("hidden", "hidden file (its name starts with a dot)"))
                    )
                elif not is_image_name(name):
                    others.append((rel, Skipped("not an image", "not an image file (by its name)")))
                else:
                    parts = rel.split("/")
                    images.append(Entry(rel, parts[0] if self.labels and len(parts) > 1 else None))
        images.sort(key=lambda e: e.path)
        return images, sorted(others, key=lambda o: o[0])

    def read(self, path: str) -> bytes:
        file = self.file(path)
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            raise Skipped("too large", f"file of {size:,} bytes (the limit is {MAX_FILE_BYTES:,})")
        return file.read_bytes()

    def file(self, path: str) -> Path:
        """The file of an indexed path; refuses anything that would leave the collection's folder."""
        file = (self.root / path).resolve()
        if not file.is_relative_to(
            self.root
        ):  # resolve() followed any link: it must still be inside
            raise FileNotFoundError(f"{path} is not inside the collection {self.root}")
        return file


def _shown(file: Path, root: Path) -> str:
    return display_name(file.relative_to(root).as_posix())


class DataCollection:
    """A data source as ``--data`` takes it (``sample``, a Tiny ImageNet zip or folder): train and val images."""

    kind = DATA

    def __init__(self, spec: str) -> None:
        from neuralcodes.data.cache import default_cache_dir

        self.source = resolve_source(spec, default_cache_dir())
        self.location = self.source.location

    def entries(self) -> tuple[list[Entry], list[tuple[str, Skipped]]]:
        listing = self.source.listing(64)
        images = [
            Entry(f, listing.class_names[int(y)])
            for f, y in zip(listing.train.files, listing.train.labels)
        ]
        if listing.val is not None:
            images += [
                Entry(f, listing.class_names[int(y)])
                for f, y in zip(listing.val.files, listing.val.labels)
            ]
        return images, []

    def read(self, path: str) -> bytes:
        try:
            return self.source.read(path)
        except (KeyError, OSError) as exc:
            raise Skipped("unreadable", f"cannot be read from {self.location}: {exc}") from None


def open_collection(kind: str, location: str) -> Collection:
    """The collection a ``sources`` row of an index names."""
    if kind == FOLDER:
        return FolderCollection(location)
    if kind == DATA:
        try:
            return DataCollection(location)
        except SourceError as exc:
            raise FileNotFoundError(
                f"the index's data source {location} cannot be opened: {exc}"
            ) from None
    raise ValueError(f"unknown collection kind {kind!r} in the index")


@dataclass(frozen=True)
class LoadedImage:
    entry: Entry
    sha256: str
    image: DecodedImage


def load_image(collection: Collection, entry: Entry, size: int) -> LoadedImage:
    """Read, hash and decode one file (stretched to size x size); raises :class:`Skipped`."""
    try:
        data = collection.read(entry.path)
    except OSError as exc:
        raise Skipped("unreadable", f"cannot be read: {exc.strerror or exc}") from None
    return LoadedImage(
        entry, hashlib.sha256(data).hexdigest(), decode_bytes(data, entry.path, size)
    )


def decode_bytes(data: bytes, name: str, size: int) -> DecodedImage:
    """Decode an image of any size and mode to uint8 (size, size, 3) RGB; raises :class:`Skipped`.

    :func:`~neuralcodes.data.decode.decode_image` does the work (modes, EXIF orientation, and refusing
    images that declare more pixels than PIL's limit before decoding them); this only sorts its errors.
    """
    if not data:
        raise Skipped("empty", "zero-byte file")
    if len(data) > MAX_FILE_BYTES:
        raise Skipped("too large", f"file of {len(data):,} bytes (the limit is {MAX_FILE_BYTES:,})")
    try:
        return decode_image(data, name, size, resize=True)
    except (
        ValueError
    ) as exc:  # the decoder's own errors: corrupt, truncated, not an image, too many pixels
        reason = getattr(exc, "reason", "") or str(exc)
        kind = "too large" if "decompression bomb" in reason.lower() else "unreadable"
        raise Skipped(kind, reason) from None
    except MemoryError:
        raise Skipped("too large", "not enough memory to decode it") from None
