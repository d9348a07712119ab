"""Training throughput of the course ConvNet: now a section of ``python -m benchmarks``.

    python benchmarks/bench_train.py [options of python -m benchmarks]

runs ``python -m benchmarks --sections train,loop`` (Keras reference, the bare step in bf16/fp32, the
recipe's real loop), so the two never measure differently.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.__main__ import main

    raise SystemExit(main(["--sections", "train,loop", *sys.argv[1:]]))
