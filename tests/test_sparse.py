"""Sparse self-expression: candidates, the layer, the fit, predict and the mode choice."""

import pickle

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from scipy import sparse
from sklearn.metrics import adjusted_rand_score

import skdsc._base as base_module
import skdsc._modes as modes_module
from skdsc import MiniBatchDeepSubspaceClustering
from skdsc._checkpoint import TrainingSession
from skdsc._memory import (
    AUTO_DENSE_MAX_SAMPLES, dense_memory_estimate, resolve_self_expression,
)
from skdsc.datasets import make_subspaces
from skdsc.nn import neighbors as neighbors_module
from skdsc.nn.memory_bank import MemoryBank
from skdsc.nn.neighbors import nearest_neighbors
from skdsc.spectral import spectral_labels
from skdsc.nn.self_expression import (
    DenseSelfExpression, SparseSelfExpression, local_ridge_regression,
)

from conftest import ACCURATE_PARAMS, small_contrastive, small_estimator

CPU = torch.device("cpu")


def brute_force_neighbors(candidates, k, queries=None):
    keys = candidates / np.linalg.norm(candidates, axis=1, keepdims=True)
    exclude = queries is None
    queries = keys if exclude else queries / np.linalg.norm(queries, axis=1, keepdims=True)
    similarity = queries @ keys.T
    if exclude:
        np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


# -- neighbour search ---------------------------------------------------------

@pytest.mark.parametrize("block_elements", [1 << 26, 50])
def test_nearest_neighbors_match_brute_force(monkeypatch, block_elements):
    monkeypatch.setattr(neighbors_module, "_BLOCK_ELEMENTS", block_elements)
    codes = np.random.default_rng(0).normal(size=(70, 6))
    found = nearest_neighbors(torch.as_tensor(codes), 5).numpy()
    expected = brute_force_neighbors(codes, 5)
    np.testing.assert_array_equal(np.sort(found, axis=1), np.sort(expected, axis=1))
    assert not np.any(found == np.arange(70)[:, None]), "a sample is its own candidate"


def test_nearest_neighbors_of_queries_use_angles():
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(40, 5))
    queries = rng.normal(size=(7, 5))
    # Lengths do not matter, only directions.
    found = nearest_neighbors(torch.as_tensor(codes * rng.uniform(0.1, 10, (40, 1))), 4,
                              queries=torch.as_tensor(queries * 100)).numpy()
    np.testing.assert_array_equal(np.sort(found, 1),
                                  np.sort(brute_force_neighbors(codes, 4, queries), 1))


@pytest.mark.parametrize("k", [0, 10])
def test_nearest_neighbors_rejects_impossible_counts(k):
    with pytest.raises(ValueError, match=r"n_neighbors must be in \[1, 9\]"):
        nearest_neighbors(torch.randn(10, 3), k)


# -- the layer ----------------------------------------------------------------

def _scatter_dense(layer, n_samples):
    dense = torch.zeros(n_samples, n_samples, dtype=layer.weight.dtype)
    dense.scatter_(1, layer.neighbors, layer.weight.detach())
    return dense


def test_sparse_layer_equals_dense_layer_with_same_coefficients():
    """Value and gradients (codes and coefficients) match the dense layer exactly."""
    torch.manual_seed(0)
    n, k, d = 30, 6, 4
    codes = torch.randn(n, d, dtype=torch.float64)
    layer = SparseSelfExpression(nearest_neighbors(codes, k)).double()
    with torch.no_grad():
        layer.weight.normal_()
    dense = DenseSelfExpression(n).double().initialise(_scatter_dense(layer, n))
    indices = torch.tensor([3, 7, 11, 2, 25, 19, 0, 8])

    results = []
    for module in (layer, dense):
        bank = MemoryBank(codes)
        live = (codes[indices] * 1.0).requires_grad_()
        slots = bank.write(indices, live)
        expressed, rows = module(indices, live, bank, slots)
        (expressed.pow(3).sum() + rows.pow(2).sum()).backward()
        coef_grad = module.weight.grad.coalesce().to_dense()[indices]
        results.append((expressed.detach(), live.grad, coef_grad))

    (sparse_out, sparse_live, sparse_coef), (dense_out, dense_live, dense_coef) = results
    torch.testing.assert_close(sparse_out, dense_out)
    torch.testing.assert_close(sparse_live, dense_live)
    assert sparse_live.abs().sum() > 0
    # The sparse layer's gradient lives on the candidates of each row.
    torch.testing.assert_close(sparse_coef, dense_coef.gather(1, layer.neighbors[indices]))


