from neuralcodes import progress


def test_without_a_terminal_progress_is_logged_as_plain_lines(monkeypatch, capsys):
    monkeypatch.delenv("NEURALCODES_NO_PROGRESS", raising=False)
    monkeypatch.setattr(progress.ProgressBar, "LOG_EVERY_S", 0.0)
    with progress.ProgressBar(4, "epoch 1/2", unit="img") as bar:
        for i in range(4):
            bar.advance(1, status=f"loss {i}")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch 1/2:")]
    assert (
        lines[0].startswith("epoch 1/2: 1/4 (25%)")
        and "img/s" in lines[0]
        and lines[0].endswith("loss 0")
    )
    assert lines[-1].startswith("epoch 1/2: 4/4 (100%)")


def test_silenced_by_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("NEURALCODES_NO_PROGRESS", "1")
    monkeypatch.setattr(progress.ProgressBar, "LOG_EVERY_S", 0.0)
    assert list(progress.track(range(3), description="quiet")) == [0, 1, 2]
    assert "quiet" not in capsys.readouterr().err


def test_without_a_terminal_no_bar_frame_reaches_the_log(monkeypatch, capsys):
    """A log written under nohup must hold plain text lines only: no bar characters, no control sequences."""
    monkeypatch.delenv("NEURALCODES_NO_PROGRESS", raising=False)
    with progress.ProgressBar(1000, "sha256 data.zip", unit="B") as bar:  # shorter than LOG_EVERY_S
        bar.advance(1000)
    err = capsys.readouterr().err
    assert "\u2501" not in err and "\x1b" not in err and "\r" not in err
    assert err.splitlines() == [err.splitlines()[0]] and err.startswith(
        "sha256 data.zip: 1,000/1,000 (100%)"
    )


def test_a_long_message_stays_one_line_in_a_log(capsys):
    """Without a terminal rich assumes 80 columns; an epoch summary must not be broken inside a figure."""
    line = (
        "epoch 5: train loss 3.3612 acc 0.232 | val loss 3.3571 acc 0.237 top5 0.492 | 85 img/s "
        + "x" * 40
    )
    progress.console.print(line)
    assert capsys.readouterr().err == line + "\n"
