"""Run folders: what a finished command leaves in progress.json."""

from neuralcodes.runs import Run


def test_finish_marks_the_run_done_and_keeps_the_last_stage_figures(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    run = Run(tmp_path / "run")
    run.root.mkdir()
    run.write_progress("trained", epochs_run=7, best_epoch=6)
    run.finish()
    progress = run.progress()
    assert (progress["stage"], progress["epochs_run"], progress["best_epoch"]) == ("done", 7, 6)


def test_under_torchrun_only_the_first_process_finishes_the_run(tmp_path, monkeypatch):
    run = Run(tmp_path / "run")
    run.root.mkdir()
    run.write_progress("trained", epochs_run=3)
    monkeypatch.setenv("RANK", "1")
    run.finish()
    assert run.progress()["stage"] == "trained"
    monkeypatch.setenv("RANK", "0")
    run.finish()
    assert run.progress()["stage"] == "done"
