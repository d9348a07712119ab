"""The shared training loop: resume from a batch, the older checkpoint layout, several processes."""

from __future__ import annotations

import signal
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from neuralcodes.learning.checkpoint import load_checkpoint
from neuralcodes.learning.distributed import World
from neuralcodes.learning.interrupt import TrainingInterrupted
from neuralcodes.learning.loop import InEpoch, Loop, fit
from neuralcodes.runs import Run

X = torch.from_numpy(np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32))
Y = (X[:, 0] > 0).long()


def tiny_loop(root: Path, world: World = World(), signal_at: int | None = None, **options) -> Loop:
    """A linear classifier with dropout (global RNG) and input noise (the loop's generator): every random
    stream a resume must restore. ``signal_at``: SIGTERM while that step (1-based, this process) runs."""
    torch.manual_seed(world.rank)  # each process its own dropout masks, as under torchrun
    net = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(6, 2))
    with torch.no_grad():  # the same start on every process (and in every test)
        net[1].weight.copy_(torch.linspace(-1, 1, 12).view(2, 6))
        net[1].bias.zero_()
    model = torch.nn.parallel.DistributedDataParallel(net) if dist.is_initialized() else net
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(7)
    calls = {"n": 0}

    def step(idx: np.ndarray) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == signal_at:
            signal.raise_signal(signal.SIGTERM)
        x = X[idx] + 0.1 * torch.randn(len(idx), 6, generator=generator)
        loss = torch.nn.functional.cross_entropy(model(x), Y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"loss": loss.item()}

    def validate() -> dict[str, float]:
        with torch.no_grad():
            return {"val_loss": torch.nn.functional.cross_entropy(net.eval()(X), Y).item()}

    return Loop(
        Run(root),
        net,
        optimizer,
        generator,
        lambda epoch, g: torch.randperm(32, generator=g).numpy(),
        step,
        validate,
        **{
            "epochs": 2,
            "batch_size": 8,
            "monitor": "val_loss",
            "patience": 5,
            "world": world,
            **options,
        },
    )


def without_times(history: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in history
    ]


def test_in_epoch_reads_the_older_classification_layout():
    old = {
        "epoch": 1,
        "order": np.arange(4),
        "next_batch": 3,
        "loss_sum": 2.5,
        "correct": 7,
        "seen": 24,
        "seconds": 1.5,
    }
    state = InEpoch.from_state(old)
    assert (state.epoch, state.next_batch, state.seen, state.seconds) == (1, 3, 24, 1.5)
    assert state.sums == {"loss_sum": 2.5, "correct": 7} and state.steps == 3  # a step per batch
    today = InEpoch(2, np.arange(3), 1, {"loss": 0.5}, 1, 8, 0.2)
    again = InEpoch.from_state(asdict(today))
    assert (again.epoch, again.next_batch, again.sums, again.steps, again.seen) == (
        2,
        1,
        {"loss": 0.5},
        1,
        8,
    )


def test_sigterm_mid_epoch_then_resume_gives_the_uninterrupted_run(tmp_path):
    straight = fit(tiny_loop(tmp_path / "straight"))
    with pytest.raises(TrainingInterrupted, match="SIGTERM in epoch 2, after batch 2/4"):
        fit(tiny_loop(tmp_path / "cut", signal_at=4 + 2))
    resumed = fit(tiny_loop(tmp_path / "cut"), resume=True)
    a, b = (
        load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt"),
        load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt"),
    )
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # The second epoch's mean loss adds the two batches before the stop to the two after it.
    assert without_times(resumed.history) == without_times(straight.history)
    assert a["world_size"] == 1 and a["ranks"] == [] and a["in_epoch"] is None


def test_without_a_monitor_no_model_is_selected(tmp_path):
    result = fit(tiny_loop(tmp_path / "r", monitor=None))
    run = Run(tmp_path / "r")
    assert not run.best_checkpoint.exists() and result.best_epoch == -1 and not result.stopped_early
    assert [row["epoch"] for row in run.history()] == [
        1,
        2,
    ]  # the default on_epoch writes the history
    assert (
        (run.root / "history.csv")
        .read_text()
        .splitlines()[0]
        .startswith("epoch,train_loss,val_loss,")
    )


def test_resume_refuses_a_checkpoint_of_another_number_of_processes(tmp_path):
    fit(tiny_loop(tmp_path / "r", epochs=1))
    with pytest.raises(
        ValueError, match=r"written by 1 process\(es\); resume it with as many \(this is 2\)"
    ):
        fit(tiny_loop(tmp_path / "r", world=World(0, 2)), resume=True)


def _two_processes(rank: int, root: Path) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{root / 'rendezvous'}", rank=rank, world_size=2
    )
    torch.set_num_threads(1)
    world = World(rank, 2)
    try:
        straight = fit(tiny_loop(root / "straight", world))
        try:  # only the second process is signalled: both must stop after the same batch
            fit(tiny_loop(root / "cut", world, signal_at=4 + 2 if rank == 1 else None))
            raise AssertionError("training went on")
        except TrainingInterrupted as stopped:
            assert "in epoch 2, after batch 2/4" in str(stopped), stopped
        if rank == 0:  # one file: each process's own position and sums (their shards differ)
            state = load_checkpoint(root / "cut" / "checkpoints" / "last.pt")
            mine, other = state["in_epoch"], state["ranks"][0]["in_epoch"]
            assert mine["next_batch"] == other["next_batch"] == 2 and mine["sums"] != other["sums"]
        resumed = fit(tiny_loop(root / "cut", world), resume=True)
        assert without_times(resumed.history) == without_times(straight.history)
    finally:
        # Both processes past their last collective before either tears gloo down: a process that destroyed its
        # group and exited while the other was still saving its checkpoint made the other abort (SIGABRT,
        # "terminate called without an active exception"). Bounded, so a failed assertion cannot hang the test.
        try:
            dist.monitored_barrier(timeout=timedelta(seconds=120))
        finally:
            dist.destroy_process_group()


def test_two_processes_stop_together_and_each_resumes_its_own_state(tmp_path):
    mp.spawn(_two_processes, args=(tmp_path,), nprocs=2, join=True)
    a, b = (
        load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt"),
        load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt"),
    )
    assert b["world_size"] == 2 and len(b["ranks"]) == 1
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # A second process's dropout masks differ from the first's: had it resumed the first's RNG, weights would differ.
    assert not torch.equal(a["rng"]["torch"], a["ranks"][0]["rng"]["torch"])