def test_refresh_keeps_kept_candidates_and_their_optimizer_state():
    neighbors = torch.tensor([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
    layer = SparseSelfExpression(neighbors)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(12.0).reshape(4, 3) + 1)
    optimizer = torch.optim.SparseAdam(layer.parameters(), lr=0.1)
    layer.rows(torch.arange(4)).sum().backward()
    optimizer.step()
    before = layer.weight.detach().clone()
    moment = optimizer.state[layer.weight]["exp_avg"].clone()

    new = torch.tensor([[3, 1, 2], [2, 0, 3], [3, 0, 1], [1, 0, 2]])
    changed = layer.refresh(new, optimizer)

    assert changed == 0.0
    for row in range(4):
        for col in range(3):
            old_col = neighbors[row].tolist().index(new[row, col].item())
            assert layer.weight[row, col] == before[row, old_col]
            assert optimizer.state[layer.weight]["exp_avg"][row, col] == moment[row, old_col]
    # A new candidate starts from zero, in the value and in the moments.
    changed = layer.refresh(torch.tensor([[3, 1, 2], [2, 0, 3], [3, 0, 1], [1, 0, 3]]),
                            optimizer)
    assert changed == pytest.approx(1 / 12)
    assert layer.weight[3, 2] == 0 and optimizer.state[layer.weight]["exp_avg"][3, 2] == 0


def test_local_ridge_regression_solves_each_row():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(20, 5))
    queries = rng.normal(size=(6, 5))
    neighbors = rng.choice(20, size=(6, 4), replace=True)
    penalty = 0.3
    found = local_ridge_regression(torch.as_tensor(queries), torch.as_tensor(codes),
                                   torch.as_tensor(neighbors), penalty, block=4).numpy()
    for i in range(6):
        basis = codes[neighbors[i]]
        expected = np.linalg.solve(basis @ basis.T + penalty * np.eye(4), basis @ queries[i])
        np.testing.assert_allclose(found[i], expected, rtol=1e-8)
    # Solved in float64, returned in the codes' dtype.
    single = local_ridge_regression(torch.as_tensor(queries).float(),
                                    torch.as_tensor(codes).float(),
                                    torch.as_tensor(neighbors), penalty, block=4)
    assert single.dtype == torch.float32
    np.testing.assert_allclose(single.numpy(), found, rtol=1e-4, atol=1e-5)


def test_sparse_layer_memory_is_linear_in_n():
    """Coefficients, optimiser state and candidates hold n * k numbers each."""
    sizes = {}
    for n in (200, 400):
        layer = SparseSelfExpression(nearest_neighbors(torch.randn(n, 8), 10))
        optimizer = torch.optim.SparseAdam(layer.parameters(), lr=0.1)
        layer.rows(torch.arange(n)).sum().backward()
        optimizer.step()
        tensors = [layer.weight, layer.neighbors,
                   *(t for t in optimizer.state[layer.weight].values()
                      if torch.is_tensor(t) and t.dim() == 2)]
        sizes[n] = sum(t.numel() for t in tensors)
        assert sizes[n] == 4 * n * 10
    assert sizes[400] == 2 * sizes[200]


# -- fitting ------------------------------------------------------------------

@pytest.fixture(scope="module")
def four_planes():
    return make_subspaces(n_clusters=4, n_samples_per_cluster=40, n_features=20,
                          subspace_dim=2, noise=0.0, random_state=0)


@pytest.fixture(scope="module")
def fitted_sparse(four_planes):
    X, _ = four_planes
    params = dict(ACCURATE_PARAMS, n_clusters=4, batch_size=32, n_epochs=40,
                  refresh_epochs=10, self_expression="sparse", n_nonzero=12)
    return MiniBatchDeepSubspaceClustering(**params).fit(X)


@pytest.mark.parametrize("batch_size", [None, 16])
def test_sparse_fit_agrees_with_dense_on_easy_subspaces(easy_data, batch_size):
    X, y = easy_data
    labels = {}
    for mode in ("dense", "sparse"):
        params = dict(ACCURATE_PARAMS, batch_size=batch_size, self_expression=mode,
                      n_nonzero=10)
        model = MiniBatchDeepSubspaceClustering(**params).fit(X)
        assert model.self_expression_ == mode
        labels[mode] = model.labels_
    assert adjusted_rand_score(labels["dense"], labels["sparse"]) == 1.0
    assert adjusted_rand_score(y, labels["sparse"]) == 1.0


