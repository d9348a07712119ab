import numpy as np
import pytest

from neuralcodes import io


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path):
    target = tmp_path / "result.json"
    io.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert io.read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_round_trips(tmp_path):
    io.write_json(
        tmp_path / "x.json", {"n": np.int64(3), "f": np.float32(0.5), "arr": np.arange(3)}
    )
    assert io.read_json(tmp_path / "x.json") == {"n": 3, "f": 0.5, "arr": [0, 1, 2]}
    a = np.random.default_rng(0).random((4, 3))
    io.save_npy(tmp_path / "a.npy", a)
    assert np.array_equal(np.load(tmp_path / "a.npy"), a)
    io.save_npz(tmp_path / "b.npz", a=a, b=a * 2)
    with np.load(tmp_path / "b.npz") as z:
        assert np.array_equal(z["b"], a * 2)


def test_csv_columns_are_the_keys_of_every_row(tmp_path):
    # A history's epoch 0 holds only validation scores: the training columns of later rows must stay.
    io.write_csv(
        tmp_path / "h.csv", [{"epoch": 0, "val": 0.5}, {"epoch": 1, "loss": 0.25, "val": 0.625}]
    )
    assert (tmp_path / "h.csv").read_text().splitlines() == [
        "epoch,val,loss",
        "0,0.5,",
        "1,0.625,0.25",
    ]
