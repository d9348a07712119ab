"""`neuralcodes tuned ...` on the command line: a short fine-tuning, and errors that name the option to fix."""

import json

from tuned_support import untrained_base

from neuralcodes.cli import main, resume_command


def test_tuned_train_through_the_command_line(sample_dataset, tmp_path, capsys):
    base = untrained_base(tmp_path / "base", sample_dataset)
    out = tmp_path / "tuned"
    args = [
        "tuned",
        "train",
        "--base",
        str(base),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--batches-per-epoch",
        "1",
        "--batch-size",
        "8",
        "--m-per-class",
        "2",
        "--val-images",
        "40",
        "--whitening",
        "pca",
        "--loss",
        "contrastive",
        "--mining",
        "hard",
        "--no-bf16",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["kind"], config["base"], config["loss"], config["whitening"]) == (
        "tuned_codes",
        str(base),
        "contrastive",
        "pca",
    )
    assert json.loads((out / "metrics.json").read_text())["tuned"]["epochs_run"] == 1
    capsys.readouterr()
    assert (
        main(["status", str(out)]) == 0
    )  # finished: its stage says so, and no --resume is suggested
    status = capsys.readouterr().err
    assert (
        "stage: done" in status and "finished stages: tuned" in status and "--resume" not in status
    )
    assert main(args) == 2 and "--resume" in "".join(capsys.readouterr())
    assert resume_command(args).endswith(" --resume")


def test_errors_name_the_option(tmp_path, capsys):
    assert (
        main(["tuned", "train", "--base", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
        == 2
    )
    assert "--base" in "".join(capsys.readouterr())
    assert (
        main(
            [
                "tuned",
                "train",
                "--base",
                str(tmp_path),
                "--out",
                str(tmp_path / "x"),
                "--batch-size",
                "10",
            ]
        )
        == 2
    )
    assert "--m-per-class" in "".join(capsys.readouterr())
    assert main(["tuned", "train", "--base", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "not a neuralcodes run folder" in "".join(capsys.readouterr())
    assert main(["tuned", "report", str(tmp_path)]) == 2
    assert "neuralcodes tuned compare" in "".join(capsys.readouterr())
    (tmp_path / "config.json").write_text(
        '{"kind": "neural_codes"}'
    )  # a training run given by mistake
    assert main(["tuned", "report", str(tmp_path)]) == 2
    assert f"{tmp_path} is a training run, not a `tuned compare` folder" in "".join(
        capsys.readouterr()
    )
