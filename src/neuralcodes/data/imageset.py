"""The in-memory form of a labelled image collection that every later stage reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ImageSet:
    """Decoded images with labels.

    ``images`` is uint8 (N, H, W, 3), often a read-only memory map of the cache; pixel values are
    scaled to [0, 1] only when batches are formed (see :mod:`neuralcodes.data.batches`).
    ``labels[i]`` indexes ``class_ids`` / ``class_names``; ``files[i]`` is the image's path inside
    its source, for reports and error messages.
    """

    images: np.ndarray
    labels: np.ndarray
    class_ids: list[str]
    class_names: list[str]
    files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"ImageSet.images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}"
            )
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.labels)} labels for {len(self.images)} images")
        if len(self.class_ids) != len(self.class_names):
            raise ValueError(
                f"{len(self.class_ids)} class ids but {len(self.class_names)} class names"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    def subset(self, indices: np.ndarray) -> "ImageSet":
        """A new ImageSet holding only ``indices`` (copies the selected pixels into memory)."""
        indices = np.asarray(indices)
        return ImageSet(
            images=np.ascontiguousarray(self.images[indices]),
            labels=np.asarray(self.labels)[indices],
            class_ids=list(self.class_ids),
            class_names=list(self.class_names),
            files=[self.files[i] for i in indices] if self.files else [],
        )


@dataclass
class Dataset:
    """What a source yields: the labelled collection the splits are drawn from, and, when the
    source has one, its separate official validation set (Tiny ImageNet's ``val/``)."""

    name: str
    train: ImageSet
    val: ImageSet | None
    checksum: str  # sha256 of the source (archive or folder listing + contents): what a run pins
    location: str = (
        ""  # where it was read from (absolute path or URL), for messages and run records
    )
    # (file, reason) of each image left out with skip_corrupt: what a run's report lists.
    skipped: list[tuple[str, str]] = field(default_factory=list)
