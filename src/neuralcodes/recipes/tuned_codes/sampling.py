"""Batches of m images per class, from pytorch-metric-learning's MPerClassSampler, reproducibly.

The sampler draws from a numpy random state of its own module; here it draws from a RandomState
seeded by (run seed, epoch) instead, so an epoch's batches are a pure function of the seed and a
resumed run replays them.
"""
from __future__ import annotations

import numpy as np
from pytorch_metric_learning.samplers import MPerClassSampler
from pytorch_metric_learning.utils import common_functions as pml_common


def m_per_class_order(
    labels: np.ndarray, indices: np.ndarray, m: int, batch_size: int, n_batches: int, seed: int, epoch: int = 0
) -> np.ndarray:
    """``n_batches * batch_size`` image indices (from ``indices``); each consecutive block of ``batch_size``
    holds ``m`` images of each of ``batch_size / m`` distinct classes (``labels`` indexed by image)."""
    indices = np.asarray(indices)
    sub_labels = np.asarray(labels)[indices]
    n_classes = len(np.unique(sub_labels))
    if batch_size % m:
        raise ValueError(f"batch size {batch_size} is not a multiple of m = {m} images per class")
    if n_classes * m < batch_size:
        raise ValueError(
            f"a batch of {batch_size} needs {batch_size // m} classes of {m} images, but the training images hold only "
            f"{n_classes} classes: lower --batch-size to at most {n_classes * m} (or --m-per-class)"
        )
    sampler = MPerClassSampler(sub_labels, m, batch_size=batch_size, length_before_new_iter=n_batches * batch_size)
    saved = pml_common.NUMPY_RANDOM
    pml_common.NUMPY_RANDOM = np.random.RandomState(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    try:
        order = np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))
    finally:
        pml_common.NUMPY_RANDOM = saved
    return indices[order]
