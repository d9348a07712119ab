import math

import pytest

from neuralcodes.learning.early_stopping import EarlyStopping


def run(losses, patience):
    stopper = EarlyStopping(patience)
    seen = []
    for epoch, loss in enumerate(losses, start=1):
        seen.append(epoch)
        stopper.step(epoch, loss)
        if stopper.stopped:
            break
    return stopper, seen


def test_patience_zero_stops_at_the_first_rise_and_keeps_the_best_epoch():
    stopper, seen = run([2.0, 1.5, 1.2, 1.3, 1.0], patience=0)
    assert seen == [1, 2, 3, 4]
    assert stopper.best_epoch == 3 and stopper.best == 1.2


def test_patience_allows_that_many_bad_epochs():
    # Two bad epochs (3, 4) are tolerated; after the best at 5, the third bad epoch (8) stops.
    stopper, seen = run([2.0, 1.5, 1.6, 1.55, 1.4, 1.45, 1.5, 1.7, 1.0], patience=2)
    assert seen == [1, 2, 3, 4, 5, 6, 7, 8]
    assert stopper.stopped and stopper.best_epoch == 5


def test_equal_loss_is_not_an_improvement():
    stopper, seen = run([1.0, 1.0], patience=0)
    assert seen == [1, 2] and stopper.best_epoch == 1


def test_never_rising_never_stops():
    stopper, seen = run([5, 4, 3, 2, 1], patience=0)
    assert not stopper.stopped and stopper.best_epoch == 5


def test_nan_loss_stops_without_becoming_best():
    stopper, seen = run([1.0, math.nan, 0.5], patience=3)
    assert seen == [1, 2] and stopper.best_epoch == 1


def test_state_round_trip_and_validation():
    stopper, _ = run([3.0, 2.0, 2.5], patience=1)
    again = EarlyStopping.from_state(stopper.state_dict())
    assert again == stopper
    again.step(4, 2.6)
    assert again.stopped
    with pytest.raises(ValueError):
        EarlyStopping(-1)
