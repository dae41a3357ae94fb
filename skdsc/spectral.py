"""From self-expression coefficients to an affinity matrix and cluster labels.

Every function accepts a dense ndarray or a ``scipy.sparse`` matrix. A sparse
input (in any format) stays sparse from end to end: nothing of shape
``(n_samples, n_samples)`` is ever made dense, so that coefficients with a few
entries per sample scale to tens of thousands of samples.
"""

import importlib
import numbers

import numpy as np
import scipy.sparse as sp
from scipy.linalg import eigh, qr, svd
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import LinearOperator, eigsh, lobpcg
from sklearn.cluster import KMeans, spectral_clustering
from sklearn.manifold import spectral_embedding
from sklearn.preprocessing import normalize
from sklearn.utils import check_random_state

AFFINITIES = ("dsc", "symmetric")
LABEL_ASSIGNMENTS = ("kmeans", "cluster_qr")
EIGEN_SOLVERS = ("auto", "arpack", "amg")
# eigen_solver="auto" takes AMG-preconditioned LOBPCG for a sparse affinity of
# at least this many samples when pyamg is installed, ARPACK otherwise.
# Measured on one thread of a shared two-core machine, 10 clusters
# (benchmarks/RESULTS.md, "Scale-out"): on synthetic sparse coefficients with
# 32 entries per row (benchmarks/suites.py, sparse_coefficients) the whole
# post-processing took 0.3, 22 and 200 s with ARPACK at 10,000, 100,000 and
# 300,000 samples, and over 900 s at 1,000,000; 0.4, 19, 75 and 456 s with
# AMG. On the 32-nearest-neighbour graphs of 10,000 and 70,000 MNIST digits
# spectral_labels took 0.2 and 2.5-3.0 s with ARPACK, 0.3-0.4 and 3.9-4.1 s
# with AMG, with the same labels. Below 100,000 samples ARPACK is the faster
# one, and it stays the default there whether pyamg is installed or not.
_AMG_MIN_SAMPLES = 100_000
# LOBPCG: residual tolerance (scikit-learn's advice: not below 1e-5 with AMG)
# and iteration cap.
_LOBPCG_TOL = 1e-5
_LOBPCG_MAXITER = 500
# Diagonal shift of the Laplacian that the AMG hierarchy is built from: the
# Laplacian itself is singular (as in scikit-learn's "amg" solver).
_AMG_SHIFT = 1e-5
# Damped Jacobi weight of the multigrid smoother, over the spectral radius of
# D^-1 A (pyamg's default for its Jacobi smoother).
_JACOBI_WEIGHT = 4 / 3
# k-means restarts on the spectral embedding (scikit-learn's SpectralClustering default).
_KMEANS_N_INIT = 10
# Largest n for which the DSC affinity uses a dense eigendecomposition.
_DENSE_EIGH_MAX = 4000
# Largest n for which a sparse matrix is made dense for an exact eigensolver:
# below it ``eigh`` is fast and exact, above it ARPACK is used.
_SPARSE_DENSE_EIGH_MAX = 500
# Columns thresholded at once.
_THRESHOLD_BLOCK = 512
# Floats gathered at once (per operand) when the sparse DSC affinity takes the
# inner products of its stored pairs: 8 MiB.
_GATHER_BLOCK = 2 ** 20


def threshold_coefficients(coef, threshold):
    """Keep, in every column, the largest entries holding ``threshold`` of its l1 mass.

    Entries are taken in decreasing magnitude until their cumulative sum exceeds
    ``threshold`` times the column's l1 norm; the rest are set to zero (entries
    tied with the smallest kept one are kept too). This is the column
    thresholding of SSC and DSC-Net.

    Parameters
    ----------
    coef : {ndarray, sparse matrix} of shape (n_samples, n_samples)
        Self-expression coefficients, column ``j`` being the weights with which
        sample ``j`` is used.
    threshold : float in (0, 1]
        Fraction of the l1 mass to keep; 1 keeps everything.

    Returns
    -------
    thresholded : {ndarray, sparse matrix} of shape (n_samples, n_samples)
        An ndarray for a dense ``coef``. For a sparse ``coef``, a CSR matrix
        (float64, no explicit zeros) equal to the dense result: the rule only
        looks at the stored entries of each column.
    """
    if sp.issparse(coef):
        return _threshold_sparse(coef, threshold)
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


