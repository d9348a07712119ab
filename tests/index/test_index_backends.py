"""The search backends against a naive reference: exact and FAISS flat agree, HNSW and IVF-PQ recall well."""

from __future__ import annotations

import numpy as np
import pytest

from neuralcodes.index import backends
from neuralcodes.index.backends import (
    EXACT_MAX_ROWS,
    Backend,
    FaissBackend,
    backend_params,
    choose_backend,
    load_backend,
    rank_candidates,
)


def clustered_codes(n: int, dim: int, clusters: int = 50, seed: int = 0) -> np.ndarray:
    """Unit codes around random centres: neighbourhoods as real codes have (ties are vanishingly rare)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    codes = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, dim)).astype(
        np.float32
    )
    return codes / np.linalg.norm(codes, axis=1, keepdims=True)


def naive_knn(
    codes: np.ndarray, queries: np.ndarray, k: int, live: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Every distance in float64, one query at a time; ties broken by id (lexsort)."""
    ids, dists = [], []
    for q in queries.astype(np.float64):
        d = np.sqrt(((codes.astype(np.float64) - q) ** 2).sum(axis=1))
        if live is not None:
            d[~live] = np.inf
        order = np.lexsort((np.arange(len(d)), d))[:k]
        ids.append(order)
        dists.append(d[order])
    return np.array(ids), np.array(dists)


def _search(
    backend: Backend, codes: np.ndarray, queries: np.ndarray, k: int, live: np.ndarray | None = None
):
    live = np.ones(len(codes), bool) if live is None else live
    dead = int((~live).sum())
    return rank_candidates(codes, queries, backend.candidates(codes, queries, k + dead), live, k)


