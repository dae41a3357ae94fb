"""The neighbour search's methods: exact (unchanged), faiss (approximate), auto."""

import sys

import numpy as np
import pytest
import torch

from skdsc.nn import neighbors as neighbors_module
from skdsc.nn.neighbors import NeighborIndex, nearest_neighbors


def reference_search(candidates, n_neighbors, queries=None):
    """The exact search as it was before it had a ``method``, for comparison."""
    exclude_self = queries is None
    if queries is None:
        queries = candidates
    queries = queries.to(device=candidates.device, dtype=candidates.dtype)
    norms = lambda codes: torch.linalg.vector_norm(codes, dim=1).clamp(min=1e-12)  # noqa: E731
    key_norms = norms(candidates)
    block = max(1, neighbors_module._BLOCK_ELEMENTS // len(candidates))
    found = torch.empty((len(queries), n_neighbors), dtype=torch.int64)
    for start in range(0, len(queries), block):
        chunk = queries[start:start + block]
        similarity = chunk @ candidates.T
        similarity /= norms(chunk)[:, None]
        similarity /= key_norms[None, :]
        if exclude_self:
            rows = torch.arange(len(similarity))
            similarity[rows, rows + start] = -torch.inf
        found[start:start + block] = similarity.topk(n_neighbors, dim=1).indices
    return found


def union_of_subspaces(n_samples=3000, n_subspaces=10, dim=4, n_features=32, seed=0):
    """Codes near ``n_subspaces`` random ``dim``-dimensional subspaces."""
    rng = np.random.default_rng(seed)
    bases = rng.normal(size=(n_subspaces, dim, n_features))
    labels = np.arange(n_samples) % n_subspaces
    codes = np.einsum("nd,ndf->nf", rng.normal(size=(n_samples, dim)), bases[labels])
    codes += 0.05 * rng.normal(size=codes.shape)
    return torch.as_tensor(codes, dtype=torch.float32)


def recall(found, exact):
    found, exact = found.numpy(), exact.numpy()
    return np.mean([len(np.intersect1d(a, b)) / len(b) for a, b in zip(found, exact)])


@pytest.fixture
def without_faiss(monkeypatch):
    """faiss made unimportable, whether it is installed or not."""
    monkeypatch.setitem(sys.modules, "faiss", None)


# -- exact and validation (no faiss needed) -------------------------------------------------

@pytest.mark.parametrize("block_elements", [1 << 26, 500])
@pytest.mark.parametrize("with_queries", [False, True])
def test_exact_is_the_search_as_before(monkeypatch, block_elements, with_queries):
    monkeypatch.setattr(neighbors_module, "_BLOCK_ELEMENTS", block_elements)
    rng = np.random.default_rng(0)
    codes = torch.as_tensor(rng.normal(size=(300, 7)))
    codes[5] = 0.0  # a zero code: cosines 0, no NaN
    codes[7] = codes[8]  # a duplicate
    queries = torch.as_tensor(rng.normal(size=(40, 7))) if with_queries else None
    expected = reference_search(codes, 9, queries)
    for method in ("exact", "auto"):  # auto is exact at this size
        found = nearest_neighbors(codes, 9, queries=queries, method=method)
        assert torch.equal(found, expected)
    assert torch.equal(nearest_neighbors(codes, 9, queries=queries), expected)
    index = NeighborIndex(codes, method="exact")
    assert index.method_ == "exact"
    assert torch.equal(index.search(queries, 9), expected)


@pytest.mark.parametrize("method", ["fast", "", None, "EXACT"])
def test_bad_method_is_rejected(method):
    with pytest.raises(ValueError, match=r"method must be one of \('auto', 'exact', 'faiss'\)"):
        nearest_neighbors(torch.randn(20, 3), 2, method=method)
    with pytest.raises(ValueError, match="method must be one of"):
        NeighborIndex(torch.randn(20, 3), method=method)


@pytest.mark.parametrize("name, value", [("n_lists", 0), ("n_probe", -1), ("n_probe", 2.5)])
def test_bad_index_shape_is_rejected(name, value):
    with pytest.raises(ValueError, match=f"{name} must be None or a positive int"):
        NeighborIndex(torch.randn(20, 3), method="exact", **{name: value})


@pytest.mark.parametrize("k", [0, 10])
def test_index_search_rejects_impossible_counts(k):
    index = NeighborIndex(torch.randn(10, 3), method="exact")
    with pytest.raises(ValueError, match=r"n_neighbors must be in \[1, 9\]"):
        index.search(None, k)


def test_auto_is_exact_for_small_n():
    codes = torch.randn(neighbors_module._FAISS_MIN_CANDIDATES - 1, 4)
    assert NeighborIndex(codes).method_ == "exact"
    assert neighbors_module.search_method(codes, len(codes)) == "exact"
    # Few queries among many candidates: exact too.
    assert neighbors_module.search_method(
        torch.empty(neighbors_module._FAISS_MIN_CANDIDATES, 4),
        neighbors_module._FAISS_MIN_QUERIES - 1) == "exact"


def test_faiss_missing_raises_a_clear_error(without_faiss):
    codes = torch.randn(50, 4)
    with pytest.raises(ImportError, match=r"pip install faiss-cpu.*skdsc\[faiss\]"):
        nearest_neighbors(codes, 3, method="faiss")
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        NeighborIndex(codes, method="faiss")
    assert not neighbors_module.faiss_available()


def test_auto_without_faiss_is_exact_at_any_size(monkeypatch, without_faiss):
    monkeypatch.setattr(neighbors_module, "_FAISS_MIN_CANDIDATES", 10)
    monkeypatch.setattr(neighbors_module, "_FAISS_MIN_QUERIES", 10)
    codes = torch.randn(60, 4)
    assert NeighborIndex(codes).method_ == "exact"
    assert torch.equal(nearest_neighbors(codes, 5), reference_search(codes, 5))


# -- faiss ----------------------------------------------------------------------------------

@pytest.fixture
def faiss():
    return pytest.importorskip("faiss")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_features", [32, 100])  # indexed as they are, or projected
def test_faiss_returns_what_exact_returns(faiss, dtype, n_features):
    codes = union_of_subspaces(n_features=n_features).to(dtype)
    exact = nearest_neighbors(codes, 32, method="exact")
    found = nearest_neighbors(codes, 32, method="faiss")
    assert found.dtype == exact.dtype == torch.int64
    assert found.shape == exact.shape
    assert found.device == codes.device
    assert not (found == torch.arange(len(codes))[:, None]).any(), "a sample is its own neighbour"
    assert all(len(set(row)) == 32 for row in found.tolist())
    assert found.min() >= 0 and found.max() < len(codes)
    assert recall(found, exact) >= 0.95


@pytest.mark.parametrize("n_features", [32, 100])
def test_faiss_recall_of_queries(faiss, n_features):
    codes = union_of_subspaces(seed=1, n_features=n_features)
    queries = union_of_subspaces(n_samples=500, seed=1, n_features=n_features) * 7.0
    exact = nearest_neighbors(codes, 16, queries=queries, method="exact")
    index = NeighborIndex(codes, method="faiss")
    found = index.search(queries, 16)
    assert found.shape == (500, 16) and found.dtype == torch.int64
    assert recall(found, exact) >= 0.95
    # The same index serves a search of the candidates among themselves.
    assert recall(index.search(None, 16), nearest_neighbors(codes, 16, method="exact")) >= 0.95


@pytest.mark.parametrize("n_features", [32, 100])
def test_faiss_neighbours_are_ordered_by_similarity(faiss, n_features):
    codes = union_of_subspaces(n_features=n_features)
    found = nearest_neighbors(codes, 10, method="faiss")
    unit = codes / codes.norm(dim=1, keepdim=True)
    similarity = (unit[:, None, :] * unit[found]).sum(-1)
    assert (similarity[:, :-1] >= similarity[:, 1:] - 1e-5).all()


def test_faiss_is_reproducible(faiss):
    codes = union_of_subspaces(seed=2, n_features=100)
    first = nearest_neighbors(codes, 8, method="faiss")
    np.random.seed(123)  # the global state does not matter
    torch.manual_seed(123)
    assert torch.equal(first, nearest_neighbors(codes, 8, method="faiss"))


@pytest.mark.parametrize("n_components", [None, 4])
def test_faiss_fills_rows_its_lists_cannot(faiss, n_components):
    # Tiny lists, one visited: most rows find fewer than k codes and are
    # searched exactly instead.
    codes = union_of_subspaces(n_samples=400, n_features=8)
    index = NeighborIndex(codes, method="faiss", n_lists=40, n_probe=1,
                          n_components=n_components)
    found = index.search(None, 20)
    assert (found >= 0).all()
    assert not (found == torch.arange(400)[:, None]).any()
    assert recall(found, nearest_neighbors(codes, 20, method="exact")) >= 0.9


def test_faiss_excludes_itself_among_duplicates(faiss):
    codes = union_of_subspaces(n_samples=600)
    codes[1::2] = codes[0::2]  # every sample has a twin
    found = nearest_neighbors(codes, 5, method="faiss")
    assert not (found == torch.arange(600)[:, None]).any()
    twins = torch.arange(600) ^ 1
    assert (found == twins[:, None]).any(dim=1).float().mean() >= 0.95


def test_auto_takes_faiss_for_large_n(faiss, monkeypatch):
    monkeypatch.setattr(neighbors_module, "_FAISS_MIN_CANDIDATES", 1000)
    monkeypatch.setattr(neighbors_module, "_FAISS_MIN_QUERIES", 1000)
    codes = union_of_subspaces(n_samples=2000)
    assert NeighborIndex(codes).method_ == "faiss"
    found = nearest_neighbors(codes, 12)
    assert torch.equal(found, nearest_neighbors(codes, 12, method="faiss"))
    # A handful of queries: exact, no index to train.
    queries = codes[:10]
    assert torch.equal(nearest_neighbors(codes, 12, queries=queries),
                       reference_search(codes, 12, queries))


def test_faiss_threads_are_restored(faiss):
    before = faiss.omp_get_max_threads()
    nearest_neighbors(union_of_subspaces(n_samples=500), 4, method="faiss")
    assert faiss.omp_get_max_threads() == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_faiss_on_cuda_codes_returns_cuda_indices(faiss):
    codes = union_of_subspaces().cuda()
    found = nearest_neighbors(codes, 16, method="faiss")
    assert found.device == codes.device and found.dtype == torch.int64
    assert recall(found.cpu(), nearest_neighbors(codes, 16, method="exact").cpu()) >= 0.95


@pytest.mark.parametrize("method", ["exact", "faiss"])
def test_rows_of_the_search_are_those_of_the_whole_search(method):
    """Processes that share out a search by rows get, together, the whole search."""
    if method == "faiss":
        pytest.importorskip("faiss")
    codes = union_of_subspaces(n_samples=1200)
    whole = nearest_neighbors(codes, 16, method=method)
    first, second = torch.arange(0, 700), torch.arange(700, 1200)
    parts = [nearest_neighbors(codes, 16, method=method, rows=rows) for rows in (first, second)]
    assert torch.equal(torch.cat(parts), whole)


def test_rows_need_the_search_among_the_candidates():
    codes = union_of_subspaces(n_samples=100)
    with pytest.raises(ValueError, match="pass it with queries=None"):
        nearest_neighbors(codes, 4, queries=codes[:10], rows=torch.arange(10))