def test_sparse_fit_separates_four_planes(four_planes, fitted_sparse):
    _, y = four_planes
    assert adjusted_rand_score(y, fitted_sparse.labels_) == 1.0


def test_sparse_fit_attributes(four_planes, fitted_sparse):
    X, _ = four_planes
    n = len(X)
    model = fitted_sparse
    assert model.self_expression_ == "sparse"
    assert sparse.issparse(model.coef_) and model.coef_.shape == (n, n)
    assert model.coef_.nnz <= n * 12
    assert np.all(model.coef_.diagonal() == 0)
    affinity = model.affinity_matrix_
    assert sparse.issparse(affinity) and affinity.shape == (n, n)
    assert affinity.nnz <= 2 * n * 12
    assert abs(affinity - affinity.T).max() < 1e-12 and affinity.min() >= 0
    refreshes = [h["epoch"] for h in model.history_ if h["phase"] == "refresh"]
    assert refreshes == [10, 20, 30]  # never after the last epoch


def test_refresh_epochs_zero_keeps_the_first_candidates(subspace_data):
    X, _ = subspace_data
    model = small_estimator(self_expression="sparse", n_nonzero=5, refresh_epochs=0).fit(X)
    assert not any(h["phase"] == "refresh" for h in model.history_)


def test_n_nonzero_is_capped_at_all_other_samples(subspace_data):
    X, _ = subspace_data
    model = small_estimator(self_expression="sparse", n_nonzero=500).fit(X[:30])
    assert model.coef_.shape == (30, 30)
    assert model.coef_.nnz <= 30 * 29


def test_sparse_fit_keeps_memory_linear(monkeypatch, subspace_data):
    """Every tensor of the self-expressive layer and its optimiser holds n * k numbers."""
    seen = {}
    original = TrainingSession.run

    def spy(self, step, *, stage, objects, **kwargs):
        original(self, step, stage=stage, objects=objects, **kwargs)
        if stage != "self-expression":
            return
        layer, optimizer = objects["self_expression"], objects["coef_optimizer"]
        state = optimizer.state[layer.weight]
        tensors = [layer.weight, layer.neighbors,
                   *(t for t in state.values() if torch.is_tensor(t))]
        seen[len(layer.neighbors)] = max(t.numel() for t in tensors)

    monkeypatch.setattr(TrainingSession, "run", spy)
    X, _ = subspace_data
    for n in (30, 60):
        small_estimator(self_expression="sparse", n_nonzero=4).fit(X[:n])
    assert seen == {30: 30 * 4, 60: 60 * 4}


def test_sparse_predict_does_not_use_dense_projection(monkeypatch, four_planes, fitted_sparse):
    X, y = four_planes

    def refuse(*args, **kwargs):
        raise AssertionError("the dense ridge projection was used in the sparse mode")

    monkeypatch.setattr(modes_module, "_ridge_projection", refuse)
    assert np.mean(fitted_sparse.predict(X) == fitted_sparse.labels_) >= 0.95
    X_new, y_new = make_subspaces(n_clusters=4, n_samples_per_cluster=40, n_features=20,
                                  subspace_dim=2, noise=0.0, random_state=0)
    labels = fitted_sparse.predict(X_new[::7])
    assert labels.dtype == np.int64 and labels.shape == (len(X_new[::7]),)
    # One row is predicted as it is in a batch: rows are independent.
    assert fitted_sparse.predict(X_new[3:4])[0] == fitted_sparse.predict(X_new)[3]


def test_sparse_pickle_round_trip(four_planes, fitted_sparse):
    X, _ = four_planes
    loaded = pickle.loads(pickle.dumps(fitted_sparse))
    assert loaded.self_expression_ == "sparse"
    assert (loaded.coef_ != fitted_sparse.coef_).nnz == 0
    np.testing.assert_array_equal(loaded.predict(X), fitted_sparse.predict(X))


