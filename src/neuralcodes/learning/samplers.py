"""Which images a batch holds: triplets for deep ranking, m images per class for in-batch mining.

Triplets (:class:`TripletSampler`, :class:`TripletStore`): a triplet draws its query uniformly from
all images (so classes count by their size), its positive uniformly from the query's class without
the query itself, and its negative uniformly from the images of all other classes. Each epoch's triplets come from a seed derived from
(run seed, epoch) and are saved with the run (``RUN/triplets/epoch_003.npy``), so training only
reads images and any epoch can be reproduced or inspected.

m per class (:class:`MPerClassSampler`, and :func:`m_per_class_order` for a whole epoch of image indices):
pml's sampler, whose batches hold ``batch_size / m`` classes with ``m`` images each, so every image of a batch
has positives and negatives to mine in that batch. The one m-per-class sampler of the package.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pytorch_metric_learning import samplers as pml_samplers
from pytorch_metric_learning.utils import common_functions as pml_common

from neuralcodes import io


def derive_seed(seed: int, *keys: int) -> int:
    """An independent 63-bit seed for (seed, *keys): nearby epochs get unrelated streams."""
    return int(
        np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(2, np.uint64)[0]
        >> np.uint64(1)
    )


class TripletSampler:
    """Samples (query, positive, negative) image indices given per-image class labels."""

    def __init__(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError(f"labels must be a non-empty 1-d array, got shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        classes, counts = np.unique(labels, return_counts=True)
        if len(classes) < 2:
            raise ValueError(
                "triplets need at least two classes (a negative comes from another class)"
            )
        single = classes[counts < 2]
        if len(single):
            raise ValueError(
                f"classes {single[:10].tolist()} have a single image, so their queries have no positive; "
                "remove them or add images"
            )
        self.labels = labels
        # Images sorted by class: class c occupies order[start[c] : start[c] + count[c]].
        self.order = np.argsort(labels, kind="stable")
        self._class_pos = np.searchsorted(classes, labels)  # per image: its class's row
        self._start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._count = counts

    def sample(self, n: int, seed: int) -> np.ndarray:
        """``n`` triplets as an int64 array (n, 3) of image indices, a pure function of ``seed``."""
        if n < 1:
            raise ValueError(f"the number of triplets must be positive, got {n}")
        rng = np.random.default_rng(seed)
        total = len(self.labels)
        query = rng.integers(0, total, size=n)
        c = self._class_pos[query]
        start, count = self._start[c], self._count[c]
        # Positive: one of the count-1 other images of the class; skipping the query's own slot
        # keeps the choice uniform without rejection loops.
        qslot = np.empty(total, dtype=np.int64)
        qslot[self.order] = np.arange(total)
        r = rng.integers(0, count - 1)
        slot = start + r
        slot = np.where(slot >= qslot[query], slot + 1, slot)
        positive = self.order[slot]
        # Negative: uniform over the total-count images outside the class: skip the class's block.
        r = rng.integers(0, total - count)
        negative = self.order[np.where(r < start, r, r + count)]
        return np.stack([query, positive, negative], axis=1).astype(np.int64)


class TripletStore:
    """Per-epoch triplets saved under ``folder`` (atomic .npy files), sampled once, then re-read."""

    def __init__(
        self, folder: str | Path, sampler: TripletSampler, per_epoch: int, seed: int
    ) -> None:
        self.folder = Path(folder)
        self.sampler = sampler
        self.per_epoch = int(per_epoch)
        self.seed = int(seed)

    def path(self, epoch: int) -> Path:
        return self.folder / f"epoch_{epoch:03d}.npy"

    def get(self, epoch: int) -> np.ndarray:
        path = self.path(epoch)
        if path.exists():
            triplets = np.load(path)
            if triplets.shape != (self.per_epoch, 3):
                raise ValueError(
                    f"{path} holds {triplets.shape} triplets, expected ({self.per_epoch}, 3): "
                    "it belongs to another configuration; use a new run folder"
                )
            return triplets
        triplets = self.sampler.sample(self.per_epoch, derive_seed(self.seed, epoch))
        io.save_npy(path, triplets)
        return triplets


def _epoch_random_state(seed: int, epoch: int) -> np.random.RandomState:
    # The tuned recipe's seeding since its first run (SeedSequence([seed, epoch]), one 32-bit word): kept, so
    # its batches, and the runs and the published figures made with them, stay those it always drew.
    return np.random.RandomState(
        np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0]
    )


class MPerClassSampler(pml_samplers.MPerClassSampler):
    """pml's ``MPerClassSampler`` (indices for a DataLoader), made a pure function of (seed, epoch).

    pml draws from numpy's global random state and shuffles its class list in place, so a resumed run
    would not see the batches an uninterrupted one sees. Here each pass draws from its own generator,
    seeded by (``seed``, epoch); call :meth:`set_epoch` before each epoch.
    A class with fewer than ``m`` images is drawn with replacement (pml's rule): its images repeat.
    """

    def __init__(
        self,
        labels: np.ndarray,
        m: int,
        batch_size: int,
        length_before_new_iter: int = 100_000,
        seed: int = 0,
    ) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"labels must be a 1-d integer array, got shape {labels.shape} of {labels.dtype}"
            )
        n_classes = len(np.unique(labels))
        if m < 1 or batch_size < 1 or batch_size % m:
            raise ValueError(f"batch_size ({batch_size}) must be a positive multiple of m ({m})")
        if n_classes * m < batch_size:
            raise ValueError(
                f"a batch of {batch_size} needs {batch_size // m} classes of {m} images, but the labels hold "
                f"{n_classes} classes: lower batch_size to at most {n_classes * m} or raise m"
            )
        if length_before_new_iter < batch_size:
            raise ValueError(
                f"length_before_new_iter ({length_before_new_iter}) must be at least batch_size ({batch_size})"
            )
        super().__init__(
            labels, m, batch_size=batch_size, length_before_new_iter=length_before_new_iter
        )
        self._classes = list(self.labels)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        self.labels = list(
            self._classes
        )  # pml shuffles this list in place: start each pass from one order
        global_rng = pml_common.NUMPY_RANDOM
        pml_common.NUMPY_RANDOM = _epoch_random_state(self.seed, self.epoch)
        try:
            indices = [int(i) for i in super().__iter__()]
        finally:
            pml_common.NUMPY_RANDOM = global_rng
        return iter(indices)


def m_per_class_order(
    labels: np.ndarray,
    indices: np.ndarray,
    m: int,
    batch_size: int,
    n_batches: int,
    seed: int,
    epoch: int = 0,
) -> np.ndarray:
    """``n_batches * batch_size`` image indices drawn from ``indices`` by :class:`MPerClassSampler`: each
    consecutive block of ``batch_size`` holds ``m`` images of each of ``batch_size / m`` distinct classes
    (``labels`` indexed by image); a pure function of (seed, epoch)."""
    indices = np.asarray(indices)
    sampler = MPerClassSampler(
        np.asarray(labels)[indices], m, batch_size, n_batches * batch_size, seed
    )
    sampler.set_epoch(epoch)
    return indices[np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))]
