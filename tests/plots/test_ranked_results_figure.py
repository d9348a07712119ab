"""The one ranked-results figure: what each panel shows, for the study's and the deep-ranking call."""

import numpy as np

from neuralcodes.plots import retrieval


def record_panels(monkeypatch):
    panels = []
    real_show = retrieval._show

    def show(ax, image, title, color=None, fontsize=7):
        panels.append((int(image[0, 0, 0]), title, color))
        real_show(ax, image, title, color, fontsize)

    monkeypatch.setattr(retrieval, "_show", show)
    return panels


def test_panels_show_each_result_framed_by_its_class(monkeypatch, tmp_path):
    panels = record_panels(monkeypatch)
    database = np.zeros((6, 4, 4, 3), dtype=np.uint8)
    database[:, 0, 0, 0] = np.arange(6) * 10  # each image says which one it is
    labels = np.array([0, 1, 0, 2, 1, 0])
    names = ["goldfish, Carassius auratus", "pizza", "acorn"]
    top = np.array([[2, 1], [4, 3]])
    path = retrieval.plot_ranked_results(
        database[[0, 1]],
        labels[[0, 1]],
        database[top],
        labels[top],
        names,
        tmp_path / "r.png",
        distances=np.array([[0.1, 0.2], [0.3, 0.4]]),
    )
    assert path.stat().st_size > 0
    assert panels == [
        (0, "query\ngoldfish", None),
        (20, "goldfish\nd=0.100", retrieval.SAME),
        (10, "pizza\nd=0.200", retrieval.OTHER),
        (10, "query\npizza", None),
        (40, "pizza\nd=0.300", retrieval.SAME),
        (30, "acorn\nd=0.400", retrieval.OTHER),
    ]


def test_a_bottom_row_draws_the_farthest_results_too(monkeypatch, tmp_path):
    """Deep ranking's figure: the nearest results, then a row of the farthest ones."""
    panels = record_panels(monkeypatch)
    database = np.zeros((5, 4, 4, 3), dtype=np.uint8)
    database[:, 0, 0, 0] = np.arange(5) * 10
    labels = np.array([1, 0, 1, 0, 1])
    near, far = np.array([[4, 1]]), np.array([[3, 0]])
    query = np.full((1, 4, 4, 3), 99, dtype=np.uint8)
    retrieval.plot_ranked_results(
        query,
        [1],
        database[near],
        labels[near],
        ["cat", "dog"],
        tmp_path / "d.png",
        distances=np.array([[0.5, 0.6]]),
        bottom=(database[far], labels[far], np.array([[0.7, 0.8]])),
    )
    assert [(p[0], p[2]) for p in panels] == [
        (99, None),
        (40, retrieval.SAME),
        (10, retrieval.OTHER),  # nearest 2
        (30, retrieval.OTHER),
        (0, retrieval.SAME),  # farthest 2 (their row starts with a label, not an image)
    ]