@pytest.fixture(autouse=True)
def one_faiss_thread():
    """FAISS's OpenMP threads spin-wait: on a busy 2-core CI machine one thread builds these small indexes ~4x faster."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    codes = clustered_codes(3000, 32)
    return codes, clustered_codes(40, 32, seed=1)


def test_exact_and_faiss_flat_return_the_naive_neighbours(data) -> None:
    codes, queries = data
    reference, ref_d = naive_knn(codes, queries, 10)
    exact = _search(Backend({}), codes, queries, 10)
    flat = FaissBackend("flat", backend_params("flat", len(codes), 32))
    flat.sync(codes)
    faiss_ids, faiss_d = _search(flat, codes, queries, 10)
    np.testing.assert_array_equal(exact[0], reference)
    np.testing.assert_array_equal(faiss_ids, reference)
    np.testing.assert_allclose(exact[1], ref_d, atol=1e-4)
    np.testing.assert_allclose(faiss_d, ref_d, atol=1e-4)


def test_exact_search_in_slices_equals_one_pass(data, monkeypatch) -> None:
    codes, queries = data
    whole = _search(Backend({}), codes, queries, 10)
    monkeypatch.setattr(backends, "_SLICE_BYTES", 700 * 32 * 4)  # 5 slices, the last one short
    sliced = _search(Backend({}), codes, queries, 10)
    np.testing.assert_array_equal(sliced[0], whole[0])


def test_removed_rows_are_never_returned(data) -> None:
    codes, queries = data
    reference, _ = naive_knn(codes, queries, 5)
    live = np.ones(len(codes), bool)
    live[reference[:, :2].ravel()] = False  # every query's two nearest are gone
    expected, _ = naive_knn(codes, queries, 5, live)
    for backend in (Backend({}), FaissBackend("flat", {})):
        backend.sync(codes)
        np.testing.assert_array_equal(
            _search(backend, codes, queries, 5, live)[0], expected, err_msg=backend.name
        )
    hnsw = FaissBackend(
        "hnsw", backend_params("hnsw", 3000, 32)
    )  # approximate: only check nothing removed shows
    hnsw.sync(codes)
    ids = _search(hnsw, codes, queries, 5, live)[0]
    assert (ids >= 0).all() and live[ids].all()


def test_hnsw_and_ivfpq_recall_most_true_neighbours(tmp_path) -> None:
    codes, queries = clustered_codes(10_000, 32), clustered_codes(100, 32, seed=2)
    truth, _ = _search(Backend({}), codes, queries, 10)
    for name in ("hnsw", "ivfpq"):
        backend = FaissBackend(name, backend_params(name, len(codes), 32))
        backend.sync(codes)
        ids, distances = _search(backend, codes, queries, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)])
        assert recall >= 0.9, (name, recall)
        assert (np.diff(distances, axis=1) >= 0).all()  # re-ranked by exact distance
        backend.save(tmp_path / f"{name}.index")
        again = load_backend(name, backend.params, tmp_path / f"{name}.index")
        np.testing.assert_array_equal(_search(again, codes, queries, 10)[0], ids)


def test_ivfpq_refuses_too_few_codes() -> None:
    with pytest.raises(ValueError, match="at least 10,000 images.*exact, flat or hnsw"):
        FaissBackend("ivfpq", backend_params("ivfpq", 500, 32)).sync(clustered_codes(500, 32))


def test_adding_codes_extends_a_faiss_index(data) -> None:
    codes, _ = data
    grown = FaissBackend("hnsw", backend_params("hnsw", 3000, 32))
    grown.sync(codes[:1000])
    grown.sync(codes)  # only rows 1000.. are added
    assert grown.index.ntotal == 3000
    added = np.arange(1000, 3000, 50)
    np.testing.assert_array_equal(
        _search(grown, codes, codes[added], 1)[0][:, 0], added
    )  # each finds itself


def test_auto_picks_by_collection_size() -> None:
    assert choose_backend(EXACT_MAX_ROWS, 256) == "exact"
    assert choose_backend(1_000_000, 256, memory_bytes=24 << 30) == "hnsw"  # 1 GiB of codes
    assert (
        choose_backend(10_000_000, 256, memory_bytes=24 << 30) == "ivfpq"
    )  # 10 GiB: past a quarter of memory
    params = backend_params("ivfpq", 1_000_000, 256)
    assert (
        params["nlist"] == 1024 and params["m"] == 32
    )  # sqrt(N) lists, 8 dimensions per sub-quantiser
    with pytest.raises(ValueError, match="unknown backend 'annoy'"):
        backend_params("annoy", 10, 8)


def test_faiss_backends_work_after_torch_utils_patches_faiss(data) -> None:
    """pytorch-metric-learning imports faiss.contrib.torch_utils, which replaces Index.search by a
    version without SearchParameters: the backends must not depend on them."""
    import faiss.contrib.torch_utils  # noqa: F401

    codes, queries = data
    reference, _ = naive_knn(codes, queries, 5)
    for name in ("flat", "hnsw"):
        backend = FaissBackend(name, backend_params(name, len(codes), 32))
        backend.sync(codes)
        ids = _search(backend, codes, queries, 5)[0]
        assert (ids[:, 0] == reference[:, 0]).mean() >= 0.95, name


def test_every_backend_ranks_float16_near_duplicates_by_true_distance() -> None:
    """--dtype float16 stores codes whose norms are off by ~1e-3: an inner-product FAISS index then
    ranks near-duplicates (distances ~1e-3, as burst photos have) by norm, not by distance, and
    proposes the wrong candidates, so the exact re-ranking never sees the true nearest ones. At that
    scale, distances from |a|^2 + |b|^2 - 2 a.b in float32 are off by ~10%, so the exact backend
    orders near-duplicates at random unless the final ranking measures the differences themselves."""
    rng = np.random.default_rng(0)
    base = clustered_codes(40, 32)
    near = base[rng.integers(0, 40, 400)] + 1e-3 * rng.standard_normal((400, 32)).astype(np.float32)
    codes = (near / np.linalg.norm(near, axis=1, keepdims=True)).astype(np.float16)
    queries = codes[::20].astype(
        np.float32
    )  # each query is in the collection: it must come back first
    reference, ref_distances = naive_knn(codes.astype(np.float32), queries, 3)
    for name in ("exact", "flat", "hnsw"):
        backend = (
            Backend({})
            if name == "exact"
            else FaissBackend(name, backend_params(name, len(codes), 32))
        )
        backend.sync(codes)
        ids, distances = _search(backend, codes, queries, 3)
        np.testing.assert_array_equal(ids, reference, err_msg=name)
        np.testing.assert_allclose(distances, ref_distances, rtol=1e-4, atol=1e-7, err_msg=name)
