"""The sparse path of skdsc.spectral: sparse C -> sparse affinity -> labels."""

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from skdsc import spectral
from skdsc.spectral import (
    coefficients_to_labels,
    dsc_affinity,
    spectral_labels,
    symmetric_affinity,
    threshold_coefficients,
)

# Dense spectral clustering of disconnected blocks warns; that is expected here.
GRAPH_WARNING = "ignore:Graph is not fully connected:UserWarning"

SPARSE_FORMATS = [sp.csr_array, sp.csc_array, sp.coo_array, sp.csr_matrix, sp.coo_matrix]


def random_sparse(shape, density, seed, ties=False):
    """A random sparse COO matrix with empty columns, explicit zeros and duplicates.

    With ``ties``, magnitudes are a few powers of two, so that columns have
    tied entries and their partial sums are exact.
    """
    rng = np.random.RandomState(seed)
    rows, cols = np.nonzero(rng.uniform(size=shape) < density)
    if ties:
        values = rng.choice([0.25, 0.5, 1.0, 2.0], rows.size) * rng.choice([-1, 1], rows.size)
    else:
        values = rng.standard_normal(rows.size)
    empty = rng.choice(shape[1], 3, replace=False)
    values[np.isin(cols, empty)] = 0.0  # stored, but explicit zeros
    # Explicit zeros and duplicates (summed) anywhere.
    extra = rng.randint(rows.size, size=8)
    rows = np.concatenate([rows, rows[extra], rng.randint(shape[0], size=5)])
    cols = np.concatenate([cols, cols[extra], rng.randint(shape[1], size=5)])
    values = np.concatenate([values, values[extra], np.zeros(5)])
    return sp.coo_array((values, (rows, cols)), shape=shape)


def block_sparse_coefficients(sizes, density, seed=0):
    """A sparse, shuffled block-diagonal C with a zero diagonal, and its blocks."""
    rng = np.random.RandomState(seed)
    blocks = np.repeat(np.arange(len(sizes)), sizes)
    same = blocks[:, None] == blocks[None, :]
    mask = same & (rng.uniform(size=same.shape) < density)
    np.fill_diagonal(mask, False)
    rows, cols = np.nonzero(mask)
    values = rng.uniform(0.1, 1.0, rows.size) * rng.choice([-1, 1], rows.size, p=[0.2, 0.8])
    perm = rng.permutation(blocks.size)
    inverse = np.argsort(perm)
    coef = sp.csr_array((values, (inverse[rows], inverse[cols])), shape=same.shape)
    return coef, blocks[perm]


