"""The benchmark harness (`python -m benchmarks`) runs, writes its JSON, and skips Keras cleanly without TensorFlow."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HAS_TENSORFLOW = (
    importlib.util.find_spec("tensorflow") is not None
    and importlib.util.find_spec("keras") is not None
)
needs_tensorflow = pytest.mark.skipif(
    not HAS_TENSORFLOW, reason='TensorFlow not installed (pip install -e ".[bench]")'
)


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    import benchmarks.__main__ as bench

    return bench


def test_harness_runs_one_step_writes_json_and_skips_keras_without_tensorflow(
    bench, tmp_path, monkeypatch, capsys
):
    # A None entry in sys.modules makes `import tensorflow` raise ImportError, as on a machine without it.
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    monkeypatch.setitem(sys.modules, "keras", None)
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    assert (
        bench.main(
            [
                "--quick",
                "--in-process",
                "--sections",
                "train,loop,infer,map",
                "--json",
                str(out),
                "--markdown",
                str(md),
            ]
        )
        == 0
    )

    result = json.loads(out.read_text())
    assert ".[bench]" in result["keras_skipped"]
    printed = capsys.readouterr().out
    assert "Keras column skipped" in printed and ".[bench]" in printed
    train_rows = {
        "ours_step_bf16",
        "ours_step_fp32",
        "ours_step_fused",
        "ours_loop",
        "ours_loop_augment",
        "ours_loop_bar",
    }
    for section, ours in (("train", train_rows), ("infer", {"ours_bf16", "ours_fp32"})):
        rows = {r["key"]: r for r in result[section]}
        assert rows["keras"]["skipped"] and rows["keras"]["images_per_s"] is None
        assert set(rows) == ours | {"keras"}
        for key in ours:
            assert rows[key]["images_per_s"] > 0 and math.isfinite(rows[key]["images_per_s"]), key
            assert len(rows[key]["samples"]) == 1  # --quick: one run of one step
    assert all(
        check["ratio"] is None and check["met"] is None for check in result["goals"].values()
    )
    assert [m["key"] for m in result["map"]] == ["reference", "ours", "floor"]
    assert 0 < result["map"][1]["mAP"] <= 1 and result["map"][2]["mAP"] is None
    assert len(result["load_average"]["start"]) == 3
    assert "| ours, real loop (step + run_epoch), bf16 |" in md.read_text()


def test_ratios_and_goals_from_a_hand_made_result(bench):
    from benchmarks import report

    def row(key, rate):
        return {"key": key, "images_per_s": rate, "skipped": None}

    result = {
        "train": [row("keras", 50.0), row("ours_step_bf16", 65.0), row("ours_loop", 60.0)],
        "infer": [row("keras", 200.0), row("ours_bf16", 190.0)],
    }
    assert report.ratios(result) == {
        "train.ours_step_bf16": 1.3,
        "train.ours_loop": 1.2,
        "infer.ours_bf16": 0.95,
    }
    goals = report.goals(result)
    assert goals["training, bare step"]["met"] is True
    assert goals["training, real loop"]["met"] is False
    assert goals["inference (codes)"]["met"] is False


def test_bad_sections_name_the_option(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse(["--sections", "train,speed"])
    assert "--sections" in capsys.readouterr().err


def _python_m(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_tensorflow
def test_keras_reference_is_our_network_layer_for_layer_and_measures_a_step():
    """Our weights copied into the Keras network give our L5/L6/L7/logits (with our pooling windows)."""
    out = _python_m("benchmarks.reference_keras", "--compare")
    assert list(out["keras_parameters"].values()) == list(out["torch_parameters"].values())
    for layer, diff in out["torch_pooling"].items():
        assert diff <= 1e-5 * out["scale"][layer], (layer, diff)
    train, infer = out["train_step"], out["infer_step"]
    assert (
        train["images_per_s"] > 0
        and math.isfinite(train["final_loss"])
        and train["keras"].startswith("3.")
    )
    assert infer["images_per_s"] > 0 and infer["dims"] == [16384, 2048, 2048]
