"""L2 normalisation of codes, the last step before codes are compared by Euclidean distance.

``l2n`` is ``torch.nn.functional.normalize`` itself (division by ``max(norm, eps)``, so an all-zero
code stays zero instead of becoming NaN); the name stays for code written against it. Numpy arrays
go through :func:`neuralcodes.retrieval.codes.l2_normalize`, which also counts all-zero codes.
"""
from __future__ import annotations

from torch.nn.functional import normalize as l2n

__all__ = ["l2n"]
