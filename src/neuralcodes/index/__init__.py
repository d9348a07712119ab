"""Search your own images: a persistent index of codes, built once from a folder and a model.

    neuralcodes index build INDEX --model RUN|imagenet --images DIR     (resumable; bad files skipped and listed)
    neuralcodes index build INDEX ... --shard K/N                        (one of N processes; the last merges)
    neuralcodes index add INDEX DIR / remove INDEX PATH... / info INDEX / backend INDEX NAME
    neuralcodes search INDEX IMAGE... [-k 10] [--json] [--figure out.png] [--rerank STEP --shortlist 100]

Modules: :mod:`.store` (the folder format, its checks, and every SQL statement), :mod:`.models` (the model registry),
:mod:`.collection` (folders, data sources, safe decoding), :mod:`.ingest` (build/add: options, folders, listing),
:mod:`.job` (a build's or an add's batches, resumable), :mod:`.backends` (exact and FAISS search),
:mod:`.index` (:class:`Index`), :mod:`.snapshot` (what an open index searches, followed while other
processes add, remove or switch the backend), :mod:`.queries` (query images and codes), :mod:`.figure`,
:mod:`.shard_build` and :mod:`.shards` (a build split over processes and machines, and the merge),
:mod:`.reranked` (search results re-ranked on each query's shortlist).
"""

from neuralcodes.index.index import Hit, Index, SearchResults
from neuralcodes.index.ingest import add_images, build_index
from neuralcodes.index.job import IngestSummary
from neuralcodes.index.queries import BadQueryImage
from neuralcodes.index.shard_build import ShardSummary, build_shard
from neuralcodes.index.shards import merge_shards
from neuralcodes.index.store import IndexDamagedError

__all__ = [
    "BadQueryImage",
    "Hit",
    "Index",
    "IndexDamagedError",
    "IngestSummary",
    "SearchResults",
    "ShardSummary",
    "add_images",
    "build_index",
    "build_shard",
    "merge_shards",
]
