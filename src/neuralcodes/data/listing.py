"""What a source holds, before any pixel is decoded: classes (numbered) and each split's files.

The cache decodes from a :class:`Source`; :mod:`neuralcodes.data.sources` provides zip and folder sources,
:mod:`neuralcodes.data.layouts` reads their layouts into a :class:`SourceListing`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class SplitListing:
    """The images of one split, in dataset order: source paths and class indices."""

    files: list[str]
    labels: np.ndarray


@dataclass(frozen=True)
class SourceListing:
    """Everything needed to decode a source: classes (already numbered) and the images per split."""

    layout: str
    class_ids: list[str]
    class_names: list[str]
    class_full_names: list[str]
    train: SplitListing
    val: SplitListing | None
    image_size: int = 64
    resize: bool = False
    notes: list[str] = field(default_factory=list)


class Source(Protocol):
    """A place images come from (zip or folder); must be picklable for the decoding workers."""

    name: str
    location: str

    def checksum(self, cache_dir: Path) -> str: ...

    def listing(self, image_size: int) -> SourceListing: ...

    def read(self, member: str) -> bytes:
        """The member's bytes; one that cannot be read raises
        :class:`~neuralcodes.data.decode.UnreadableFileError` naming it (the cache wraps any other OSError)."""
        ...
