"""Where the training time goes: operators of the real loop, and the phases of a whole epoch.

    python -m benchmarks.profile_loop [--steps 4] [--batch 100] [--epoch-images 1000] [--out profile.txt]

(1) torch.profiler over ``--steps`` batches of the real loop (step + ``run_epoch``) (after warm-up): the operators with
    the most self CPU time, so the step (convolutions, fc6, Adam) and the loop's own work (batch
    formation, augmentation, bookkeeping) can be told apart;
(2) cProfile of ``train_classifier`` for one epoch on a synthetic set: the loop beside validation,
    checkpoint writes, history/figure writes and preparation.
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import tempfile
from pathlib import Path

import numpy as np
import torch

PHASES = (
    r"neuralcodes/(recipes|learning/checkpoint|io|plots|data/batches|progress)|torch/serialization"
    r"|torch/_tensor.py.*backward|torch/optim/optimizer.py.*wrapper|torch/nn/modules/module.py.*_call_impl"
)


def operator_profile(steps: int, batch: int, augment: bool, rows: int = 18) -> str:
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.ours import NUM_CLASSES, _model, random_images, train_epoch
    from neuralcodes.data.batches import DeviceImages
    from neuralcodes.learning.optimizers import build_optimizer
    from neuralcodes.recipes.neural_codes.config import ClassifyConfig

    from neuralcodes.learning.loop import InEpoch as EpochState

    train_one_epoch = train_epoch
    images = DeviceImages(random_images((steps + 2) * batch), "cpu")
    labels = np.random.default_rng(0).integers(0, NUM_CLASSES, len(images))
    model = _model(NUM_CLASSES, True, 0)
    optimizer = build_optimizer("adam_amsgrad", model.parameters(), 1e-4)
    cfg = ClassifyConfig(batch_size=batch, epochs=1, augment=augment, device="cpu")
    generator = torch.Generator().manual_seed(0)
    train_one_epoch(
        model,
        optimizer,
        images,
        labels,
        EpochState(0, np.arange(steps * batch, len(images))),
        cfg,
        generator,
    )
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_one_epoch(
            model,
            optimizer,
            images,
            labels,
            EpochState(0, np.arange(steps * batch)),
            cfg,
            generator,
        )
    table = prof.key_averages().table(
        sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48
    )
    return (
        f"(1) operators of the real loop, {steps} batches of {batch}, augment={augment}, torch threads "
        f"{torch.get_num_threads()}:\n{table}"
    )


def epoch_profile(epoch_images: int, batch: int, rows: int = 30) -> str:
    from benchmarks.ours import whole_epoch

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "epoch.prof")
        figures = whole_epoch(epoch_images, batch, profile_to=path)
        buffer = io.StringIO()
        stats = pstats.Stats(path, stream=buffer)
        # The phases: the recipe's own functions, forward / backward / optimiser step, batch formation, the
        # progress bar, checkpoint writes, figure writes.
        stats.sort_stats("cumulative").print_stats(PHASES, rows)
    text = buffer.getvalue()
    text = text[text.find("   ncalls") :] if "   ncalls" in text else text
    return (
        f"(2) cProfile of train_classifier, 1 epoch, {figures['train_images']} training images of batch {batch}: "
        f"{figures['seconds']:.1f} s in all, {figures['loop_seconds']:.1f} s in the training loop; "
        f"checkpoints written: {figures['checkpoint_mib']:.0f} MiB\n{text}"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--epoch-images", type=int, default=1000)
    p.add_argument("--augment", action="store_true", help="profile the loop with augmentation on")
    p.add_argument("--out", type=Path, default=None, help="also write the text here")
    args = p.parse_args(argv)
    os.environ["NEURALCODES_NO_PROGRESS"] = "1"
    text = f"load average at start: {os.getloadavg()}\n\n"
    text += operator_profile(args.steps, args.batch, args.augment) + "\n"
    text += epoch_profile(args.epoch_images, args.batch)
    text += f"\nload average at end: {os.getloadavg()}\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