def _threshold_sparse(coef, threshold):
    """:func:`threshold_coefficients` over the stored entries of a sparse matrix."""
    coef = _canonical(coef.tocsc())
    if threshold >= 1:
        return coef.tocsr()
    n_columns = coef.shape[1]
    lengths = np.diff(coef.indptr)
    starts = coef.indptr[:-1]
    columns = np.repeat(np.arange(n_columns), lengths)
    magnitude = np.abs(coef.data)

    # Entries grouped by column, each column in decreasing magnitude: the
    # layout of the dense rule's sorted column, less its trailing zeros (which
    # change neither the mass before an entry nor the column's mass).
    sorted_mag = magnitude[np.lexsort((-magnitude, columns))]
    mass = _segmented_cumsum(sorted_mag, coef.indptr)
    non_empty = lengths > 0
    column_mass = np.zeros(n_columns)
    column_mass[non_empty] = mass[coef.indptr[1:][non_empty] - 1]
    mass -= sorted_mag  # the mass before each entry
    within = mass <= threshold * column_mass[columns]
    # The largest entry has no mass before it, so a column keeps at least one.
    n_kept = np.maximum(np.bincount(columns[within], minlength=n_columns), 1)
    smallest_kept = np.zeros(n_columns)
    smallest_kept[non_empty] = sorted_mag[(starts + n_kept - 1)[non_empty]]

    keep = magnitude >= smallest_kept[columns]
    indptr = np.zeros(n_columns + 1, dtype=coef.indptr.dtype)
    np.cumsum(np.bincount(columns[keep], minlength=n_columns), out=indptr[1:])
    kept = type(coef)((coef.data[keep], coef.indices[keep], indptr), shape=coef.shape)
    return kept.tocsr()


def _segmented_cumsum(values, indptr):
    """Cumulative sums of ``values`` restarting at every ``indptr`` boundary.

    Each segment is summed left to right, as :func:`numpy.cumsum` sums a dense
    column, so that both round alike. The loop runs over positions within a
    segment (up to the longest segment), each step adding the previous partial
    sum of every segment still that long; the total work is O(len(values)).
    """
    sums = values.copy()
    lengths = np.diff(indptr)
    if sums.size == 0:
        return sums
    by_length = np.argsort(-lengths, kind="stable")
    starts = indptr[:-1][by_length]
    # n_longer[p] is the number of segments with more than p entries.
    n_longer = np.searchsorted(-lengths[by_length], -np.arange(lengths.max()), side="left")
    for position in range(1, lengths.max()):
        at = starts[:n_longer[position]] + position
        sums[at] += sums[at - 1]
    return sums


def symmetric_affinity(coef):
    """The plain affinity ``|C| + |C|^T``.

    Parameters
    ----------
    coef : {ndarray, sparse matrix} of shape (n_samples, n_samples)

    Returns
    -------
    affinity : {ndarray, sparse matrix} of shape (n_samples, n_samples)
        Symmetric and non-negative; a CSR matrix when ``coef`` is sparse.
    """
    if sp.issparse(coef):
        magnitude = abs(_canonical(coef.tocsr()))
        return (magnitude + magnitude.T).tocsr()
    magnitude = np.abs(np.asarray(coef, dtype=np.float64))
    return magnitude + magnitude.T


def dsc_affinity(coef, n_clusters, subspace_dim, power):
    """The DSC-Net affinity: a low-rank, angle-based rebuild of ``C``.

    ``C`` is symmetrised, its leading ``subspace_dim * n_clusters + 1`` singular
    vectors (scaled by the square root of their singular values) are normalised
    row-wise, and the affinity is the positive part of their inner products,
    raised to ``power`` and scaled to a maximum of 1.

    For a sparse ``coef``, the affinity is DSC-Net's restricted to the pairs
    ``(i, j)``, ``i != j``, where ``C + C^T`` is non-zero: the singular vectors
    are those of the sparse ``(C + C^T) / 2`` and only the stored pairs get an
    inner product, so the result has at most the non-zeros of ``C + C^T``.
    The scaling is the dense one, whose maximum is on the diagonal (1 for every
    normalised row), so the stored values equal the corresponding entries of
    the dense affinity and are at most 1.

    Parameters
    ----------
    coef : {ndarray, sparse matrix} of shape (n_samples, n_samples)
    n_clusters : int
    subspace_dim : int
        Assumed dimension of each subspace.
    power : float
        Exponent that sharpens the affinity.

    Returns
    -------
    affinity : {ndarray, sparse matrix} of shape (n_samples, n_samples)
        Symmetric, non-negative, with maximum 1 (at most 1 when sparse); a CSR
        matrix without diagonal when ``coef`` is sparse.
    """
    if sp.issparse(coef):
        return _dsc_affinity_sparse(coef, n_clusters, subspace_dim, power)
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


