"""From self-expression coefficients to an affinity matrix and cluster labels."""

import numpy as np
from scipy.linalg import eigh
from scipy.sparse.linalg import eigsh
from sklearn.cluster import spectral_clustering
from sklearn.preprocessing import normalize
from sklearn.utils import check_random_state

AFFINITIES = ("dsc", "symmetric")
# Largest n for which the DSC affinity uses a dense eigendecomposition.
_DENSE_EIGH_MAX = 4000
# Columns thresholded at once.
_THRESHOLD_BLOCK = 512


def threshold_coefficients(coef, threshold):
    """Keep, in every column, the largest entries holding ``threshold`` of its l1 mass.

    Entries are taken in decreasing magnitude until their cumulative sum exceeds
    ``threshold`` times the column's l1 norm; the rest are set to zero (entries
    tied with the smallest kept one are kept too). This is the column
    thresholding of SSC and DSC-Net.

    Parameters
    ----------
    coef : ndarray of shape (n_samples, n_samples)
        Self-expression coefficients, column ``j`` being the weights with which
        sample ``j`` is used.
    threshold : float in (0, 1]
        Fraction of the l1 mass to keep; 1 keeps everything.

    Returns
    -------
    thresholded : ndarray of shape (n_samples, n_samples)
    """
    coef = np.asarray(coef, dtype=np.float64)
    if threshold >= 1:
        return coef.copy()
    thresholded = np.zeros_like(coef)
    # Column blocks bound the sorting buffers to O(n * block), not O(n^2).
    for start in range(0, coef.shape[1], _THRESHOLD_BLOCK):
        block = coef[:, start:start + _THRESHOLD_BLOCK]
        magnitude = np.abs(block)
        sorted_mag = -np.sort(-magnitude, axis=0)
        mass_before = np.cumsum(sorted_mag, axis=0)
        mass_before -= sorted_mag
        n_kept = np.count_nonzero(
            mass_before <= threshold * sorted_mag.sum(axis=0, keepdims=True), axis=0)
        smallest_kept = sorted_mag[n_kept - 1, np.arange(block.shape[1])]
        thresholded[:, start:start + _THRESHOLD_BLOCK] = np.where(
            magnitude >= smallest_kept, block, 0.0)
    return thresholded


def symmetric_affinity(coef):
    """The plain affinity ``|C| + |C|^T``.

    Parameters
    ----------
    coef : ndarray of shape (n_samples, n_samples)

    Returns
    -------
    affinity : ndarray of shape (n_samples, n_samples)
        Symmetric and non-negative.
    """
    magnitude = np.abs(np.asarray(coef, dtype=np.float64))
    return magnitude + magnitude.T


def dsc_affinity(coef, n_clusters, subspace_dim, power):
    """The DSC-Net affinity: a low-rank, angle-based rebuild of ``C``.

    ``C`` is symmetrised, its leading ``subspace_dim * n_clusters + 1`` singular
    vectors (scaled by the square root of their singular values) are normalised
    row-wise, and the affinity is the positive part of their inner products,
    raised to ``power`` and scaled to a maximum of 1.

    Parameters
    ----------
    coef : ndarray of shape (n_samples, n_samples)
    n_clusters : int
    subspace_dim : int
        Assumed dimension of each subspace.
    power : float
        Exponent that sharpens the affinity.

    Returns
    -------
    affinity : ndarray of shape (n_samples, n_samples)
        Symmetric, non-negative, with maximum 1.
    """
    coef = np.asarray(coef, dtype=np.float64)
    n_samples = coef.shape[0]
    rank = min(subspace_dim * n_clusters + 1, n_samples - 1)
    # In-place steps: at most two n x n float64 arrays are alive at once.
    sym = coef + coef.T
    sym *= 0.5
    u, s = _leading_singular_pairs(sym, rank)
    del sym
    u = normalize(u * np.sqrt(s), axis=1)
    affinity = u @ u.T
    np.maximum(affinity, 0.0, out=affinity)
    affinity **= power
    peak = affinity.max()
    if peak > 0:
        affinity /= peak
    affinity += affinity.T
    affinity *= 0.5
    return affinity


def _leading_singular_pairs(sym, rank):
    """Leading singular values and left singular vectors of a symmetric matrix.

    For a symmetric matrix these are the eigenpairs of largest ``|eigenvalue|``
    (up to the sign of each vector, which the affinity does not see). A dense
    eigendecomposition is exact, deterministic and, below a few thousand
    samples or when ``rank`` is a large part of ``n``, faster than ARPACK.
    """
    n_samples = sym.shape[0]
    if n_samples <= _DENSE_EIGH_MAX or 4 * rank >= n_samples:
        values, vectors = eigh(sym)
    else:
        # A fixed start vector keeps ARPACK, and so the labels, deterministic.
        values, vectors = eigsh(sym, k=rank, which="LM", v0=np.ones(n_samples))
    order = np.argsort(-np.abs(values))[:rank]
    return vectors[:, order], np.abs(values[order])


def coefficients_to_labels(coef, n_clusters, *, affinity="dsc", threshold=1.0,
                           subspace_dim=4, power=1.0, random_state=None):
    """Cluster samples from their self-expression coefficients.

    Parameters
    ----------
    coef : ndarray of shape (n_samples, n_samples)
        Self-expression coefficients with a zero diagonal.
    n_clusters : int
        Number of clusters.
    affinity : {"dsc", "symmetric"}, default="dsc"
        ``"dsc"`` is DSC-Net's post-processing (:func:`dsc_affinity`),
        ``"symmetric"`` the plain ``|C| + |C|^T``.
    threshold : float in (0, 1], default=1.0
        Column thresholding applied first (:func:`threshold_coefficients`).
    subspace_dim : int, default=4
        Subspace dimension for ``affinity="dsc"``.
    power : float, default=1.0
        Exponent for ``affinity="dsc"``.
    random_state : int, RandomState instance or None, default=None
        Seeds the start vector of the eigensolver.

    Returns
    -------
    affinity_matrix : ndarray of shape (n_samples, n_samples)
    labels : ndarray of shape (n_samples,)
    """
    if affinity not in AFFINITIES:
        raise ValueError(f"affinity must be one of {AFFINITIES}, got {affinity!r}.")
    thresholded = threshold_coefficients(coef, threshold)
    if affinity == "dsc":
        matrix = dsc_affinity(thresholded, n_clusters, subspace_dim, power)
    else:
        matrix = symmetric_affinity(thresholded)
    del thresholded  # one n x n array less while spectral clustering copies the affinity
    labels = spectral_labels(matrix, n_clusters, random_state=random_state)
    return matrix, labels


def spectral_labels(affinity_matrix, n_clusters, random_state=None):
    """Spectral clustering of a precomputed affinity (normalised cut).

    Labels come from the spectral embedding by column-pivoted QR
    (``assign_labels="cluster_qr"``, Damle et al. 2019): it has no random
    initialisation and, unlike the iterative discretisation, does not merge
    most samples into one cluster when a few weakly linked groups take
    eigenvectors of their own.
    """
    if not np.any(affinity_matrix):
        # An all-zero affinity has no structure to cut: one cluster is the honest answer.
        return np.zeros(affinity_matrix.shape[0], dtype=np.int64)
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    return spectral_clustering(
        affinity_matrix, n_clusters=n_clusters, eigen_solver="arpack",
        assign_labels="cluster_qr", random_state=seed,
    ).astype(np.int64)