def test_sparse_predict_builds_its_search_index_once(monkeypatch, four_planes, fitted_sparse):
    """A predict large enough for faiss indexes embedding_ once; later ones reuse it."""
    pytest.importorskip("faiss")
    import skdsc._base as base_module

    X, _ = four_planes
    model = pickle.loads(pickle.dumps(fitted_sparse))
    built = []

    class CountedIndex(base_module.NeighborIndex):
        def __init__(self, *args, **kwargs):
            built.append(kwargs.get("method"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(base_module, "NeighborIndex", CountedIndex)
    monkeypatch.setattr(base_module, "search_method", lambda candidates, n_queries: "faiss")
    first = model.predict(X)
    second = model.predict(X[::3])
    assert built == ["faiss"]
    np.testing.assert_array_equal(second, first[::3])
    # Pickling leaves the live model's index alone, and the copy builds its own.
    loaded = pickle.loads(pickle.dumps(model))
    assert "_embedding_index" in vars(model) and "_embedding_index" not in vars(loaded)
    np.testing.assert_array_equal(loaded.predict(X), first)
    assert built == ["faiss", "faiss"]
    # A new fit drops the index of the old embedding.
    model.set_params(n_epochs=2).fit(X)
    assert "_embedding_index" not in vars(model)


def test_search_and_eigensolver_reach_every_step(monkeypatch, subspace_data):
    """neighbor_search goes to the first search, the refreshes and predict;
    eigen_solver to the post-processing."""
    import skdsc._base as base_module
    import skdsc._modes as modes

    X, _ = subspace_data
    methods, solvers = [], []
    search, cluster = modes.nearest_neighbors, base_module.coefficients_to_labels

    def recorded_search(*args, method="auto", **kwargs):
        methods.append(method)
        return search(*args, method=method, **kwargs)

    def recorded_clustering(*args, eigen_solver="auto", **kwargs):
        solvers.append(eigen_solver)
        return cluster(*args, eigen_solver=eigen_solver, **kwargs)

    monkeypatch.setattr(modes, "nearest_neighbors", recorded_search)
    monkeypatch.setattr(base_module, "coefficients_to_labels", recorded_clustering)
    model = MiniBatchDeepSubspaceClustering(
        **dict(ACCURATE_PARAMS, n_clusters=3, batch_size=20, n_epochs=4, refresh_epochs=2,
               self_expression="sparse", n_nonzero=8, neighbor_search="exact",
               eigen_solver="arpack")).fit(X)
    model.predict(X[:5])
    # First search, one refresh (epoch 2; none after the last epoch), predict.
    assert methods == ["exact"] * 3
    assert solvers == ["arpack"]


def test_sparse_contrastive_fit_and_predict(subspace_data):
    X, _ = subspace_data
    model = small_contrastive(self_expression="sparse", n_nonzero=6, refresh_epochs=1,
                              image_shape=(2, 5)).fit(X)
    assert model.self_expression_ == "sparse"
    assert sparse.issparse(model.coef_) and model.coef_.nnz <= len(X) * 6
    # The ridge start gives every row non-zero coefficients on its candidates.
    assert model.coef_.getnnz(axis=1).min() > 0
    assert model.predict(X[:5]).shape == (5,)


def test_sparse_mode_needs_index_bank(subspace_data):
    X, _ = subspace_data
    with pytest.raises(ValueError, match="bank_update='index'"):
        small_estimator(self_expression="sparse", bank_update="fifo").fit(X)


# -- choosing the mode --------------------------------------------------------

def test_auto_mode_picks_dense_for_small_and_sparse_for_large():
    plenty = {"device": None, "host": 1 << 40}
    assert resolve_self_expression("auto", 1000, CPU, available=plenty) == "dense"
    assert resolve_self_expression("auto", AUTO_DENSE_MAX_SAMPLES + 1, CPU,
                                   available=plenty) == "sparse"
    # Small n but little memory: sparse.
    little = {"device": None, "host": dense_memory_estimate(1000, CPU)["host"]}
    assert resolve_self_expression("auto", 1000, CPU, available=little) == "sparse"
    # Unknown free memory does not block the dense mode.
    assert resolve_self_expression("auto", 1000, CPU,
                                   available={"device": None, "host": None}) == "dense"


def test_dense_estimate_grows_with_n_squared():
    small, large = (dense_memory_estimate(n, CPU)["host"] for n in (1000, 2000))
    assert large == 4 * small
    cuda = dense_memory_estimate(1000, torch.device("cuda"))
    assert cuda["device"] > 0 and cuda["host"] > 0


def test_dense_that_cannot_fit_fails_with_estimate():
    needed = dense_memory_estimate(70_000, CPU)["host"] / 2 ** 30
    assert needed > 64  # an n x n float32 matrix alone is 18 GiB
    with pytest.raises(MemoryError, match=rf"about {needed:.1f} GiB of main memory "
                                          r"for n_samples=70000.*self_expression='sparse'"):
        resolve_self_expression("dense", 70_000, CPU, available={"device": None,
                                                                 "host": 8 << 30})


def test_dense_that_cannot_fit_fails_before_training(monkeypatch, subspace_data):
    X, _ = subspace_data
    monkeypatch.setattr("skdsc._memory.available_memory",
                        lambda device: {"device": None, "host": 1000})

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(MiniBatchDeepSubspaceClustering, "_pretraining_objective", no_training)
    with pytest.raises(MemoryError, match="self_expression='dense' needs about"):
        small_estimator(self_expression="dense").fit(X)
    # auto falls back to the sparse mode instead.
    monkeypatch.undo()
    monkeypatch.setattr("skdsc._memory.available_memory",
                        lambda device: {"device": None, "host": 1000})
    assert small_estimator(self_expression="auto").fit(X).self_expression_ == "sparse"


def test_auto_mode_on_small_data_is_dense(subspace_data):
    X, _ = subspace_data
    model = small_estimator(self_expression="auto", n_epochs=1).fit(X)
    assert model.self_expression_ == "dense"
    assert isinstance(model.coef_, np.ndarray)


@pytest.fixture
def postprocessing_calls(monkeypatch):
    """The keyword arguments of every ``coefficients_to_labels`` call made by ``fit``."""
    calls = []
    original = base_module.coefficients_to_labels

    def spy(coef, n_clusters, **kwargs):
        calls.append(kwargs)
        return original(coef, n_clusters, **kwargs)

    monkeypatch.setattr(base_module, "coefficients_to_labels", spy)
    return calls


@pytest.mark.parametrize("mode, expected", [("dense", 0.1), ("sparse", 1.0)])
def test_auto_threshold_follows_the_mode(postprocessing_calls, subspace_data, mode, expected):
    X, _ = subspace_data
    auto = small_estimator(self_expression=mode, threshold="auto").fit(X)
    explicit = small_estimator(self_expression=mode, threshold=0.3).fit(X)
    assert [call["threshold"] for call in postprocessing_calls] == [expected, 0.3]
    # The threshold used is a fitted attribute, so relabelling needs no private method.
    assert (auto.threshold_, explicit.threshold_) == (expected, 0.3)


@pytest.mark.parametrize("mode, expected", [("dense", "dsc"), ("sparse", "symmetric")])
def test_auto_affinity_follows_the_mode(postprocessing_calls, subspace_data, mode, expected):
    X, _ = subspace_data
    auto = small_estimator(self_expression=mode, affinity="auto").fit(X)
    explicit = small_estimator(self_expression=mode, affinity=expected).fit(X)
    other = "dsc" if expected == "symmetric" else "symmetric"
    chosen = small_estimator(self_expression=mode, affinity=other).fit(X)
    assert [call["affinity"] for call in postprocessing_calls] == [expected, expected, other]
    assert [m.affinity_ for m in (auto, explicit, chosen)] == [expected, expected, other]
    # "auto" is only a name for the mode's affinity: same matrix, same labels.
    assert_array_equal(auto.labels_, explicit.labels_)


@pytest.mark.parametrize("mode", ["dense", "sparse"])
@pytest.mark.parametrize("assign_labels, n_components", [
    ("kmeans", "auto"), ("cluster_qr", "auto"), ("kmeans", 3), ("kmeans", 6),
])
def test_labels_are_read_off_the_fitted_affinity(postprocessing_calls, subspace_data, mode,
                                                 assign_labels, n_components):
    """labels_ are the spectral clustering of affinity_matrix_ with the chosen
    assignment and embedding size, and the seed the fit passed on."""
    X, _ = subspace_data
    model = small_estimator(self_expression=mode, assign_labels=assign_labels,
                            n_components=n_components).fit(X)
    (call,) = postprocessing_calls
    assert (call["assign_labels"], call["n_components"]) == (assign_labels, n_components)
    expected = spectral_labels(model.affinity_matrix_, model.n_clusters,
                               random_state=call["random_state"], assign_labels=assign_labels,
                               n_components=n_components)
    assert_array_equal(model.labels_, expected)