def _dsc_affinity_sparse(coef, n_clusters, subspace_dim, power):
    """:func:`dsc_affinity` on the off-diagonal pattern of a sparse ``C + C^T``."""
    coef = _canonical(coef.tocsr())
    n_samples = coef.shape[0]
    rank = min(subspace_dim * n_clusters + 1, n_samples - 1)
    sym = (coef + coef.T).tocsr()
    del coef
    sym.data *= 0.5
    sym.eliminate_zeros()  # pairs where C and C^T cancel are not in the pattern
    u, s = _leading_singular_pairs(sym, rank)
    pattern = _drop_diagonal(sym)
    del sym
    u = normalize(u * np.sqrt(s), axis=1)

    values = _paired_dots(u, _row_indices(pattern), pattern.indices)
    np.maximum(values, 0.0, out=values)
    values **= power
    # The dense peak is on the diagonal, (u_i . u_i) ** power, which bounds
    # every inner product; dividing by it keeps the dense values.
    diagonal = np.maximum(np.einsum("ij,ij->i", u, u), 0.0) ** power
    peak = max(values.max(initial=0.0), diagonal.max(initial=0.0))
    if peak > 0:
        values /= peak
    affinity = type(pattern)((values, pattern.indices, pattern.indptr), shape=pattern.shape)
    # The pattern is symmetric and u_i . u_j = u_j . u_i; averaging removes any
    # rounding asymmetry all the same.
    affinity = (affinity + affinity.T).tocsr()
    affinity.data *= 0.5
    affinity.eliminate_zeros()
    return affinity


