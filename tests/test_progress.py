from neuralcodes import progress


def test_without_a_terminal_progress_is_logged_as_plain_lines(monkeypatch, capsys):
    monkeypatch.delenv("NEURALCODES_NO_PROGRESS", raising=False)
    monkeypatch.setattr(progress.ProgressBar, "LOG_EVERY_S", 0.0)
    with progress.ProgressBar(4, "epoch 1/2", unit="img") as bar:
        for i in range(4):
            bar.advance(1, status=f"loss {i}")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch 1/2:")]
    assert lines[0].startswith("epoch 1/2: 1/4 (25%)") and "img/s" in lines[0] and lines[0].endswith("loss 0")
    assert lines[-1].startswith("epoch 1/2: 4/4 (100%)")


def test_silenced_by_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("NEURALCODES_NO_PROGRESS", "1")
    monkeypatch.setattr(progress.ProgressBar, "LOG_EVERY_S", 0.0)
    assert list(progress.track(range(3), description="quiet")) == [0, 1, 2]
    assert "quiet" not in capsys.readouterr().err
