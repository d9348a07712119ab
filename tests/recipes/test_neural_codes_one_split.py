"""`neuralcodes run` draws the course split once: training, evaluation, the study, variants and seed runs share it."""

from __future__ import annotations

import json

import pytest

import neuralcodes.recipes.neural_codes.pipeline as pipeline
import neuralcodes.recipes.neural_codes.train as classify
from neuralcodes.data.splits import course_split
from neuralcodes.recipes.neural_codes.study import StudyOptions
from neuralcodes.recipes.run_data import load_run_data
from neuralcodes.runs import Run

from test_neural_codes_train import config, synthetic_dataset  # noqa: E402  (tests/recipes is on sys.path)


def test_a_run_draws_its_split_once_and_every_stage_and_variant_records_the_same(
    tmp_path, monkeypatch
):
    data = synthetic_dataset()
    # The pipeline loads its data by spec; hand it the synthetic set through the same checks instead.
    monkeypatch.setattr(
        pipeline,
        "load_run_data",
        lambda run, spec, skip, pin: load_run_data(run, spec, skip, data, pin),
    )
    draws = []

    def counted(*args, **kwargs):
        draws.append(1)
        return course_split(*args, **kwargs)

    monkeypatch.setattr(classify, "course_split", counted)
    study = StudyOptions(pca_dims=(4, None), pca_fit_images=20, n_shown=2, device="cpu")
    run = pipeline.run_protocol(
        config(epochs=1, bf16=False),
        tmp_path / "run",
        variants=("weight_decay",),
        study=study,
        seeds=(7,),
    )
    assert (
        len(draws) == 1
    )  # was 4 per run folder: the pipeline, training, evaluation and the study each drew one
    folders = [
        run.root,
        run.root / "variants" / "weight_decay",
        run.root / "seeds" / "baseline-seed7",
        run.root / "seeds" / "weight_decay-seed7",
    ]
    recorded = {json.loads((f / "split.json").read_text())["sha256"] for f in folders}
    assert recorded == {classify.make_split(config(), data).fingerprint()}


def test_a_split_drawn_with_other_options_is_refused(tmp_path):
    data = synthetic_dataset()
    other = classify.make_split(config(split_seed=5), data)
    with pytest.raises(ValueError, match="not drawn with this run's split options"):
        classify.prepare(Run(tmp_path / "r"), config(), data, split=other)
    assert (
        not (tmp_path / "r" / "split.json").exists() and not (tmp_path / "r" / "data.json").exists()
    )
