"""The course split: in-domain train / val / test, and held-out out-of-domain (OOD) classes.

Reproduces the reference notebook draw for draw: the last ``n_ood`` classes are out-of-domain;
after ``np.random.seed(seed)`` one ``np.random.permutation`` orders the in-domain images (in dataset
order: class-major, sorted file names), its first ``int(val_fraction * n)`` are validation, the next
``int(test_fraction * n)`` test, the rest train; a second permutation from the same global stream
shuffles the OOD images. The caller's global RNG state is restored afterwards.

``ood_classes`` chooses the held-out classes explicitly instead (the draws stay the same, over the
other classes); :func:`class_indices` turns folder names, wnids or class names into those indices.

``n_val_classes`` sets aside that many in-domain classes as a *class-disjoint validation* set: the
network never trains on them, and model selection (epochs, learning rate, whitening, re-ranking) reads
their leave-one-out retrieval instead of the held-out classes, which stay unread until the final
evaluation. They are drawn from their own seeded stream, so the course's draws are untouched; with the
default 0 the split is the course's, draw for draw.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

DEFAULT_N_OOD = 10


@dataclass(frozen=True, eq=False)
class Split:
    """Index arrays into an ImageSet, and which classes are held out.

    With the default held-out classes (the last ``n_ood``) the in-domain classes are
    ``0 .. n_in_domain - 1``; with explicit ones use :meth:`in_domain_labels` to number the
    in-domain classes ``0 .. n_in_domain - 1`` for a classifier.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    ood: np.ndarray
    n_in_domain: int
    ood_classes: tuple[int, ...]
    seed: int
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    # Class-disjoint validation: classes left out of training, and the images of theirs that are scored.
    val_classes: tuple[int, ...] = ()
    val_retrieval: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @property
    def num_classes(self) -> int:
        return self.n_in_domain + len(self.ood_classes) + len(self.val_classes)

    @property
    def in_domain_classes(self) -> tuple[int, ...]:
        left_out = set(self.ood_classes) | set(self.val_classes)
        return tuple(c for c in range(self.num_classes) if c not in left_out)

    @property
    def ood_chosen(self) -> bool:
        """Whether the held-out classes differ from the course's default (the last ``n_ood``)."""
        return self.ood_classes != tuple(
            range(self.num_classes - len(self.ood_classes), self.num_classes)
        )

    def in_domain_labels(self, labels: np.ndarray) -> np.ndarray:
        """``labels`` renumbered so the in-domain classes are ``0 .. n_in_domain - 1`` (in class order);
        held-out classes become -1. The identity on in-domain labels for the default split."""
        labels = np.asarray(labels)
        mapping = np.full(self.num_classes, -1, dtype=np.int64)
        mapping[list(self.in_domain_classes)] = np.arange(self.n_in_domain)
        return mapping[labels]

    @property
    def sizes(self) -> dict[str, int]:
        names = ("train", "val", "test", "ood", *(("val_retrieval",) if self.val_classes else ()))
        return {name: int(len(getattr(self, name))) for name in names}

    def fingerprint(self) -> str:
        """sha256 over the index arrays: equal fingerprints mean the very same split."""
        h = hashlib.sha256()
        # The class-disjoint set enters only when there is one, so the course split keeps its recorded fingerprint.
        for name in (
            "train",
            "val",
            "test",
            "ood",
            *(("val_retrieval",) if self.val_classes else ()),
        ):
            h.update(name.encode())
            h.update(np.ascontiguousarray(getattr(self, name), dtype=np.int64).tobytes())
        return h.hexdigest()

    def to_json(self) -> dict[str, Any]:
        """What a run records: the parameters that regenerate the split, its sizes and fingerprint."""
        return {
            "seed": self.seed,
            "n_in_domain": self.n_in_domain,
            "ood_classes": list(self.ood_classes),
            "ood_chosen": self.ood_chosen,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            **({"val_classes": list(self.val_classes)} if self.val_classes else {}),
            "sizes": self.sizes,
            "sha256": self.fingerprint(),
        }

    def summary(self) -> str:
        s = self.sizes
        disjoint = (
            f"; class-disjoint validation: {s['val_retrieval']:,} images of {len(self.val_classes)} classes"
            if self.val_classes
            else ""
        )
        return (
            f"train {s['train']:,} / val {s['val']:,} / test {s['test']:,} in-domain images of "
            f"{self.n_in_domain} classes; {s['ood']:,} OOD images of {len(self.ood_classes)} classes (seed {self.seed}){disjoint}"
        )


def course_split(
    labels: np.ndarray,
    num_classes: int,
    n_ood: int | None = None,
    seed: int = 42,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    ood_classes: Sequence[int] | None = None,
    n_val_classes: int = 0,
    val_class_images: int | None = None,
) -> Split:
    """Split images (by ``labels``, in dataset order) as the course notebook does; see the module doc.

    ``ood_classes``: the held-out class indices (default: the last ``n_ood``, 10 unless given).
    Passing both requires ``n_ood == len(ood_classes)``. ``n_val_classes``: in-domain classes set
    aside for class-disjoint validation, of which at most ``val_class_images`` images a class
    (default: all) are scored.
    """
    labels = np.asarray(labels)
    _check_arguments(labels, num_classes, val_fraction, test_fraction)
    held_out = _held_out_classes(num_classes, n_ood, ood_classes)
    val_classes, val_retrieval = _disjoint_validation(
        labels, num_classes, held_out, n_val_classes, val_class_images, seed
    )
    is_ood = np.isin(labels, held_out)
    in_domain = np.flatnonzero(~is_ood & ~np.isin(labels, val_classes))
    ood = np.flatnonzero(is_ood)
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
        train=in_domain[order[n_val + n_test :]],
        val=in_domain[order[:n_val]],
        test=in_domain[order[n_val : n_val + n_test]],
        ood=ood[ood_order],
        n_in_domain=num_classes - len(held_out) - len(val_classes),
        ood_classes=held_out,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        val_classes=val_classes,
        val_retrieval=val_retrieval,
    )


