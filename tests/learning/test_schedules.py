"""Learning-rate schedules: the rates an optimiser sees, step by step, against the formulas written out here."""

import math

import pytest
import torch

from neuralcodes.learning.schedules import build_schedule


def rates(name: str, total: int, warmup: int, base: float = 0.1) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    schedule = build_schedule(name, opt, total, warmup)
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])  # the rate this step trains with
        opt.step()
        schedule.step()
    return seen


def test_cosine_warms_up_linearly_then_follows_half_a_cosine_to_zero():
    total, warmup, base = 20, 4, 0.1
    expected = [base * (s + 1) / warmup for s in range(warmup)]
    expected += [
        base * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
        for s in range(warmup, total)
    ]
    assert rates("cosine", total, warmup, base) == pytest.approx(expected, rel=1e-12)
    assert rates("cosine", total, 0, base)[0] == pytest.approx(
        base
    )  # no warm-up: the full rate at once


def test_constant_only_warms_up():
    assert rates("constant", 6, 3, 0.3) == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3, 0.3])


def test_a_resumed_schedule_continues_the_same_curve():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = build_schedule("cosine", opt, 10, 2)
    for _ in range(5):
        opt.step()
        schedule.step()
    state, opt_state = schedule.state_dict(), opt.state_dict()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule2 = build_schedule("cosine", opt2, 10, 2)
    opt2.load_state_dict(opt_state)
    schedule2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == pytest.approx(rates("cosine", 10, 2)[5])


@pytest.mark.parametrize(
    "args, match",
    [
        (("linear", 10, 0), "unknown schedule"),
        (("cosine", 0, 0), "total_steps"),
        (("cosine", 10, 11), "warmup_steps"),
    ],
)
def test_bad_schedules_are_named(args, match):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=match):
        build_schedule(args[0], opt, args[1], args[2])
