"""Bad input to the training-side commands that needs no trained run: each is a one-line error naming the option,
file or folder, given before any data loads or any network is built, and leaves no folder behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neuralcodes.cli import main
from neuralcodes.recipes.deep_ranking.config import RankConfig
from neuralcodes.recipes.neural_codes.config import ClassifyConfig
from neuralcodes.runs import Run

from test_run_folder_errors import error_of  # noqa: E402  (tests/cli is on sys.path)

HUGE = "99999999999999999999"


@pytest.fixture
def classify_run(tmp_path) -> Run:
    """A folder as `neuralcodes train` leaves it after recording its configuration."""
    run = Run(tmp_path / "classify")
    run.write_config(ClassifyConfig())
    return run


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["train", "--seed", HUGE],
            f"seed must be at most 4294967295 (2**32 - 1), got {HUGE} (option --seed)",
        ),
        (["train", "--split-seed", HUGE], "split_seed must be at most 4294967295"),
        (["train", "--lr", "inf"], "lr must be a finite number, got inf (option --lr)"),
        (
            ["train", "--weight-decay", "nan"],
            "weight_decay must be a finite number, got nan (option --weight-decay)",
        ),
        (
            ["train", "--checkpoint-minutes", "nan"],
            "--checkpoint-minutes must be positive, got nan",
        ),
        (
            ["tuned", "train", "--base", "efficientnet_lite0", "--p", "inf"],
            "p must be a finite number",
        ),
        (
            ["tuned", "train", "--base", "efficientnet_lite0", "--checkpoint-minutes", "nan"],
            "--checkpoint-minutes must be positive",
        ),
        (
            ["rank", "train", "--weight-decay", "-1"],
            "weight_decay must not be negative, got -1.0 (option --weight-decay)",
        ),
        (
            ["rank", "train", "--head-hidden", "-1"],
            "head_hidden must not be negative, got -1 (option --head-hidden)",
        ),
        (
            ["rank", "train", "--image-size", "100000"],
            "image_size 100000 (option --image-size) is larger than 1024",
        ),
        (
            ["rank", "train", "--checkpoint-minutes", "0"],
            "--checkpoint-minutes must be positive, got 0.0",
        ),
        (["rank", "train", "--seed", HUGE], "seed must be at most 4294967295"),
        (["rank", "train", "--gap", "inf"], "gap must be a finite number"),
    ],
)
def test_out_of_range_options_are_refused_before_any_work(tmp_path, capsys, argv, expected):
    out = tmp_path / "run"
    assert expected in error_of(capsys, [*argv, "--out", str(out), "--device", "cpu"])
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["rank", "evaluate", "{run}", "--max-queries", "0"],
            "--max-queries must be at least 1, got 0",
        ),
        (
            ["rank", "evaluate", "{run}", "--max-queries", "-1"],
            "--max-queries must be at least 1, got -1",
        ),
        (
            ["rank", "compare-mining", "{run}", "--epochs", "0"],
            "--epochs must be at least 1, got 0",
        ),
        (
            ["rank", "compare-mining", "{run}", "--triplets-per-epoch", "0"],
            "--triplets-per-epoch must be at least 1",
        ),
        (
            ["tuned", "compare", "--base", "{run}", "--out", "{out}", "--fit-images", "0"],
            "--fit-images must be at least 1, got 0",
        ),
        (
            ["tuned", "compare", "--base", "{run}", "--out", "{out}", "--n-resamples", "-1"],
            "--n-resamples must be at least 1",
        ),
        (
            ["tuned", "compare", "--base", "{run}", "--out", "{out}", "--seed", HUGE],
            "--seed must be in [0, 4294967295]",
        ),
        (
            ["report", "{run}", "--publish", "{out}", "--budget-mb", "0"],
            "--budget-mb must be a positive number of MB, got 0",
        ),
        (
            ["quality", "{run}", "--rerank", "aqe,qe"],
            "--rerank: unknown step qe; choose among aqe, alpha_qe",
        ),
    ],
)
def test_counts_of_evaluating_commands_are_checked_before_the_run_opens(
    classify_run, tmp_path, capsys, argv, expected
):
    out = tmp_path / "out"
    argv = [a.format(run=classify_run.root, out=out) for a in argv]
    assert expected in error_of(capsys, argv)
    assert not out.exists()  # --publish DIR is not left half filled


@pytest.mark.parametrize(
    "argv", [["evaluate"], ["status"], ["report"], ["clean"], ["rank", "evaluate"]]
)
def test_a_config_json_that_is_no_object_is_called_damaged(tmp_path, capsys, argv):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("[1, 2]")
    err = error_of(capsys, [*argv, str(tmp_path / "run")])
    assert (
        f"{tmp_path / 'run' / 'config.json'} is damaged (it holds a JSON list, not an object)"
        in err
    )


@pytest.mark.parametrize(
    "argv, wanted",
    [
        (["rank", "evaluate", "{run}"], "neuralcodes rank train"),
        (
            ["rank", "train", "--out", "{run}", "--resume", "--device", "cpu"],
            "neuralcodes rank train",
        ),
        (
            [
                "tuned",
                "train",
                "--base",
                "efficientnet_lite0",
                "--out",
                "{run}",
                "--resume",
                "--device",
                "cpu",
            ],
            "neuralcodes tuned train",
        ),
    ],
)
def test_a_run_of_another_recipe_is_named_with_the_command_that_fits(
    classify_run, capsys, argv, wanted
):
    before = classify_run.config_path.read_text()
    err = error_of(capsys, [a.format(run=classify_run.root) for a in argv])
    assert f"{classify_run.root} is a 'neural_codes' run (made by `neuralcodes train`)" in err
    assert f"pass a folder `{wanted}` made" in err
    assert classify_run.config_path.read_text() == before


@pytest.mark.parametrize("where", ["file", "below a file"])
def test_a_file_where_the_run_folder_should_be_is_named(tmp_path, capsys, where):
    blocker = tmp_path / "afile"
    blocker.write_text("mine")
    out = blocker if where == "file" else blocker / "run"
    err = error_of(capsys, ["train", "--out", str(out), "--epochs", "1", "--device", "cpu"])
    assert f"{out}: a file is in the way where a folder is needed" in err and "Errno" not in err
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--backbone", "bogus"], "unknown backbone 'bogus'"),
        (
            ["--backbone", "resnet18", "--no-pretrained", "--weights", "{text}"],
            "cannot be read as PyTorch weights",
        ),
        (
            ["--backbone", "efficientnet_lite0", "--weights", "{text}"],
            "cannot be read as PyTorch weights",
        ),
    ],
)
def test_a_rank_start_that_fails_on_its_input_leaves_no_folder(tmp_path, capsys, options, expected):
    """Else the corrected command is refused: "already holds a run", then "a different configuration"."""
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    out = tmp_path / "rank"
    argv = [
        "rank",
        "train",
        "--out",
        str(out),
        "--device",
        "cpu",
        *(o.format(text=text) for o in options),
    ]
    err = error_of(capsys, argv)
    assert expected in err and "Traceback" not in err
    assert not out.exists()


def test_rank_train_records_absolute_data_and_weights(tmp_path, monkeypatch):
    import neuralcodes.recipes.deep_ranking.train as ranking

    seen: list[tuple[RankConfig, float]] = []
    monkeypatch.setattr(
        ranking,
        "train_ranking",
        lambda config, out, resume, checkpoint_minutes: seen.append((config, checkpoint_minutes)),
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "w.pt").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "rank",
                "train",
                "--out",
                "rank",
                "--data",
                "data",
                "--weights",
                "w.pt",
                "--checkpoint-minutes",
                "2.5",
            ]
        )
        == 0
    )
    config, minutes = seen[0]
    assert config.data == str(tmp_path / "data") and config.weights == str(tmp_path / "w.pt")
    assert Path(config.data).is_absolute()
    assert minutes == 2.5  # the option reaches the training loop


def test_a_damaged_progress_file_does_not_break_status(classify_run, capsys):
    classify_run.progress_path.write_text(json.dumps("training"))
    assert "progress.json is damaged" in error_of(capsys, ["status", str(classify_run.root)])
