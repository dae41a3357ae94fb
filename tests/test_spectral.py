"""Coefficients -> affinity -> labels (skdsc.spectral)."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import sparse
from sklearn.metrics import adjusted_rand_score

from skdsc import spectral
from skdsc.datasets import make_subspaces
from skdsc.metrics import clustering_accuracy
from skdsc.spectral import (
    check_n_components,
    coefficients_to_labels,
    dsc_affinity,
    spectral_labels,
    symmetric_affinity,
    threshold_coefficients,
)


def block_coefficients(sizes, seed=0):
    """A block-diagonal coefficient matrix (zero diagonal) with rows shuffled.

    Returns the matrix and the block of every sample. Blocks have distinct
    sizes so that their spectra do not coincide.
    """
    rng = np.random.RandomState(seed)
    n = sum(sizes)
    coef = np.zeros((n, n))
    blocks = np.repeat(np.arange(len(sizes)), sizes)
    start = 0
    for size in sizes:
        block = rng.uniform(0.1, 1.0, (size, size)) * rng.choice([-1, 1], (size, size))
        coef[start:start + size, start:start + size] = block
        start += size
    np.fill_diagonal(coef, 0.0)
    perm = rng.permutation(n)
    return coef[np.ix_(perm, perm)], blocks[perm]


# -- threshold_coefficients ---------------------------------------------------

def test_threshold_keeps_largest_entries_per_column():
    """Per column, entries are kept in decreasing |value| until the mass reaches
    the threshold; the entry that crosses it is kept, signs are preserved."""
    coef = np.array([
        [0.5, 0.0, 0.1],
        [-0.3, 0.2, 0.1],
        [0.15, -0.6, 0.1],
        [0.05, 0.2, 0.7],
    ])
    expected = np.array([
        [0.5, 0.0, 0.0],
        [-0.3, 0.0, 0.0],
        [0.0, -0.6, 0.0],
        [0.0, 0.0, 0.7],
    ])
    assert_array_equal(threshold_coefficients(coef, 0.55), expected)
    # 0.4 of column 0's mass is reached by 0.5 alone.
    assert_array_equal(threshold_coefficients(coef, 0.4)[:, 0], [0.5, 0, 0, 0])
    # Keeping 0.9: column 1 needs 0.6 and both 0.2s (0.8 < 0.9), not the zero.
    assert np.count_nonzero(threshold_coefficients(coef, 0.9)[:, 1]) == 3


def test_threshold_keeps_the_entry_that_reaches_the_mass_exactly():
    """Entries are taken until the kept mass *exceeds* the threshold: with exact
    binary fractions, the 0.25 that brings the mass to 0.75 > 0.5 is kept because
    the mass before it (0.5) does not exceed 0.5."""
    coef = np.array([[0.0, 0.5], [0.5, 0.0], [0.25, 0.25], [0.125, 0.125], [0.125, 0.125]])
    out = threshold_coefficients(coef, 0.5)
    assert_array_equal(out[:, 0], [0.0, 0.5, 0.25, 0.0, 0.0])


def test_threshold_one_is_identity():
    coef = np.random.RandomState(0).standard_normal((6, 6))
    out = threshold_coefficients(coef, 1.0)
    assert_array_equal(out, coef)
    assert out is not coef  # a copy: the caller's matrix is never aliased


def test_threshold_zero_column_stays_zero():
    coef = np.random.RandomState(0).standard_normal((5, 5))
    coef[:, 2] = 0.0
    out = threshold_coefficients(coef, 0.3)
    assert_array_equal(out[:, 2], 0.0)
    assert np.all(np.count_nonzero(out[:, [0, 1, 3, 4]], axis=0) >= 1)


def test_threshold_keeps_at_least_the_mass_asked_for():
    coef = np.random.RandomState(1).standard_normal((20, 20))
    for threshold in (0.05, 0.3, 0.7, 0.99):
        out = threshold_coefficients(coef, threshold)
        kept = np.abs(out).sum(0) / np.abs(coef).sum(0)
        assert np.all(kept >= threshold - 1e-12)
        assert set(np.flatnonzero(out)) <= set(np.flatnonzero(coef))


# -- affinities ---------------------------------------------------------------

def test_symmetric_affinity():
    coef = np.random.RandomState(0).standard_normal((7, 7))
    A = symmetric_affinity(coef)
    assert_allclose(A, np.abs(coef) + np.abs(coef).T)
    assert_array_equal(A, A.T)
    assert np.all(A >= 0)


def test_dsc_affinity_properties():
    coef = np.random.RandomState(0).standard_normal((30, 30))
    np.fill_diagonal(coef, 0)
    A = dsc_affinity(coef, n_clusters=3, subspace_dim=2, power=2.0)
    assert A.shape == (30, 30)
    assert_allclose(A, A.T)
    assert np.all(A >= 0)
    assert A.max() == pytest.approx(1.0)


def test_dsc_affinity_has_no_cross_block_edges():
    """For a block-diagonal C, samples of different blocks get affinity 0."""
    coef, blocks = block_coefficients([9, 11, 13])
    A = dsc_affinity(coef, n_clusters=3, subspace_dim=3, power=2.0)
    cross = blocks[:, None] != blocks[None, :]
    assert_allclose(A[cross], 0.0, atol=1e-10)
    assert A[~cross].max() > 0.5


def test_dsc_affinity_power_sharpens():
    """A higher power lowers every affinity below 1 (values are in [0, 1])."""
    coef, _ = block_coefficients([9, 11, 13], seed=2)
    soft = dsc_affinity(coef, 3, 3, power=1.0)
    sharp = dsc_affinity(coef, 3, 3, power=4.0)
    assert np.all(sharp <= soft + 1e-12)
    assert np.any(sharp < soft - 1e-3)


def test_dsc_affinity_is_deterministic():
    coef, _ = block_coefficients([9, 11, 13], seed=3)
    assert_array_equal(dsc_affinity(coef, 3, 3, 2.0), dsc_affinity(coef, 3, 3, 2.0))


# -- labels -------------------------------------------------------------------

# Disconnected blocks are the point here, so spectral_embedding's warning is expected.
GRAPH_WARNING = "ignore:Graph is not fully connected:UserWarning"


@pytest.mark.filterwarnings(GRAPH_WARNING)
@pytest.mark.parametrize("affinity", ["dsc", "symmetric"])
@pytest.mark.parametrize("threshold", [1.0, 0.5])
def test_coefficients_to_labels_recovers_blocks(affinity, threshold):
    """The blocks of a shuffled block-diagonal C come back as the clusters."""
    coef, blocks = block_coefficients([9, 11, 13])
    matrix, labels = coefficients_to_labels(coef, 3, affinity=affinity, threshold=threshold,
                                            subspace_dim=3, power=2.0, random_state=0)
    assert labels.shape == (33,) and labels.dtype == np.int64
    assert clustering_accuracy(blocks, labels) == 1.0
    assert_allclose(matrix, matrix.T)
    assert np.all(matrix >= 0)


@pytest.mark.filterwarnings(GRAPH_WARNING)
def test_coefficients_to_labels_uses_the_threshold():
    coef, _ = block_coefficients([9, 11, 13])
    full, _ = coefficients_to_labels(coef, 3, affinity="symmetric", threshold=1.0)
    cut, _ = coefficients_to_labels(coef, 3, affinity="symmetric", threshold=0.3)
    assert_allclose(full, symmetric_affinity(coef))
    assert_allclose(cut, symmetric_affinity(threshold_coefficients(coef, 0.3)))
    assert np.count_nonzero(cut) < np.count_nonzero(full)


def test_coefficients_to_labels_is_seeded():
    coef = np.abs(np.random.RandomState(0).standard_normal((40, 40)))
    np.fill_diagonal(coef, 0)
    first = coefficients_to_labels(coef, 4, random_state=0)[1]
    assert_array_equal(coefficients_to_labels(coef, 4, random_state=0)[1], first)


def test_coefficients_to_labels_bad_affinity():
    with pytest.raises(ValueError, match="affinity must be one of"):
        coefficients_to_labels(np.eye(4), 2, affinity="cosine")


def test_spectral_labels_of_zero_affinity():
    """No edges: everything is one cluster rather than an arbitrary cut."""
    assert_array_equal(spectral_labels(np.zeros((6, 6)), 3, random_state=0), np.zeros(6))


@pytest.mark.parametrize("dense_max", [10_000, 0])
def test_leading_singular_pairs_match_svd(monkeypatch, dense_max):
    """Dense and ARPACK paths give the leading singular pairs of a symmetric matrix."""
    monkeypatch.setattr(spectral, "_DENSE_EIGH_MAX", dense_max)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 60))
    sym = a + a.T  # indefinite: large singular values come from both signs
    vectors, values = spectral._leading_singular_pairs(sym, 5)
    u, s, _ = np.linalg.svd(sym)
    assert_allclose(values, s[:5], rtol=1e-8)
    # Same subspace: projectors agree whatever the sign of each vector.
    assert_allclose(vectors @ vectors.T, u[:, :5] @ u[:, :5].T, atol=1e-8)


def test_spectral_labels_cluster_qr_does_not_depend_on_seed():
    """cluster_qr has no random start: labels do not depend on random_state."""
    X, _ = make_subspaces(n_clusters=3, n_samples_per_cluster=20, random_state=0)
    affinity = np.abs(X @ X.T)
    assert_array_equal(spectral_labels(affinity, 3, random_state=0, assign_labels="cluster_qr"),
                       spectral_labels(affinity, 3, random_state=1, assign_labels="cluster_qr"))


@pytest.mark.parametrize("assign_labels", ["kmeans", "cluster_qr"])
def test_spectral_labels_same_seed_same_labels(assign_labels):
    X, y = make_subspaces(n_clusters=3, n_samples_per_cluster=20, random_state=0)
    affinity = np.abs(X @ X.T)
    first = spectral_labels(affinity, 3, random_state=0, assign_labels=assign_labels)
    assert_array_equal(spectral_labels(affinity, 3, random_state=0, assign_labels=assign_labels),
                       first)
    assert clustering_accuracy(y, first) >= 0.9


def test_kmeans_assignment_scales_rows_to_unit_length():
    """Rows of one direction form one cluster whatever their length: k-means on
    the raw rows would split the long from the short ones."""
    rng = np.random.default_rng(0)
    directions = np.array([[1.0, 0.1], [0.1, 1.0]])
    lengths = np.concatenate([rng.uniform(0.05, 0.1, 50), rng.uniform(5, 10, 50)])
    truth = np.tile([0, 1], 50)
    embedding = directions[truth] * lengths[:, np.newaxis]
    labels = spectral._kmeans_on_directions(embedding, 2, 0)
    assert clustering_accuracy(truth, labels) == 1.0


def test_spectral_labels_rejects_unknown_assignment():
    with pytest.raises(ValueError, match="assign_labels must be one of"):
        spectral_labels(np.ones((4, 4)), 2, assign_labels="discretize")


# -- n_components: the size of the spectral embedding --------------------------

def chain_and_two_close_blobs(seed=0):
    """A graph whose n_clusters leading eigenvectors miss one of its clusters.

    A chain of 100 samples (each linked to its next 20) is a cluster, loosely
    tied to two blobs of 100 that share many edges with each other. The chain's
    first cut through itself costs less (normalised-Laplacian eigenvalue about
    0.09) than the cut between the blobs (about 0.26), and its second costs more
    (about 0.31): the 3 leading eigenvectors split the chain and merge the
    blobs, a fourth holds the cut between the blobs.
    """
    rng = np.random.default_rng(seed)
    n_chain, n_blob = 100, 100
    rows, cols = [], []
    for step in range(1, 21):
        rows.append(np.arange(n_chain - step))
        cols.append(np.arange(step, n_chain))
    first, second = n_chain + np.arange(n_blob), n_chain + n_blob + np.arange(n_blob)
    for left, right, density in ((first, first, 0.3), (second, second, 0.3),
                                 (first, second, 0.1)):
        r, c = np.nonzero(np.triu(rng.random((n_blob, n_blob)) < density, 1))
        rows.append(left[r])
        cols.append(right[c])
    rows.append([n_chain - 1])  # one edge keeps the graph connected
    cols.append([n_chain])
    n = n_chain + 2 * n_blob
    upper = sparse.csr_matrix((np.ones(sum(map(len, rows))),
                               (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return (upper + upper.T).tocsr(), np.repeat([0, 1, 2], [n_chain, n_blob, n_blob])


@pytest.mark.parametrize("as_sparse", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_one_more_eigenvector_keeps_the_cut_between_close_clusters(as_sparse, seed):
    affinity, truth = chain_and_two_close_blobs(seed)
    if not as_sparse:
        affinity = affinity.toarray()
    exactly_k = spectral_labels(affinity, 3, random_state=seed, n_components=3)
    auto = spectral_labels(affinity, 3, random_state=seed)
    assert adjusted_rand_score(truth, exactly_k) < 0.6  # the chain split, the blobs merged
    assert adjusted_rand_score(truth, auto) == 1.0
    assert_array_equal(auto, spectral_labels(affinity, 3, random_state=seed, n_components=4))


@pytest.mark.parametrize("assign_labels, n_clusters, n_samples, expected", [
    ("kmeans", 3, 100, 4), ("kmeans", 3, 3, 3), ("cluster_qr", 3, 100, 3),
])
def test_auto_n_components(assign_labels, n_clusters, n_samples, expected):
    """"auto" is one eigenvector more than clusters for k-means (at most
    n_samples), exactly n_clusters for cluster_qr."""
    assert check_n_components("auto", n_clusters, assign_labels, n_samples) == expected


@pytest.mark.parametrize("n_components", [2, 4])
def test_kmeans_takes_any_embedding_size(n_components):
    """k-means finds n_clusters clusters in fewer or more eigenvectors."""
    coef, blocks = block_coefficients([20, 25, 30])
    _, labels = coefficients_to_labels(coef, 3, n_components=n_components, random_state=0)
    assert set(labels) <= {0, 1, 2}
    if n_components >= 3:
        assert clustering_accuracy(blocks, labels) == 1.0


@pytest.mark.parametrize("n_components, assign_labels, message", [
    (0, "kmeans", r"n_components must be 'auto' or an int in \[1, n_samples=30\], got 0"),
    (31, "kmeans", r"an int in \[1, n_samples=30\], got 31"),
    (2.0, "kmeans", r"an int in \[1, n_samples=30\], got 2.0"),
    (True, "kmeans", r"an int in \[1, n_samples=30\], got True"),
    ("max", "kmeans", r"an int in \[1, n_samples=30\], got 'max'"),
    (4, "cluster_qr", "n_components must be 'auto' or n_clusters=3, got 4"),
])
def test_bad_n_components(n_components, assign_labels, message):
    coef, _ = block_coefficients([10, 10, 10])
    with pytest.raises(ValueError, match=message):
        spectral_labels(symmetric_affinity(coef), 3, n_components=n_components,
                        assign_labels=assign_labels)
    with pytest.raises(ValueError, match=message):
        coefficients_to_labels(coef, 3, n_components=n_components, assign_labels=assign_labels)
