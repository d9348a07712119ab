"""Training throughput of the course ConvNet: plain fp32 against channels-last + bf16 autocast.

    python benchmarks/bench_train.py [--steps 6] [--batch-size 100] [--device cpu]

Prints images/s per setting and the ratio to the fp32 baseline measured in the same run, and the
projected time of one epoch over the 76,000 in-domain training images.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from neuralcodes.device import autocast, pick_device
from neuralcodes.models.convnet import NeuralCodesConvNet

TRAIN_IMAGES = 76_000


def throughput(device: torch.device, channels_last: bool, bf16: bool, steps: int, batch: int) -> float:
    torch.manual_seed(0)
    model = NeuralCodesConvNet(190).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True)
    x = torch.rand(batch, 3, 64, 64, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 190, (batch,), device=device)

    def step() -> None:
        with autocast(device, bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up: allocator, kernels selection
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = pick_device(args.device)
    settings = [("fp32 (baseline)", False, False), ("channels-last", True, False), ("channels-last + bf16", True, True)]
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch_size}")
    print(f"{'setting':<24}{'images/s':>10}{'ratio':>8}{'epoch (76k)':>14}")
    base = None
    for name, cl, bf16 in settings:
        rate = throughput(device, cl, bf16, args.steps, args.batch_size)
        base = base or rate
        print(f"{name:<24}{rate:>10.1f}{rate / base:>8.2f}{TRAIN_IMAGES / rate / 60:>11.1f} min")


if __name__ == "__main__":
    main()
