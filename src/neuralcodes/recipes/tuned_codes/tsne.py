"""t-SNE (scikit-learn) of a variant's held-out codes, alone and among in-domain distractors."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


@dataclass
class TsnePair:
    alone: np.ndarray  # (n, 2): held-out codes only
    labels: np.ndarray  # (n,) their classes
    mixed: np.ndarray  # (n + m, 2): the same held-out codes first, then m in-domain distractors


def tsne_pair(
    ood: np.ndarray,
    ood_labels: np.ndarray,
    distractors: np.ndarray,
    n_images: int = 2000,
    n_distractors: int = 2000,
    seed: int = 0,
) -> TsnePair:
    """Embed up to ``n_images`` held-out codes in 2-D, then again with up to ``n_distractors`` distractors."""
    from sklearn.manifold import TSNE  # slow to import; only when figures are drawn
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(ood), size=min(n_images, len(ood)), replace=False))
    extra = np.sort(
        rng.choice(len(distractors), size=min(n_distractors, len(distractors)), replace=False)
    )

    def embed(x: np.ndarray) -> np.ndarray:
        perplexity = float(min(30.0, (len(x) - 1) / 3))
        # Barnes-Hut's OpenMP threads spin-wait: on a busy 2-core machine one thread was 6x faster than two.
        with threadpool_limits(limits=max(1, (os.cpu_count() or 2) // 2)):
            return TSNE(
                n_components=2, init="pca", perplexity=perplexity, random_state=seed
            ).fit_transform(x)

    alone = embed(ood[pick])
    mixed = embed(np.concatenate([ood[pick], distractors[extra]]))
    return TsnePair(alone, np.asarray(ood_labels)[pick], mixed)