def planted_coefficients(n_samples, n_per_column, n_clusters, seed=0):
    """A sparse C whose columns use ``n_per_column`` samples of their own cluster."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(n_clusters, size=n_samples)
    by_cluster = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels, minlength=n_clusters)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    cols = np.repeat(np.arange(n_samples), n_per_column)
    picked = (rng.uniform(size=cols.size) * sizes[labels[cols]]).astype(np.int64)
    rows = by_cluster[starts[labels[cols]] + picked]
    values = rng.uniform(0.1, 1.0, cols.size) * rng.choice([-1, 1], cols.size, p=[0.2, 0.8])
    keep = rows != cols
    coef = sp.csc_array((values[keep], (rows[keep], cols[keep])), shape=(n_samples, n_samples))
    return coef, labels


def planted_graph(sizes, n_neighbors, n_cross, seed=0):
    """A symmetric kNN-like affinity within blocks, plus ``n_cross`` noisy edges."""
    rng = np.random.RandomState(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rows = np.repeat(np.arange(labels.size), n_neighbors)
    block_sizes = np.asarray(sizes)[labels[rows]]
    cols = starts[labels[rows]] + rng.randint(1 << 30, size=rows.size) % block_sizes
    cross_rows, cross_cols = rng.randint(labels.size, size=(2, n_cross))
    rows = np.concatenate([rows, cross_rows])
    cols = np.concatenate([cols, cross_cols])
    weights = rng.uniform(0.5, 1.0, rows.size)
    affinity = sp.csr_array((weights, (rows, cols)), shape=(labels.size, labels.size))
    return (affinity + affinity.T).tocsr(), labels


# -- threshold_coefficients ---------------------------------------------------

@pytest.mark.parametrize("threshold", [0.0, 0.05, 0.3, 0.5, 0.75, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_threshold_sparse_equals_dense(threshold, ties, seed):
    coef = random_sparse((40, 35), 0.2, seed, ties=ties)
    out = threshold_coefficients(coef, threshold)
    assert sp.issparse(out) and out.format == "csr" and out.dtype == np.float64
    assert_array_equal(out.toarray(), threshold_coefficients(coef.toarray(), threshold))
    assert out.nnz <= coef.nnz
    assert np.all(out.data != 0)  # explicit zeros are gone


@pytest.mark.parametrize("container", SPARSE_FORMATS)
def test_threshold_sparse_accepts_any_format(container):
    coef = random_sparse((30, 30), 0.3, 0, ties=True)
    out = threshold_coefficients(container(coef), 0.5)
    assert out.format == "csr"
    assert_array_equal(out.toarray(), threshold_coefficients(coef.toarray(), 0.5))


def test_threshold_sparse_integer_and_empty():
    coef = sp.csr_array(np.array([[0, 3, 0], [2, 0, 0], [2, 1, 0]]))
    out = threshold_coefficients(coef, 0.4)
    assert out.dtype == np.float64
    assert_array_equal(out.toarray(), [[0, 3, 0], [2, 0, 0], [2, 0, 0]])
    empty = threshold_coefficients(sp.csr_array((4, 4)), 0.5)
    assert empty.nnz == 0 and empty.shape == (4, 4)


def test_threshold_sparse_does_not_alias():
    coef = sp.csr_array(random_sparse((10, 10), 0.5, 0))
    before = coef.toarray()
    for threshold in (0.5, 1.0):
        out = threshold_coefficients(coef, threshold)
        out.data[:] = 7.0
        assert_array_equal(coef.toarray(), before)


def test_segmented_cumsum_sums_like_numpy():
    """Each segment is summed left to right, bit for bit as np.cumsum."""
    rng = np.random.RandomState(0)
    lengths = rng.randint(0, 30, size=50)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    values = rng.standard_normal(indptr[-1]) * 1e3
    sums = spectral._segmented_cumsum(values, indptr)
    for start, stop in zip(indptr[:-1], indptr[1:]):
        assert_array_equal(sums[start:stop], np.cumsum(values[start:stop]))


# -- affinities ---------------------------------------------------------------

@pytest.mark.parametrize("container", SPARSE_FORMATS)
def test_symmetric_affinity_sparse_equals_dense(container):
    coef = random_sparse((25, 25), 0.2, 1)
    out = symmetric_affinity(container(coef))
    assert out.format == "csr"
    assert_allclose(out.toarray(), symmetric_affinity(coef.toarray()))


def test_dsc_affinity_sparse_is_dense_on_the_pattern():
    """Small enough for exact eigendecompositions on both paths: the sparse
    affinity is the dense one restricted to the off-diagonal pattern of C + C^T."""
    coef, blocks = block_sparse_coefficients([30, 40, 50], density=0.4)
    affinity = dsc_affinity(coef, n_clusters=3, subspace_dim=3, power=2.0)
    assert affinity.format == "csr"
    assert np.all(affinity.data > 0) and affinity.data.max() <= 1.0
    assert abs(affinity - affinity.T).max() == 0
    assert np.all(affinity.diagonal() == 0)
    rows, cols = affinity.nonzero()
    assert np.all(blocks[rows] == blocks[cols])  # no edge across clusters
    assert affinity.data.max() > 0.5

    dense_coef = coef.toarray()
    pattern = (dense_coef + dense_coef.T) != 0
    np.fill_diagonal(pattern, False)
    assert np.all(pattern[rows, cols])
    dense = dsc_affinity(dense_coef, n_clusters=3, subspace_dim=3, power=2.0)
    assert_allclose(affinity.toarray(), np.where(pattern, dense, 0.0), atol=1e-8)


def test_dsc_affinity_sparse_matrix_input():
    coef, _ = block_sparse_coefficients([20, 25], density=0.5, seed=1)
    array = dsc_affinity(coef, 2, 2, 1.0)
    matrix = dsc_affinity(sp.coo_matrix(coef), 2, 2, 1.0)
    assert matrix.format == "csr"
    assert_allclose(matrix.toarray(), array.toarray())


@pytest.mark.parametrize("dense_max", [10_000, 0])
def test_leading_singular_pairs_sparse_match_svd(monkeypatch, dense_max):
    """Dense and ARPACK paths of a sparse symmetric matrix give its leading
    singular pairs."""
    monkeypatch.setattr(spectral, "_SPARSE_DENSE_EIGH_MAX", dense_max)
    a = sp.random_array((200, 200), density=0.05, random_state=0)
    sym = (a + a.T).tocsr()
    vectors, values = spectral._leading_singular_pairs(sym, 5)
    u, s, _ = np.linalg.svd(sym.toarray())
    assert_allclose(values, s[:5], rtol=1e-8)
    assert_allclose(vectors @ vectors.T, u[:, :5] @ u[:, :5].T, atol=1e-8)


# -- spectral_labels ----------------------------------------------------------

@pytest.mark.parametrize("assign_labels", ["kmeans", "cluster_qr"])
def test_spectral_labels_sparse_recovers_planted_clusters(assign_labels):
    affinity, labels = planted_graph([400] * 5, n_neighbors=10, n_cross=40)
    predicted = spectral_labels(affinity, 5, random_state=0, assign_labels=assign_labels)
    assert predicted.dtype == np.int64 and predicted.shape == labels.shape
    assert adjusted_rand_score(labels, predicted) >= 0.99


@pytest.mark.parametrize("assign_labels", ["kmeans", "cluster_qr"])
def test_spectral_labels_sparse_disconnected_blocks(assign_labels):
    """Disconnected clusters share eigenvalue 1, which ARPACK alone would find
    only once: every block is still recovered."""
    affinity, labels = planted_graph([300, 350, 400, 450, 500], n_neighbors=6, n_cross=0)
    predicted = spectral_labels(affinity, 5, random_state=0, assign_labels=assign_labels)
    assert adjusted_rand_score(labels, predicted) == 1.0


@pytest.mark.parametrize("assign_labels", ["kmeans", "cluster_qr"])
def test_spectral_labels_sparse_more_components_than_clusters(assign_labels):
    """The largest components are clusters of their own."""
    affinity, labels = planted_graph([400, 300, 250, 20], n_neighbors=6, n_cross=0)
    predicted = spectral_labels(affinity, 3, random_state=0, assign_labels=assign_labels)
    large = labels < 3
    assert adjusted_rand_score(labels[large], predicted[large]) == 1.0


@pytest.mark.filterwarnings(GRAPH_WARNING)
@pytest.mark.parametrize("sizes", [[60, 80, 100], [130, 150, 170, 190]])
@pytest.mark.parametrize("assign_labels", ["kmeans", "cluster_qr"])
def test_spectral_labels_sparse_agrees_with_dense(sizes, assign_labels):
    """Both the exact (small n) and the ARPACK sparse paths agree with the dense one."""
    affinity, _ = planted_graph(sizes, n_neighbors=8, n_cross=10, seed=1)
    n_clusters = len(sizes)
    options = dict(random_state=0, assign_labels=assign_labels)
    sparse_labels = spectral_labels(affinity, n_clusters, **options)
    dense_labels = spectral_labels(affinity.toarray(), n_clusters, **options)
    assert adjusted_rand_score(dense_labels, sparse_labels) == 1.0


@pytest.mark.parametrize("random_state, assign_labels", [
    (0, "kmeans"), (1, "kmeans"), (None, "cluster_qr"), (0, "cluster_qr"),
])
def test_spectral_labels_sparse_is_deterministic(random_state, assign_labels):
    """A seed fixes the labels; without one, cluster_qr (no random start) still does."""
    affinity, _ = planted_graph([300, 320, 340], n_neighbors=8, n_cross=30, seed=2)
    first = spectral_labels(affinity, 3, random_state=random_state, assign_labels=assign_labels)
    assert_array_equal(
        spectral_labels(affinity, 3, random_state=random_state, assign_labels=assign_labels),
        first)


@pytest.mark.parametrize("sizes", [[50, 60], [300, 400]])
@pytest.mark.parametrize("assign_labels", ["kmeans", "cluster_qr"])
def test_spectral_labels_sparse_zero_degree_rows(sizes, assign_labels):
    """Isolated samples neither crash nor disturb the other clusters."""
    affinity, labels = planted_graph(sizes, n_neighbors=6, n_cross=0)
    n = labels.size
    padded = sp.block_array([[affinity, None], [None, sp.csr_array((5, 5))]]).tocsr()
    predicted = spectral_labels(padded, 2, random_state=0)
    assert predicted.shape == (n + 5,)
    assert adjusted_rand_score(labels, predicted[:n]) == 1.0


@pytest.mark.parametrize("affinity", [
    sp.csr_array((6, 6)),
    sp.csr_array((np.zeros(3), ([0, 1, 2], [1, 2, 0])), shape=(6, 6)),  # explicit zeros
    sp.coo_array(np.diag(np.ones(6))),  # self-loops only
])
def test_spectral_labels_sparse_without_edges(affinity):
    assert_array_equal(spectral_labels(affinity, 3, random_state=0), np.zeros(6))


def test_spectral_labels_sparse_one_cluster():
    affinity, _ = planted_graph([30, 40], n_neighbors=5, n_cross=0)
    labels = spectral_labels(affinity, 1)
    assert labels.dtype == np.int64
    assert_array_equal(labels, 0)


# -- coefficients_to_labels -------------------------------------------------

@pytest.mark.parametrize("affinity", ["dsc", "symmetric"])
@pytest.mark.parametrize("threshold", [1.0, 0.5])
def test_coefficients_to_labels_sparse_recovers_blocks(affinity, threshold):
    coef, blocks = block_sparse_coefficients([30, 40, 50], density=0.6)
    matrix, labels = coefficients_to_labels(
        sp.coo_array(coef), 3, affinity=affinity, threshold=threshold,
        subspace_dim=3, power=2.0, random_state=0)
    assert matrix.format == "csr"
    assert labels.dtype == np.int64
    # DSC's positive part, restricted to the pattern of a thresholded C, can
    # cut a few samples off their block.
    assert adjusted_rand_score(blocks, labels) >= (0.9 if affinity == "dsc" else 1.0)
    assert abs(matrix - matrix.T).max() < 1e-12
    assert matrix.data.min() >= 0


def test_coefficients_to_labels_sparse_symmetric_matches_composition():
    coef, _ = block_sparse_coefficients([30, 40], density=0.3, seed=4)
    matrix, _ = coefficients_to_labels(coef, 2, affinity="symmetric", threshold=0.3)
    expected = symmetric_affinity(threshold_coefficients(coef.toarray(), 0.3))
    assert_allclose(matrix.toarray(), expected)


@pytest.mark.parametrize("affinity", ["dsc", "symmetric"])
def test_coefficients_to_labels_sparse_never_goes_dense(affinity):
    """n = 20,000: a dense n x n float64 array would be 3.2 GB."""
    n_samples, n_per_column = 20_000, 10
    coef, blocks = planted_coefficients(n_samples, n_per_column, n_clusters=10)
    # One BLAS thread: ARPACK's small dense products thrash on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        tracemalloc.start()
        try:
            matrix, labels = coefficients_to_labels(
                coef, 10, affinity=affinity, threshold=0.9, power=2.0, random_state=0)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert sp.issparse(matrix) and matrix.format == "csr"
    assert matrix.nnz <= 4 * n_samples * n_per_column
    assert adjusted_rand_score(blocks, labels) > 0.9
    assert peak < 200 * 2 ** 20, f"traced peak {peak / 2 ** 20:.0f} MiB"
