"""The course split: in-domain train / val / test, and held-out out-of-domain (OOD) classes.

Reproduces the reference notebook draw for draw: the last ``n_ood`` classes are out-of-domain;
after ``np.random.seed(seed)`` one ``np.random.permutation`` orders the in-domain images (in dataset
order: class-major, sorted file names), its first ``int(val_fraction * n)`` are validation, the next
``int(test_fraction * n)`` test, the rest train; a second permutation from the same global stream
shuffles the OOD images. The caller's global RNG state is restored afterwards.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Split:
    """Index arrays into an ImageSet. Classes ``0 .. n_in_domain - 1`` are in-domain."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    ood: np.ndarray
    n_in_domain: int
    ood_classes: tuple[int, ...]
    seed: int
    val_fraction: float = 0.1
    test_fraction: float = 0.1

    @property
    def sizes(self) -> dict[str, int]:
        return {name: int(len(getattr(self, name))) for name in ("train", "val", "test", "ood")}

    def fingerprint(self) -> str:
        """sha256 over the four index arrays: equal fingerprints mean the very same split."""
        h = hashlib.sha256()
        for name in ("train", "val", "test", "ood"):
            h.update(name.encode())
            h.update(np.ascontiguousarray(getattr(self, name), dtype=np.int64).tobytes())
        return h.hexdigest()

    def to_json(self) -> dict[str, Any]:
        """What a run records: the parameters that regenerate the split, its sizes and fingerprint."""
        return {
            "seed": self.seed,
            "n_in_domain": self.n_in_domain,
            "ood_classes": list(self.ood_classes),
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "sizes": self.sizes,
            "sha256": self.fingerprint(),
        }

    def summary(self) -> str:
        s = self.sizes
        return (
            f"train {s['train']:,} / val {s['val']:,} / test {s['test']:,} in-domain images of "
            f"{self.n_in_domain} classes; {s['ood']:,} OOD images of {len(self.ood_classes)} classes (seed {self.seed})"
        )


def course_split(
    labels: np.ndarray,
    num_classes: int,
    n_ood: int = 10,
    seed: int = 42,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> Split:
    """Split images (by ``labels``, in dataset order) as the course notebook does; see the module doc."""
    labels = np.asarray(labels)
    _check_arguments(labels, num_classes, n_ood, val_fraction, test_fraction)
    n_in_domain = num_classes - n_ood
    in_domain = np.flatnonzero(labels < n_in_domain)
    ood = np.flatnonzero(labels >= n_in_domain)
    n = len(in_domain)
    n_val, n_test = int(val_fraction * n), int(test_fraction * n)

    saved = np.random.get_state()
    try:
        np.random.seed(seed)
        order = np.random.permutation(n)
        ood_order = np.random.permutation(len(ood))
    finally:
        np.random.set_state(saved)

    return Split(
        train=in_domain[order[n_val + n_test:]],
        val=in_domain[order[:n_val]],
        test=in_domain[order[n_val:n_val + n_test]],
        ood=ood[ood_order],
        n_in_domain=n_in_domain,
        ood_classes=tuple(range(n_in_domain, num_classes)),
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )


def _check_arguments(
    labels: np.ndarray, num_classes: int, n_ood: int, val_fraction: float, test_fraction: float
) -> None:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), found {labels.min()} .. {labels.max()}")
    if not 0 <= n_ood < num_classes:
        raise ValueError(f"n_ood must be in [0, num_classes={num_classes}) so some classes stay in-domain, got {n_ood}")
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be >= 0 and sum to less than 1"
        )