def _paired_dots(u, rows, cols):
    """``u[rows[t]] @ u[cols[t]]`` for every ``t``.

    Pairs are taken in blocks (in row order for CSR indices), so that the
    gathered rows never take more than ``_GATHER_BLOCK`` floats per operand.
    """
    dots = np.empty(len(rows))
    step = max(1, _GATHER_BLOCK // max(u.shape[1], 1))
    for start in range(0, len(rows), step):
        block = slice(start, start + step)
        dots[block] = np.einsum("ij,ij->i", u[rows[block]], u[cols[block]])
    return dots


def _leading_singular_pairs(sym, rank):
    """Leading singular values and left singular vectors of a symmetric matrix.

    For a symmetric matrix these are the eigenpairs of largest ``|eigenvalue|``
    (up to the sign of each vector, which the affinity does not see). A dense
    eigendecomposition is exact, deterministic and, below a few thousand
    samples or when ``rank`` is a large part of ``n``, faster than ARPACK.
    A sparse ``sym`` is only made dense below a few hundred samples (or when
    ``rank`` is so large a part of ``n`` that ARPACK's own workspace would be
    about as big).
    """
    n_samples = sym.shape[0]
    dense_max = _SPARSE_DENSE_EIGH_MAX if sp.issparse(sym) else _DENSE_EIGH_MAX
    if n_samples <= dense_max or 4 * rank >= n_samples:
        values, vectors = eigh(sym.toarray() if sp.issparse(sym) else sym)
    else:
        # A fixed start vector keeps ARPACK, and so the labels, deterministic.
        values, vectors = eigsh(sym, k=rank, which="LM", v0=np.ones(n_samples))
    order = np.argsort(-np.abs(values))[:rank]
    return vectors[:, order], np.abs(values[order])


def coefficients_to_labels(coef, n_clusters, *, affinity="dsc", threshold=1.0,
                           subspace_dim=4, power=1.0, assign_labels="kmeans",
                           n_components="auto", random_state=None, eigen_solver="auto"):
    """Cluster samples from their self-expression coefficients.

    Parameters
    ----------
    coef : {ndarray, sparse matrix} of shape (n_samples, n_samples)
        Self-expression coefficients with a zero diagonal. A sparse matrix (any
        ``scipy.sparse`` format) is processed sparse throughout.
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
    assign_labels : {"kmeans", "cluster_qr"}, default="kmeans"
        How labels are read off the spectral embedding (see
        :func:`spectral_labels`).
    n_components : int or "auto", default="auto"
        Number of eigenvectors in the spectral embedding (see
        :func:`spectral_labels`).
    random_state : int, RandomState instance or None, default=None
        Seeds the eigensolver's start vector and the k-means initialisation.
    eigen_solver : {"auto", "arpack", "amg"}, default="auto"
        Eigensolver of the spectral embedding (see :func:`spectral_labels`).

    Returns
    -------
    affinity_matrix : {ndarray, sparse matrix} of shape (n_samples, n_samples)
        A CSR matrix when ``coef`` is sparse.
    labels : ndarray of shape (n_samples,)

    Raises
    ------
    ImportError
        If ``eigen_solver="amg"`` and pyamg is not installed.
    """
    if affinity not in AFFINITIES:
        raise ValueError(f"affinity must be one of {AFFINITIES}, got {affinity!r}.")
    check_n_components(n_components, n_clusters, assign_labels, coef.shape[0])
    # Checked before the affinity is computed: a missing pyamg fails at once.
    eigen_solver = _resolve_eigen_solver(eigen_solver, coef)
    thresholded = threshold_coefficients(coef, threshold)
    if affinity == "dsc":
        matrix = dsc_affinity(thresholded, n_clusters, subspace_dim, power)
    else:
        matrix = symmetric_affinity(thresholded)
    del thresholded  # one copy of C less while spectral clustering copies the affinity
    labels = spectral_labels(matrix, n_clusters, random_state=random_state,
                             assign_labels=assign_labels, n_components=n_components,
                             eigen_solver=eigen_solver)
    return matrix, labels


def _check_assign_labels(assign_labels):
    if assign_labels not in LABEL_ASSIGNMENTS:
        raise ValueError(f"assign_labels must be one of {LABEL_ASSIGNMENTS}, "
                         f"got {assign_labels!r}.")


def spectral_labels(affinity_matrix, n_clusters, random_state=None, assign_labels="kmeans",
                    n_components="auto", eigen_solver="auto"):
    """Spectral clustering of a precomputed affinity (normalised cut).

    The embedding is the ``n_components`` leading eigenvectors of the
    normalised adjacency ``D^-1/2 A D^-1/2``. With ``assign_labels="kmeans"``
    (Ng, Jordan and Weiss, 2001) each sample's row of the embedding is scaled
    to unit length and the rows are clustered by k-means (10 restarts): the
    scaling puts samples of one cluster on one direction whatever their
    degree. ``"cluster_qr"`` (Damle et al., 2019) reads the labels off the
    embedding by column-pivoted QR instead, without a random start; it
    clustered worse on the benchmark data sets (``benchmarks/RESULTS.md``,
    "Label assignment").

    Parameters
    ----------
    affinity_matrix : {ndarray, sparse matrix} of shape (n_samples, n_samples)
        Symmetric, non-negative affinity; its diagonal is ignored. A sparse
        matrix is clustered without being made dense: the embedding is the
        leading eigenvectors of ``D^-1/2 A D^-1/2``, those of its connected
        components written down exactly and the others from ARPACK (no
        shift-invert), so it scales to tens of thousands of samples. With
        more connected components than eigenvectors, the largest components
        are kept; samples without any edge get an arbitrary label.
    n_clusters : int
        Number of clusters.
    random_state : int, RandomState instance or None, default=None
        Seeds the eigensolver's start vector and the k-means initialisation.
        With None, a sparse matrix's start vector is all ones and k-means
        draws from numpy's global generator, so only ``"cluster_qr"`` is then
        deterministic.
    assign_labels : {"kmeans", "cluster_qr"}, default="kmeans"
        How labels are read off the spectral embedding.
    n_components : int or "auto", default="auto"
        Number of eigenvectors in the embedding. ``"auto"`` is
        ``n_clusters + 1`` for ``"kmeans"`` (at most ``n_samples``): a cluster
        that is internally stretched, such as a long chain of neighbours, can
        take one of the first ``n_clusters`` eigenvectors for a cut through
        itself and push out the one that separates two other clusters; one
        more eigenvector keeps that direction for k-means
        (``benchmarks/RESULTS.md``, "Spectral embedding size").
        ``"cluster_qr"`` reads one cluster per eigenvector, so it takes exactly
        ``n_clusters`` (``"auto"`` or that number).
    eigen_solver : {"auto", "arpack", "amg"}, default="auto"
        How the eigenvectors that are not written down exactly are found.
        ``"arpack"`` is ARPACK (Lanczos, no shift-invert). ``"amg"`` is
        LOBPCG on the normalised Laplacian ``I - D^-1/2 A D^-1/2``,
        preconditioned by an algebraic multigrid V-cycle of it (an
        aggregation hierarchy from pyamg, as scikit-learn's
        ``spectral_embedding(eigen_solver="amg")``, applied to the whole
        block of vectors at once); it needs the ``pyamg`` package
        (``pip install pyamg``, or the ``amg`` extra of skdsc). It pays
        off on large graphs: from about 100,000 samples on, where ARPACK
        needs many restarts. A dense ``affinity_matrix`` is then solved in
        CSR form.
        ``"auto"`` is ``"amg"`` for a sparse matrix of at least 100,000
        samples when pyamg is installed, ``"arpack"`` otherwise, so results
        below that size do not depend on whether pyamg is installed. The
        two solvers return the same invariant subspace up to their
        tolerances, not the same vectors: labels may differ on ambiguous
        samples.

    Returns
    -------
    labels : ndarray of shape (n_samples,), dtype int64
        All zeros for an affinity without edges or ``n_clusters=1``.

    Raises
    ------
    ImportError
        If ``eigen_solver="amg"`` and pyamg is not installed.
    """
    n_samples = affinity_matrix.shape[0]
    n_vectors = check_n_components(n_components, n_clusters, assign_labels, n_samples)
    eigen_solver = _resolve_eigen_solver(eigen_solver, affinity_matrix)
    if eigen_solver == "amg" and not sp.issparse(affinity_matrix):
        affinity_matrix = sp.csr_matrix(np.asarray(affinity_matrix, dtype=np.float64))
    if n_clusters == 1:
        embedding = None
    elif sp.issparse(affinity_matrix):
        embedding = _spectral_embedding_sparse(affinity_matrix, n_vectors, random_state,
                                               eigen_solver)
    elif not np.any(affinity_matrix):
        embedding = None
    else:
        seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
        if assign_labels == "cluster_qr":
            # Dense cluster_qr is scikit-learn's spectral clustering, unchanged.
            return spectral_clustering(
                affinity_matrix, n_clusters=n_clusters, n_components=n_vectors,
                eigen_solver="arpack", random_state=seed, assign_labels="cluster_qr",
            ).astype(np.int64)
        # scikit-learn's spectral_clustering embedding; its k-means step is not
        # used, as it does not scale the rows to unit length.
        embedding = spectral_embedding(affinity_matrix, n_components=n_vectors,
                                       eigen_solver="arpack", random_state=seed,
                                       drop_first=False)
    if embedding is None:
        # No edge (or one cluster): no structure to cut, one cluster is the honest answer.
        return np.zeros(n_samples, dtype=np.int64)
    if assign_labels == "cluster_qr":
        return _cluster_qr(embedding)
    return _kmeans_on_directions(embedding, n_clusters, random_state)


def _resolve_eigen_solver(eigen_solver, affinity_matrix):
    """``"arpack"`` or ``"amg"``: what ``eigen_solver`` asks for with this matrix.

    Raises ValueError for an unknown solver and ImportError for ``"amg"``
    without pyamg.
    """
    if not isinstance(eigen_solver, str) or eigen_solver not in EIGEN_SOLVERS:
        raise ValueError(f"eigen_solver must be one of {EIGEN_SOLVERS}, got {eigen_solver!r}.")
    if eigen_solver == "auto":
        large = sp.issparse(affinity_matrix) and affinity_matrix.shape[0] >= _AMG_MIN_SAMPLES
        return "amg" if large and _import_pyamg(required=False) is not None else "arpack"
    if eigen_solver == "amg":
        _import_pyamg()
    return eigen_solver


def amg_available():
    """Whether pyamg is installed, so that ``eigen_solver="amg"`` can run."""
    return _import_pyamg(required=False) is not None


def _import_pyamg(required=True):
    try:
        return importlib.import_module("pyamg")
    except ImportError as exc:
        if not required:
            return None
        raise ImportError(
            "eigen_solver='amg' needs the pyamg package: pip install pyamg (or "
            "pip install 'skdsc[amg]'), or use eigen_solver='arpack'."
        ) from exc


def check_n_components(n_components, n_clusters, assign_labels, n_samples):
    """The number of spectral eigenvectors that ``n_components`` asks for.

    Parameters
    ----------
    n_components : int or "auto"
        See :func:`spectral_labels`.
    n_clusters : int
    assign_labels : {"kmeans", "cluster_qr"}
    n_samples : int

    Returns
    -------
    n_vectors : int

    Raises
    ------
    ValueError
        If ``n_components`` is neither ``"auto"`` nor an int in
        ``[1, n_samples]``, or differs from ``n_clusters`` with
        ``assign_labels="cluster_qr"``.
    """
    _check_assign_labels(assign_labels)
    if isinstance(n_components, str) and n_components == "auto":
        if assign_labels == "cluster_qr":
            return n_clusters
        # One more than n_clusters, where there is a sample to spare for it.
        return n_clusters + 1 if n_clusters < n_samples else n_clusters
    is_int = isinstance(n_components, numbers.Integral) and not isinstance(n_components, bool)
    if not is_int or not 1 <= n_components <= n_samples:
        raise ValueError(f"n_components must be 'auto' or an int in [1, n_samples={n_samples}], "
                         f"got {n_components!r}.")
    if assign_labels == "cluster_qr" and n_components != n_clusters:
        raise ValueError(f"assign_labels='cluster_qr' reads one cluster per eigenvector, so "
                         f"n_components must be 'auto' or n_clusters={n_clusters}, "
                         f"got {n_components}.")
    return int(n_components)


def _kmeans_on_directions(embedding, n_clusters, random_state):
    """k-means of the embedding's rows scaled to unit length (Ng, Jordan and Weiss)."""
    # Not sklearn.cluster.spectral_clustering's k-means, which leaves rows unscaled.
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    kmeans = KMeans(n_clusters, n_init=_KMEANS_N_INIT, random_state=seed)
    return kmeans.fit_predict(normalize(embedding)).astype(np.int64)


def _spectral_embedding_sparse(affinity_matrix, n_vectors, random_state, eigen_solver="arpack"):
    """The spectral embedding of a sparse affinity, never made dense; None without edges."""
    # Not sklearn.manifold.spectral_embedding, whose sparse ARPACK path factorises
    # the Laplacian (shift-invert) and leaves each component's eigenvector to ARPACK.
    # Self-loops are ignored, as by the graph Laplacian of the dense path.
    adjacency = _drop_diagonal(_canonical(affinity_matrix.tocsr()))
    if adjacency.nnz == 0:
        return None
    # ARPACK assumes symmetry; a symmetric input is unchanged.
    adjacency = (adjacency + adjacency.T).tocsr()
    adjacency.data *= 0.5
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    degree[degree <= 0] = 1.0  # isolated samples: nothing to divide by zero
    inv_sqrt_degree = 1.0 / np.sqrt(degree)
    # In place: adjacency becomes D^-1/2 A D^-1/2.
    adjacency.data *= inv_sqrt_degree[_row_indices(adjacency)]
    adjacency.data *= inv_sqrt_degree[adjacency.indices]

    vectors = _leading_eigenvectors(adjacency, np.sqrt(degree), n_vectors, random_state,
                                    eigen_solver)
    del adjacency
    return vectors * inv_sqrt_degree[:, np.newaxis]


def _leading_eigenvectors(normalized, sqrt_degree, n_vectors, random_state,
                          eigen_solver="arpack"):
    """The ``n_vectors`` eigenvectors of largest eigenvalue of ``D^-1/2 A D^-1/2``.

    Every connected component with an edge has eigenvalue 1, with eigenvector
    ``sqrt(degree)`` on its samples. ARPACK, a single-vector Krylov method,
    finds only one vector of a repeated eigenvalue, and disconnected clusters
    are common in sparse affinities: these eigenvectors are written down
    directly, and the eigensolver (ARPACK or AMG-preconditioned LOBPCG, or
    ``eigh`` for small ``n``) only looks for the others, orthogonally to them.
    """
    components = _component_eigenvectors(normalized, sqrt_degree, n_vectors)
    n_left = n_vectors - components.shape[1]
    if n_left == 0:
        return components
    n_samples = normalized.shape[0]
    # LOBPCG needs several times more samples than vectors (scipy falls back
    # to a dense solver below 5 per vector): below that eigh is exact and small.
    too_small = eigen_solver == "amg" and n_samples < 5 * n_vectors
    if n_samples <= _SPARSE_DENSE_EIGH_MAX or n_vectors >= n_samples - 1 or too_small:
        # M and the projection on the components commute: (I - QQ^T) M = M - QQ^T.
        deflated = normalized.toarray()
        deflated -= components @ components.T
        vectors = eigh(deflated, subset_by_index=[n_samples - n_left, n_samples - 1])[1]
        return np.hstack([components, vectors])

    def deflated_matvec(x):
        x = np.ravel(x)
        return normalized @ x - components @ (components.T @ x)

    if eigen_solver == "amg":
        return np.hstack([components, _amg_lobpcg(normalized, components, n_left,
                                                  random_state)])
    operator = LinearOperator((n_samples, n_samples), matvec=deflated_matvec,
                              dtype=np.float64)
    if random_state is None:
        v0 = np.ones(n_samples)
    else:
        v0 = check_random_state(random_state).uniform(-1, 1, n_samples)
    # The largest eigenvalues of the normalised adjacency are the smallest of
    # the normalised Laplacian; asking for them directly avoids the sparse
    # factorisation that shift-invert would need.
    _, vectors = eigsh(operator, k=n_left, which="LA", v0=v0)
    return np.hstack([components, vectors])


def _amg_lobpcg(normalized, components, n_left, random_state):
    """The ``n_left`` smallest eigenvectors of ``I - normalized`` orthogonal to ``components``.

    LOBPCG, preconditioned by an algebraic multigrid V-cycle of the (slightly
    shifted) Laplacian, with the component eigenvectors as constraints: the
    search stays orthogonal to them, as ARPACK's deflated operator does.
    """
    pyamg = _import_pyamg()
    n_samples = normalized.shape[0]
    # The hierarchy of a singular matrix is unreliable: it is built from
    # L + shift I, which has L's eigenvectors, and LOBPCG solves for that
    # matrix too (one matrix of n_samples x n_nonzero entries less).
    shifted = ((1.0 + _AMG_SHIFT) * sp.identity(n_samples, format="csr") - normalized).tocsr()
    # Plain (unsmoothed) aggregation: smoothing the prolongator fills in the
    # coarse graphs of a sparse affinity (expanders more than grids) and cost
    # more setup time and memory than it saved in iterations.
    hierarchy = pyamg.smoothed_aggregation_solver(shifted, smooth=None)
    preconditioner = _BlockVCycle(hierarchy)
    # A fixed start when random_state is None, as ARPACK's all-ones vector:
    # the labels are then reproducible.
    rng = check_random_state(0 if random_state is None else random_state)
    start = rng.standard_normal((n_samples, n_left))
    constraints = components if components.shape[1] else None
    _, vectors = lobpcg(shifted, start, M=preconditioner, Y=constraints, tol=_LOBPCG_TOL,
                        maxiter=_LOBPCG_MAXITER, largest=False)
    return vectors


class _BlockVCycle(LinearOperator):
    """One multigrid V-cycle applied to a block of vectors at once.

    pyamg's own preconditioner runs one cycle per column, with Gauss-Seidel
    sweeps that visit the rows one by one; LOBPCG preconditions a whole
    block every iteration. Here each level smooths the block with one damped
    Jacobi sweep before and one after the coarse correction (a symmetric
    cycle, as LOBPCG needs), all sparse-times-dense products, and the
    coarsest level is solved by a pseudo-inverse. The Jacobi weight is
    ``4/3`` over a Gershgorin bound of ``rho(D^-1 A)``: deterministic, unlike
    a randomised estimate of the spectral radius.
    """

    def __init__(self, hierarchy):
        self.levels = []
        for level in hierarchy.levels[:-1]:
            matrix = level.A.tocsr()
            inverse_diagonal = 1.0 / matrix.diagonal()
            # Every row holds its diagonal, so none is empty for reduceat.
            row_sums = np.add.reduceat(np.abs(matrix.data), matrix.indptr[:-1])
            bound = np.max(row_sums * np.abs(inverse_diagonal))
            self.levels.append((matrix, inverse_diagonal * (_JACOBI_WEIGHT / bound),
                                level.P.tocsr(), level.R.tocsr()))
        self.coarse = np.linalg.pinv(np.asarray(hierarchy.levels[-1].A.todense()),
                                     hermitian=True)
        size = hierarchy.levels[0].A.shape[0]
        super().__init__(dtype=np.float64, shape=(size, size))

    def _cycle(self, rhs, depth=0):
        if depth == len(self.levels):
            return self.coarse @ rhs
        matrix, weight, prolongation, restriction = self.levels[depth]
        solution = weight[:, None] * rhs
        solution += prolongation @ self._cycle(restriction @ (rhs - matrix @ solution), depth + 1)
        solution += weight[:, None] * (rhs - matrix @ solution)
        return solution

    def _matmat(self, block):
        return self._cycle(np.asarray(block, dtype=np.float64))

    def _matvec(self, vector):
        return self._cycle(np.asarray(vector, dtype=np.float64).reshape(-1, 1)).ravel()


def _component_eigenvectors(normalized, sqrt_degree, n_vectors):
    """Orthonormal eigenvectors, of eigenvalue 1, of the components with an edge.

    At most ``n_vectors`` of them, for the largest components: with more
    components than that, the smaller ones are left out of the embedding
    (their samples, like isolated ones, get an arbitrary label).
    """
    _, component = connected_components(normalized, directed=False)
    has_edge = np.diff(normalized.indptr) > 0
    sizes = np.bincount(component[has_edge], minlength=component.max() + 1)
    kept = np.argsort(-sizes, kind="stable")[:n_vectors]
    kept = kept[sizes[kept] > 0]
    column = np.full(sizes.size, -1)
    column[kept] = np.arange(kept.size)
    column = column[component]
    samples = np.flatnonzero(column >= 0)
    vectors = np.zeros((normalized.shape[0], kept.size))
    vectors[samples, column[samples]] = sqrt_degree[samples]
    return normalize(vectors, axis=0)


def _cluster_qr(embedding):
    """Labels from a spectral embedding by column-pivoted QR (Damle et al. 2019).

    The QR pivots pick ``n_clusters`` samples whose embeddings are as close to
    orthogonal as possible; the orthogonal matrix nearest to them (their polar
    factor) rotates the embedding so that each cluster lies along one axis.
    """
    # sklearn.cluster._spectral.cluster_qr is private; the same steps, without forming Q.
    n_clusters = embedding.shape[1]
    _, pivots = qr(embedding.T, mode="r", pivoting=True)
    left, _, right = svd(embedding[pivots[:n_clusters]].T)
    rotated = embedding @ (left @ right)
    return np.abs(rotated).argmax(axis=1).astype(np.int64)


def _canonical(matrix):
    """A float64 copy of a CSR or CSC matrix, duplicates summed, zeros dropped."""
    matrix = matrix.astype(np.float64, copy=True)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return matrix


def _row_indices(csr):
    """The row of every stored entry of a CSR matrix."""
    return np.repeat(np.arange(csr.shape[0], dtype=csr.indices.dtype), np.diff(csr.indptr))


def _drop_diagonal(csr):
    """A CSR matrix without its diagonal entries."""
    rows = _row_indices(csr)
    off_diagonal = rows != csr.indices
    indptr = np.zeros(csr.shape[0] + 1, dtype=csr.indptr.dtype)
    np.cumsum(np.bincount(rows[off_diagonal], minlength=csr.shape[0]), out=indptr[1:])
    return type(csr)((csr.data[off_diagonal], csr.indices[off_diagonal], indptr),
                     shape=csr.shape)
