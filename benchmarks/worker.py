"""One measurement in a fresh process: ``python -m benchmarks.worker TASK 'JSON keyword arguments'``.

TensorFlow and PyTorch each start their own thread pools; running every measurement in its own process
keeps one library's threads, allocator and warm caches out of the other's figures. The result is the
last line of stdout, as JSON.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any


def task(name: str) -> Callable[..., dict[str, Any]]:
    if name.startswith("keras_"):
        from benchmarks import reference_keras

        return {
            "keras_train": reference_keras.train_throughput,
            "keras_infer": reference_keras.infer_throughput,
        }[name]
    from benchmarks import ours

    return {
        "ours_train_step": ours.train_step,
        "ours_train_loop": ours.train_loop,
        "ours_whole_epoch": ours.whole_epoch,
        "ours_infer": ours.infer,
    }[name]


TASKS = (
    "keras_train",
    "keras_infer",
    "ours_train_step",
    "ours_train_loop",
    "ours_whole_epoch",
    "ours_infer",
)


def set_threads(task: str, threads: int) -> None:
    """The same number of compute threads for both libraries (before either starts its pool)."""
    if task.startswith("keras_"):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    else:
        import torch

        torch.set_num_threads(threads)


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] not in TASKS:
        raise SystemExit(
            f"usage: python -m benchmarks.worker {{{','.join(TASKS)}}} '{{json kwargs}}'"
        )
    os.environ["NEURALCODES_NO_PROGRESS"] = "1"
    kwargs = json.loads(argv[1])
    threads = kwargs.pop("threads", None)
    if threads:
        set_threads(argv[0], int(threads))
    result = task(argv[0])(**kwargs)
    result["threads"] = threads or result.get("threads")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