def _disjoint_validation(
    labels: np.ndarray,
    num_classes: int,
    held_out: tuple[int, ...],
    n: int,
    per_class: int | None,
    seed: int,
) -> tuple[tuple[int, ...], np.ndarray]:
    """The class-disjoint validation classes and the images scored of them, from a stream of their own."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(
            f"n_val_classes must be a non-negative integer, got {n!r} (option --n-val-classes)"
        )
    if per_class is not None and (
        isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 2
    ):
        raise ValueError(
            f"val_class_images must be an integer >= 2 (leave-one-out needs two a class), got {per_class!r}"
        )
    candidates = np.setdiff1d(np.arange(num_classes), held_out)
    if n == 0:
        return (), np.empty(0, dtype=np.int64)
    if n >= len(candidates):
        raise ValueError(
            f"n_val_classes={n} leaves no class to train on ({len(candidates)} in-domain classes)"
        )
    rng = np.random.default_rng(
        [seed, 0x5EED]
    )  # not the course's global stream: its draws stay the same
    chosen = np.sort(rng.choice(candidates, size=n, replace=False))
    picked = []
    for c in chosen:
        images = np.flatnonzero(labels == c)
        picked.append(np.sort(rng.permutation(images)[:per_class]) if per_class else images)
    return tuple(int(c) for c in chosen), np.concatenate(picked).astype(np.int64)


def _held_out_classes(
    num_classes: int, n_ood: int | None, ood_classes: Sequence[int] | None
) -> tuple[int, ...]:
    if ood_classes is None:
        n_ood = DEFAULT_N_OOD if n_ood is None else n_ood
        if (
            isinstance(n_ood, bool)
            or not isinstance(n_ood, (int, np.integer))
            or not 0 <= n_ood < num_classes
        ):
            raise ValueError(
                f"n_ood must be an integer in [0, num_classes={num_classes}) so some classes stay in-domain, got {n_ood!r}"
            )
        return tuple(range(num_classes - n_ood, num_classes))
    if isinstance(ood_classes, (str, bytes)):
        raise ValueError(
            f"ood_classes must be class indices; turn names into indices with class_indices(), got {ood_classes!r}"
        )
    chosen = [
        int(c) for c in ood_classes if isinstance(c, (int, np.integer)) and not isinstance(c, bool)
    ]
    if len(chosen) != len(ood_classes):
        raise ValueError(
            f"ood_classes must be integer class indices (use class_indices() for names), got {list(ood_classes)!r}"
        )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"ood_classes names a class twice: {sorted(chosen)}")
    outside = [c for c in chosen if not 0 <= c < num_classes]
    if outside:
        raise ValueError(
            f"ood_classes {outside} lie outside [0, {num_classes}) (the dataset's classes)"
        )
    if not 0 < len(chosen) < num_classes:
        raise ValueError(
            f"ood_classes must hold 1 to {num_classes - 1} classes so some stay in-domain, got {len(chosen)}"
        )
    if n_ood is not None and n_ood != len(chosen):
        raise ValueError(
            f"n_ood={n_ood} disagrees with the {len(chosen)} ood_classes given; pass one or make them agree"
        )
    return tuple(sorted(chosen))


def class_indices(
    names: Sequence[str], class_ids: Sequence[str], class_names: Sequence[str] = ()
) -> list[int]:
    """Class indices for ``names``, each a class id (folder name or wnid, e.g. ``n07871810``) or a
    class name (e.g. ``meat loaf``, case-insensitive), for ``course_split(ood_classes=...)``.

    An unknown or ambiguous name raises ``ValueError`` saying what was not found and what is close.
    """
    if isinstance(names, str):
        names = [part for part in names.split(",") if part.strip()]
    by_id = {cid: i for i, cid in enumerate(class_ids)}
    by_name: dict[str, list[int]] = {}
    for i, name in enumerate(class_names):
        by_name.setdefault(name.strip().lower(), []).append(i)
    indices = []
    for raw in names:
        name = raw.strip()
        if name in by_id:
            indices.append(by_id[name])
            continue
        matches = by_name.get(name.lower(), [])
        if len(matches) == 1:
            indices.append(matches[0])
            continue
        if len(matches) > 1:
            raise ValueError(
                f"class name {name!r} is shared by classes {[class_ids[i] for i in matches]}; name one of them by its id"
            )
        close = difflib.get_close_matches(name, [*class_ids, *class_names], n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"unknown class {name!r}: not a class id (folder name or wnid) or class name of this dataset "
            f"({len(class_ids)} classes, e.g. {class_ids[0]!r}{f' = {class_names[0]!r}' if class_names else ''}){hint}"
        )
    if len(set(indices)) != len(indices):
        raise ValueError(f"{list(names)} names the same class more than once")
    return indices


def _check_arguments(
    labels: np.ndarray, num_classes: int, val_fraction: float, test_fraction: float
) -> None:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), found {labels.min()} .. {labels.max()}"
        )
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be >= 0 and sum to less than 1"
        )
