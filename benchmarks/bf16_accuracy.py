"""Does bf16 autocast change accuracy? A short run on the embedded sample, fp32 against bf16, a few seeds.

    python -m benchmarks.bf16_accuracy [--epochs 3] [--seeds 0 1] [--json bf16.json]

Each (seed, precision) trains ``train_classifier`` for ``--epochs`` epochs with early stopping off, then
measures the last weights on the validation and test images in the precision it trained in. The verdict
compares the bf16 - fp32 differences (paired by seed) with the seed-to-seed spread of fp32 itself.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def train_and_measure(
    dataset: Any, seed: int, bf16: bool, epochs: int, root: Path
) -> dict[str, Any]:
    from benchmarks.ours import recipe_loop
    from neuralcodes.data.batches import DeviceImages
    from neuralcodes.recipes.neural_codes.config import ClassifyConfig
    from neuralcodes.recipes.neural_codes.train import (
        load_trained,
        make_split,
        train_classifier,
    )
    from neuralcodes.runs import Run

    (evaluate_classifier,) = recipe_loop("evaluate_classifier")

    cfg = ClassifyConfig(epochs=epochs, patience=epochs, bf16=bf16, seed=seed, device="cpu")
    out = root / f"seed{seed}-{'bf16' if bf16 else 'fp32'}"
    start = time.perf_counter()
    train_classifier(cfg, out, dataset=dataset)
    seconds = time.perf_counter() - start
    run = Run(out)
    model, _ = load_trained(run, "cpu", which="last")
    split = make_split(cfg, dataset)
    images = DeviceImages(dataset.train.images, "cpu")
    labels = split.in_domain_labels(dataset.train.labels)
    val = evaluate_classifier(model, images, labels, split.val, cfg.eval_batch_size, bf16)
    test = evaluate_classifier(model, images, labels, split.test, cfg.eval_batch_size, bf16)
    return {
        "seed": seed,
        "precision": "bf16" if bf16 else "fp32",
        "epochs": epochs,
        "seconds": seconds,
        "train_loss": run.history()[-1]["train_loss"],
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        "test_accuracy": test["accuracy"],
        "test_top5": test["top5"],
        "train_images_per_s": float(np.mean([h["images_per_s"] for h in run.history()])),
    }


def verdict(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Paired bf16 - fp32 differences against the seed-to-seed spread of fp32."""
    by = {(r["seed"], r["precision"]): r for r in results}
    seeds = sorted(
        {r["seed"] for r in results if (r["seed"], "fp32") in by and (r["seed"], "bf16") in by}
    )
    summary: dict[str, Any] = {"seeds": seeds}
    for metric in ("val_loss", "val_accuracy", "test_accuracy"):
        diffs = [by[s, "bf16"][metric] - by[s, "fp32"][metric] for s in seeds]
        fp32 = [by[s, "fp32"][metric] for s in seeds]
        spread = float(np.std(fp32, ddof=1)) if len(fp32) > 1 else None
        summary[metric] = {
            "bf16_minus_fp32": diffs,
            "mean_difference": float(np.mean(diffs)) if diffs else None,
            "fp32_seed_std": spread,
        }
    acc = summary["test_accuracy"]
    if acc["fp32_seed_std"] is not None and acc["mean_difference"] is not None:
        # Within noise: the mean paired difference is at most two seed-to-seed standard deviations of fp32.
        summary["within_noise"] = abs(acc["mean_difference"]) <= 2 * max(
            acc["fp32_seed_std"], 1e-12
        )
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    os.environ.setdefault("NEURALCODES_NO_PROGRESS", "1")
    from neuralcodes.data.sources import load_dataset

    dataset = load_dataset("sample")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for bf16 in (False, True):
                results.append(train_and_measure(dataset, seed, bf16, args.epochs, Path(tmp)))
                r = results[-1]
                print(
                    f"seed {seed} {r['precision']}: val loss {r['val_loss']:.4f} acc {r['val_accuracy']:.3f} | "
                    f"test acc {r['test_accuracy']:.3f} top5 {r['test_top5']:.3f} | {r['seconds']:.0f} s",
                    flush=True,
                )
    out = {
        "dataset": "embedded sample",
        "load_average": os.getloadavg(),
        "runs": results,
        "summary": verdict(results),
    }
    print(json.dumps(out["summary"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
