"""A run folder under bad input and faults (the review's probes, as tests): pinned data, damaged files,
early validation, leftovers, clear one-line errors instead of tracebacks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from synthetic import tiny_imagenet_members, write_zip  # tests/synthetic.py

from neuralcodes.cli import main
from neuralcodes.recipes.neural_codes.config import ClassifyConfig
from neuralcodes.runs import Run

WNIDS = [f"n0{i}" for i in range(6)]
OPTIONS = ["--epochs", "1", "--batch-size", "16", "--n-ood", "2", "--device", "cpu"]


def make_zip(path: Path, seed: int = 0, drop: tuple[str, ...] = ()) -> Path:
    members = tiny_imagenet_members(WNIDS, train_per_class=12, seed=seed)
    return write_zip(path, {k: v for k, v in members.items() if not any(d in k for d in drop)})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Run, Path]:
    """A real 1-epoch run made with a *relative* --data from another working directory."""
    root = tmp_path_factory.mktemp("pinned")
    data = make_zip(root / "data.zip")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["train", "--out", str(root / "run"), "--data", "data.zip", *OPTIONS]) == 0
    finally:
        os.chdir(cwd)
    return Run(root / "run"), data


def error_of(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error:"), err
    return " ".join(err.split())


def copy_run(run: Run, target: Path) -> Run:
    shutil.copytree(run.root, target, ignore=shutil.ignore_patterns(".lock"))
    return Run(target)


def test_a_run_records_absolute_data_and_its_checksum(trained):
    run, data = trained
    assert run.config()["data"] == str(data.resolve())
    pinned = json.loads(run.data_path.read_text())
    assert pinned["location"] == str(data.resolve()) and len(pinned["checksum"]) == 64


def test_other_data_at_the_same_relative_path_is_refused(trained, tmp_path, capsys, monkeypatch):
    run, _ = trained
    make_zip(tmp_path / "data.zip", seed=1)  # same name and layout, other pixels
    monkeypatch.chdir(tmp_path)
    before = run.metrics_path.read_text()
    err = error_of(capsys, ["evaluate", str(run.root), "--data", "data.zip"])
    assert "holds other data" in err and str(tmp_path / "data.zip") in err and "sha256" in err
    assert run.metrics_path.read_text() == before  # nothing overwritten


def test_moved_data_is_found_again_with_data_and_verified(trained, tmp_path, capsys):
    run, data = trained
    moved_data = tmp_path / "moved.zip"
    shutil.copy(data, moved_data)
    run = copy_run(run, tmp_path / "run")
    record = json.loads(run.data_path.read_text())
    record["location"] = str(tmp_path / "gone.zip")  # as if the archive had been moved away
    run.data_path.write_text(json.dumps(record))
    config = run.config()
    config["data"] = str(tmp_path / "gone.zip")
    run.config_path.write_text(json.dumps(config))

    err = error_of(capsys, ["evaluate", str(run.root)])
    assert "no longer at" in err and "--data" in err
    assert main(["evaluate", str(run.root), "--data", str(moved_data)]) == 0
    assert json.loads(run.data_path.read_text())["location"] == str(moved_data)
    assert set(run.metrics()["classification"]) == {"train", "val", "test"}


def test_resume_on_changed_data_is_refused_before_training(trained, tmp_path, capsys):
    run, data = trained
    run = copy_run(run, tmp_path / "run")
    changed = tmp_path / "data.zip"
    shutil.copy(data, changed)
    for path, key in (
        (run.config_path, "data"),
        (run.data_path, "location"),
    ):  # as if trained from this copy
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, key: str(changed)}))
    with zipfile.ZipFile(changed, "a") as z:  # one more image in a class: the split would shift
        z.writestr(
            "tiny-imagenet-200/train/n01/images/n01_99.JPEG",
            z.read("tiny-imagenet-200/train/n01/images/n01_0.JPEG"),
        )
    split_before = (run.root / "split.json").read_text()
    err = error_of(
        capsys, ["train", "--out", str(run.root), "--data", str(changed), *OPTIONS, "--resume"]
    )
    assert "holds other data" in err
    assert (run.root / "split.json").read_text() == split_before


def test_damaged_json_names_the_file(trained, tmp_path, capsys):
    run = copy_run(trained[0], tmp_path / "run")
    run.metrics_path.write_text('{"training": {"best_epoch": 1, "unterminated')
    err = error_of(capsys, ["report", str(run.root)])
    assert str(run.metrics_path) in err and "damaged" in err


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--pca-fit-images", "0"], "--pca-fit-images must be at least 1"),
        (["--split-seed", "-1"], "split_seed must not be negative, got -1 (option --split-seed)"),
        (["--device", "bogus"], "--device 'bogus' is not a device name"),
        (["--seeds", "1,x"], "--seeds must be comma-separated integers"),
        (["--checkpoint-minutes", "0"], "--checkpoint-minutes must be positive"),
    ],
)
def test_bad_options_fail_before_any_work(trained, tmp_path, capsys, options, expected):
    out = tmp_path / "run"
    err = error_of(
        capsys, ["run", "--out", str(out), "--data", str(trained[1]), *OPTIONS, *options]
    )
    assert expected in err
    assert not (out / "config.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_message(trained, tmp_path, capsys):
    err = error_of(capsys, ["evaluate", str(trained[0].root), "--device", "cuda"])
    assert "CUDA is not available here; use --device cpu" in err


def test_a_tiny_held_out_class_fails_before_training_and_leaves_no_folder(tmp_path, capsys):
    small = make_zip(tmp_path / "small.zip", drop=tuple(f"n05_{i}.JPEG" for i in range(1, 12)))
    out = tmp_path / "run"
    err = error_of(capsys, ["train", "--out", str(out), "--data", str(small), *OPTIONS])
    assert "held-out class 'n05'" in err and "1 image(s)" in err
    assert not out.exists()  # the folder the failed command made is not left behind, empty
    # The corrected data into the same folder is not refused because of the failed start.
    assert (
        main(["train", "--out", str(out), "--data", str(make_zip(tmp_path / "full.zip")), *OPTIONS])
        == 0
    )


def test_stale_temporaries_are_removed_by_the_next_command(trained, tmp_path):
    run = copy_run(trained[0], tmp_path / "run")
    stale = [run.checkpoints / ".last.pt.k1ll3d.tmp", run.root / "codes" / ".ood_L5.npz.x.tmp"]
    for path in stale:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a checkpoint")
    assert main(["evaluate", str(run.root)]) == 0
    assert not any(path.exists() for path in stale)


@pytest.mark.parametrize("command", ["status", "report", "clean"])
def test_a_comparison_folder_is_named_as_one_not_as_a_missing_run(tmp_path, capsys, command):
    folder = tmp_path / "compare"
    folder.mkdir()
    (folder / "comparison.json").write_text("{}")
    error = error_of(capsys, [command, str(folder)])
    assert (
        "is a `neuralcodes tuned compare` folder, not a run folder" in error
        and "neuralcodes tuned report" in error
    )


def test_report_on_a_run_that_never_trained_says_what_is_missing(tmp_path, capsys):
    run = Run(tmp_path / "run")
    run.write_config(ClassifyConfig())
    assert "no results to report yet" in error_of(capsys, ["report", str(run.root)])


def test_an_unwritable_run_folder_fails_before_the_work(trained, tmp_path, capsys, monkeypatch):
    run = copy_run(trained[0], tmp_path / "run")
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == run.root else real(p, mode)
    )
    before = run.metrics_path.read_text()
    assert "cannot write to the run folder" in error_of(capsys, ["evaluate", str(run.root)])
    assert run.metrics_path.read_text() == before


def test_a_busy_run_folder_is_refused(trained, tmp_path, capsys):
    run = copy_run(trained[0], tmp_path / "run")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from neuralcodes.runs import Run\n"
            "with Run(sys.argv[1]).lock():\n    print('locked', flush=True); time.sleep(60)",
            str(run.root),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert "in use by another neuralcodes process" in error_of(
            capsys, ["evaluate", str(run.root)]
        )
    finally:
        holder.kill()
        holder.wait()


def test_ctrl_c_outside_training_does_not_claim_a_checkpoint(monkeypatch, capsys):
    import neuralcodes.cli.classify as commands

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "evaluate_command", interrupted)
    capsys.readouterr()
    assert main(["evaluate", "somewhere"]) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert "checkpoint is intact" not in err and "what was finished" in err


def test_clean_frees_a_finished_runs_last_checkpoint(trained, tmp_path, capsys):
    run = copy_run(trained[0], tmp_path / "run")
    assert run.last_checkpoint.exists()
    capsys.readouterr()
    assert main(["clean", str(run.root)]) == 0
    assert not run.last_checkpoint.exists() and run.best_checkpoint.exists()
    assert "MiB of checkpoints" in capsys.readouterr().err


def test_skipped_files_are_recorded_with_the_run_and_listed_in_its_report(tmp_path, capsys):
    members = tiny_imagenet_members(WNIDS, train_per_class=12, corrupt=("n01_3.JPEG",))
    data = write_zip(tmp_path / "bad.zip", members)
    out = tmp_path / "run"
    err = error_of(capsys, ["train", "--out", str(out), "--data", str(data), *OPTIONS])
    assert "n01_3.JPEG" in err and "--skip-corrupt" in err
    assert main(["train", "--out", str(out), "--data", str(data), *OPTIONS, "--skip-corrupt"]) == 0
    skipped = json.loads(Run(out).data_path.read_text())["skipped"]
    assert [path for path, _ in skipped] == ["tiny-imagenet-200/train/n01/images/n01_3.JPEG"]
    assert main(["evaluate", str(out)]) == 0
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "## Skipped files" in report and "n01_3.JPEG" in report


def test_data_command_verifies_and_lists(tmp_path, capsys):
    data = make_zip(tmp_path / "d.zip")
    capsys.readouterr()
    assert main(["data", str(data), "--verify"]) == 0
    err = capsys.readouterr().err
    assert (
        "verified byte for byte" in err
        and "sha256" in err
        and "72 labelled images of 6 classes" in err
    )


def test_resume_keeps_the_runs_epochs_and_trains_on_when_asked_for_more(trained, tmp_path, capsys):
    run, data = trained
    run = copy_run(run, tmp_path / "run")
    options = [
        "train",
        "--out",
        str(run.root),
        "--data",
        str(data),
        "--batch-size",
        "16",
        "--n-ood",
        "2",
        "--device",
        "cpu",
        "--resume",
    ]
    assert main(options) == 0  # no --epochs: the run's own 1, not the default 100
    assert run.config()["epochs"] == 1 and len(run.history()) == 1
    assert main([*options, "--epochs", "2"]) == 0
    assert run.config()["epochs"] == 2 and [h["epoch"] for h in run.history()] == [1, 2]
    assert run.config()["changed_on_resume"] == [{"option": "epochs", "from": 1, "to": 2}]
    err = error_of(
        capsys, [*options, "--epochs", "3", "--lr", "0.5"]
    )  # anything else must still match
    assert "differs in: lr" in err and run.config()["epochs"] == 2
