"""What multi-scale and flipped codes cost: ms per image of ``extract_codes`` for each set of views,
as a ratio to the single view measured in the same run (the floor: one forward pass per image).

    python benchmarks/bench_views.py --images 1000            # the course ConvNet, L5+L6+L7, fp32
    python benchmarks/bench_views.py --images 50 --repeats 1  # a quick check of the script

Run it on an idle machine: the ratios, not the absolute figures, carry over between machines.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from neuralcodes.data.batches import DeviceImages
from neuralcodes.device import describe_machine
from neuralcodes.models.convnet import NeuralCodesConvNet
from neuralcodes.retrieval.codes import extract_codes

VIEWS = {
    "1 scale": ((1.0,), False),
    "1 scale + flip": ((1.0,), True),
    "3 scales (1, 1/sqrt2, sqrt2)": ((1.0, 2**-0.5, 2**0.5), False),
    "3 scales + flip": ((1.0, 2**-0.5, 2**0.5), True),
}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--repeats", type=int, default=3, help="best of this many passes")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args()
    torch.manual_seed(0)
    model = NeuralCodesConvNet(190, batch_norm=True).eval().to(memory_format=torch.channels_last)
    pixels = np.random.default_rng(0).integers(0, 256, (args.images, 64, 64, 3), dtype=np.uint8)
    images, idx = DeviceImages(pixels, "cpu"), np.arange(args.images)
    extract_codes(model, images, idx[: args.batch], ["L5", "L6", "L7"], args.batch)  # warm-up
    rows = {}
    for name, (scales, flip) in VIEWS.items():
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            extract_codes(
                model, images, idx, ["L5", "L6", "L7"], args.batch, scales=scales, flip=flip
            )
            best = min(best, time.perf_counter() - t)
        rows[name] = {
            "views": len(scales) * (2 if flip else 1),
            "ms_per_image": 1000 * best / args.images,
        }
    floor = rows["1 scale"]["ms_per_image"]
    print(
        f"{platform.processor() or describe_machine().get('cpu', '')}, torch threads {torch.get_num_threads()}"
    )
    print(f"{'views':32s} {'ms/image':>9s} {'x 1 view':>9s}")
    for name, row in rows.items():
        row["ratio"] = row["ms_per_image"] / floor
        print(f"{name:32s} {row['ms_per_image']:9.2f} {row['ratio']:9.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"machine": describe_machine(), "images": args.images, "rows": rows}, f, indent=2
            )


if __name__ == "__main__":
    main()
