"""The index folder on disk, the checks that its parts agree, and every SQL statement of the index.

    INDEX/meta.json        format name and version, code dimension and dtype, model reference, backend
    INDEX/codes.bin        the codes: raw C-order (rows, dim) float32 or float16, memory-mapped; row = image id
    INDEX/metadata.sqlite  images (id, source, path, label, width, height, sha256, added), sources,
                           skipped files, and the state: committed rows, live images, an unfinished job,
                           the generation (moved with each add batch, remove and backend change)
    INDEX/faiss-NAME.index the FAISS index of a FAISS backend (its ntotal equals the committed rows); one
                           file per backend name, so switching backends never leaves a file meta.json misnames
    INDEX/report.csv       skipped and duplicate files with the reason, rewritten after every build/add
    INDEX/shards/          only while a sharded build runs: its parts, merged into the files above (:mod:`neuralcodes.index.shards`)

SQLite is the commit point. A batch of images is committed by writing its codes past the committed
rows of codes.bin (fsync'd), then one SQLite transaction that inserts the images and moves the row
count. A process killed in between leaves bytes past the committed rows, which the next run of the
job truncates away; nothing committed is ever rewritten. Removed images leave their row in
codes.bin (ids stay stable for links and for the FAISS index); searches skip them.

This package is the one place that speaks SQL: :mod:`.database` (metadata.sqlite, the queries of
:class:`Store`), :mod:`.shard_files` (a shard's files.sqlite); :mod:`.folder` is the rest of the folder.
Every other module asks by name (``store.records(ids)``, ``store.insert_images(rows)``, ...).
"""

from neuralcodes.index.store.database import Database, ImageFile, ImageRow, NewImage
from neuralcodes.index.store.folder import (
    CODES,
    DATABASE,
    DTYPES,
    FORMAT,
    LOCK,
    META,
    REPORT,
    SHARDS,
    VERSION,
    IndexDamagedError,
    Meta,
    Store,
    faiss_path,
)
from neuralcodes.index.store.shard_files import (
    SHARD_FILES,
    ShardFile,
    ShardFiles,
    ShardFilesUnreadable,
    committed_files,
)

__all__ = [
    "CODES",
    "DATABASE",
    "DTYPES",
    "FORMAT",
    "LOCK",
    "META",
    "REPORT",
    "SHARDS",
    "SHARD_FILES",
    "VERSION",
    "Database",
    "ImageFile",
    "ImageRow",
    "IndexDamagedError",
    "Meta",
    "NewImage",
    "ShardFile",
    "ShardFiles",
    "ShardFilesUnreadable",
    "Store",
    "committed_files",
    "faiss_path",
]
