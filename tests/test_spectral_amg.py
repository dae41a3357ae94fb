"""The spectral step's eigensolvers: ARPACK (the default below its size) and AMG + LOBPCG."""

import sys

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from skdsc import spectral
from skdsc.spectral import coefficients_to_labels, spectral_labels


def block_graph(n_samples=3000, n_clusters=6, n_within=16, n_across=1, seed=0):
    """A sparse affinity with clear clusters: most edges inside a cluster, a few across."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n_samples) % n_clusters)
    members = [np.flatnonzero(labels == c) for c in range(n_clusters)]
    rows, cols = [], []
    for i in range(n_samples):
        own = members[labels[i]]
        rows += [i] * (n_within + n_across)
        cols += list(rng.choice(own, n_within)) + list(rng.integers(0, n_samples, n_across))
    values = rng.uniform(0.5, 1.0, len(rows))
    coef = sp.csr_matrix((values, (rows, cols)), shape=(n_samples, n_samples))
    coef.setdiag(0)
    coef.eliminate_zeros()
    return coef, labels


def clusters_in_pieces(n_pieces=2, **kwargs):
    """Disconnected copies of a block graph: components written down exactly."""
    parts = [block_graph(seed=seed, **kwargs) for seed in range(n_pieces)]
    coef = sp.block_diag([part[0] for part in parts], format="csr")
    n_clusters = kwargs.get("n_clusters", 6)
    labels = np.concatenate([part[1] + k * n_clusters for k, part in enumerate(parts)])
    return coef, labels


@pytest.fixture
def pyamg():
    return pytest.importorskip("pyamg")


@pytest.fixture
def without_pyamg(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyamg", None)


# -- AMG against ARPACK ---------------------------------------------------------------------

@pytest.mark.parametrize("assign_labels", ["kmeans", "cluster_qr"])
def test_amg_labels_match_arpack(pyamg, assign_labels):
    coef, truth = block_graph()
    affinity = coef + coef.T
    arpack = spectral_labels(affinity, 6, random_state=0, assign_labels=assign_labels,
                             eigen_solver="arpack")
    amg = spectral_labels(affinity, 6, random_state=0, assign_labels=assign_labels,
                          eigen_solver="amg")
    assert adjusted_rand_score(arpack, amg) >= 0.99
    assert adjusted_rand_score(truth, amg) >= 0.99


def test_amg_with_components_matches_arpack(pyamg):
    # Two connected components, 12 clusters: 2 eigenvectors are written down,
    # the others are searched orthogonally to them.
    coef, truth = clusters_in_pieces(n_samples=1500)
    arpack = spectral_labels(coef, 12, random_state=0, eigen_solver="arpack")
    amg = spectral_labels(coef, 12, random_state=0, eigen_solver="amg")
    assert adjusted_rand_score(arpack, amg) >= 0.99
    assert adjusted_rand_score(truth, amg) >= 0.99


def test_amg_embedding_spans_the_arpack_embedding(pyamg):
    coef, _ = clusters_in_pieces(n_samples=1500)
    arpack = spectral._spectral_embedding_sparse(coef, 13, 0, "arpack")
    amg = spectral._spectral_embedding_sparse(coef, 13, 0, "amg")
    # Same invariant subspace (in the D^1/2 inner product the eigenvectors
    # are orthonormal in): the principal angles are near zero.
    q_arpack = np.linalg.qr(arpack)[0]
    q_amg = np.linalg.qr(amg)[0]
    cosines = np.linalg.svd(q_arpack.T @ q_amg, compute_uv=False)
    assert cosines.min() >= 0.999


def test_coefficients_to_labels_passes_the_solver(pyamg):
    coef, truth = block_graph(n_samples=2500, n_clusters=5)
    for affinity in ("symmetric", "dsc"):
        matrix_arpack, arpack = coefficients_to_labels(coef, 5, affinity=affinity,
                                                       random_state=0, eigen_solver="arpack")
        matrix_amg, amg = coefficients_to_labels(coef, 5, affinity=affinity, random_state=0,
                                                 eigen_solver="amg")
        assert (matrix_arpack != matrix_amg).nnz == 0  # the solver only changes the labels
        assert adjusted_rand_score(arpack, amg) >= 0.99
        assert adjusted_rand_score(truth, amg) >= 0.99


def test_amg_is_reproducible(pyamg):
    coef, _ = block_graph(n_samples=2000)
    first = spectral_labels(coef, 6, eigen_solver="amg", assign_labels="cluster_qr")
    np.random.seed(7)
    second = spectral_labels(coef, 6, eigen_solver="amg", assign_labels="cluster_qr")
    np.testing.assert_array_equal(first, second)


def test_amg_on_a_dense_affinity(pyamg):
    coef, truth = block_graph(n_samples=1000, n_clusters=4)
    dense = (coef + coef.T).toarray()
    labels = spectral_labels(dense, 4, random_state=0, eigen_solver="amg")
    assert adjusted_rand_score(truth, labels) >= 0.99


def test_amg_with_few_samples_is_exact(pyamg):
    # Fewer than 5 samples per vector: LOBPCG is not used.
    coef, truth = block_graph(n_samples=600, n_clusters=3, n_within=8)
    labels = spectral_labels(coef + coef.T, 3, n_components=3, random_state=0,
                             eigen_solver="amg")
    assert adjusted_rand_score(truth, labels) >= 0.99


# -- auto, validation, pyamg missing --------------------------------------------------------

def test_auto_is_arpack_below_its_size():
    coef, _ = block_graph(n_samples=2000)
    assert coef.shape[0] < spectral._AMG_MIN_SAMPLES
    for assign_labels in ("kmeans", "cluster_qr"):
        auto = spectral_labels(coef, 6, random_state=0, assign_labels=assign_labels)
        arpack = spectral_labels(coef, 6, random_state=0, assign_labels=assign_labels,
                                 eigen_solver="arpack")
        np.testing.assert_array_equal(auto, arpack)


def test_auto_resolution(monkeypatch, pyamg):
    monkeypatch.setattr(spectral, "_AMG_MIN_SAMPLES", 100)
    small, large = sp.random(99, 99, format="csr"), sp.random(100, 100, format="csr")
    assert spectral._resolve_eigen_solver("auto", small) == "arpack"
    assert spectral._resolve_eigen_solver("auto", large) == "amg"
    # Dense affinities are not large sparse graphs: ARPACK unless asked.
    assert spectral._resolve_eigen_solver("auto", large.toarray()) == "arpack"
    assert spectral._resolve_eigen_solver("amg", small) == "amg"


def test_auto_without_pyamg_is_arpack(monkeypatch, without_pyamg):
    monkeypatch.setattr(spectral, "_AMG_MIN_SAMPLES", 100)
    coef, _ = block_graph(n_samples=1200)
    assert spectral._resolve_eigen_solver("auto", coef) == "arpack"
    np.testing.assert_array_equal(
        spectral_labels(coef, 6, random_state=0),
        spectral_labels(coef, 6, random_state=0, eigen_solver="arpack"))


def test_amg_without_pyamg_raises_a_clear_error(without_pyamg):
    coef, _ = block_graph(n_samples=300)
    with pytest.raises(ImportError, match=r"pip install pyamg.*skdsc\[amg\]"):
        spectral_labels(coef, 6, eigen_solver="amg")
    with pytest.raises(ImportError, match="pip install pyamg"):
        coefficients_to_labels(coef, 6, eigen_solver="amg")


@pytest.mark.parametrize("eigen_solver", ["lobpcg", "AMG", None, ""])
def test_bad_eigen_solver_is_rejected(eigen_solver):
    coef, _ = block_graph(n_samples=300)
    message = r"eigen_solver must be one of \('auto', 'arpack', 'amg'\)"
    with pytest.raises(ValueError, match=message):
        spectral_labels(coef, 6, eigen_solver=eigen_solver)
    with pytest.raises(ValueError, match=message):
        coefficients_to_labels(coef, 6, eigen_solver=eigen_solver)
    with pytest.raises(ValueError, match=message):
        spectral_labels(coef.toarray(), 6, eigen_solver=eigen_solver)
