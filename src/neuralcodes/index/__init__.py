"""Search your own images: a persistent index of codes, built once from a folder and a model.

    neuralcodes index build INDEX --model RUN|imagenet --images DIR     (resumable; bad files skipped and listed)
    neuralcodes index add INDEX DIR / remove INDEX PATH... / info INDEX / backend INDEX NAME
    neuralcodes search INDEX IMAGE... [-k 10] [--json] [--figure out.png]

Modules: :mod:`.store` (the folder format and its checks), :mod:`.models` (the model registry),
:mod:`.collection` (folders, data sources, safe decoding), :mod:`.ingest` (resumable build/add),
:mod:`.backends` (exact and FAISS search), :mod:`.index` (:class:`Index`), :mod:`.figure`.
"""
from neuralcodes.index.index import Hit, Index, SearchResults
from neuralcodes.index.ingest import IngestSummary, add_images, build_index
from neuralcodes.index.store import IndexDamagedError

__all__ = ["Hit", "Index", "IndexDamagedError", "IngestSummary", "SearchResults", "add_images", "build_index"]
