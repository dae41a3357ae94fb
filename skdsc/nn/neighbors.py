"""Nearest-neighbour search among latent codes: exact and blockwise, or approximate (faiss).

Similarity is the cosine between codes either way. The exact search runs on
the codes' own device in blocks of queries. The approximate one uses an
inverted-file index of faiss (``pip install faiss-cpu``, or the ``faiss``
extra of skdsc), built once on the candidates and searched as often as
needed (:class:`NeighborIndex`).
"""

import contextlib
import importlib
import math
import numbers

import numpy as np
import torch

# Similarities held at once: a query block times all candidates (256 MiB of float32).
_BLOCK_ELEMENTS = 1 << 26

METHODS = ("auto", "exact", "faiss")
# method="auto" takes faiss (when it is installed and can run where the codes
# are) from this many candidates on, and only for at least this many queries.
# Measured with benchmarks/neighbor_search.py (records in
# results/neighbor_search.jsonl; k=32, one thread, faiss-cpu 1.15.1, a shared
# two-core machine): the exact search of every sample's neighbours among
# MNIST digits took 2.0 s at 10,000 and 120 s at 70,000 (784 pixels), 15 s
# and 312 s (2,940-dimensional codes); faiss 0.6 and 7.4 s, 1.8 and 14 s,
# with recall@32 0.98 at 10,000 and 0.99 at 70,000. The exact time grows as
# n^2 (12 s for 20,000 pixel rows in a development run, faiss 2 s): below
# 20,000 samples it costs seconds per search, and is exact, so the fits of
# the data sets up to that size keep their exact candidates. A few queries
# (predict on a handful of samples) do not repay building the index, which
# takes about as long as the exact search of 2,000 queries among 70,000
# candidates.
_FAISS_MIN_CANDIDATES = 20_000
_FAISS_MIN_QUERIES = 2_000
# Inverted lists: about 4 sqrt(n) of them (faiss's rule of thumb), with at
# least _TRAIN_PER_LIST training codes each (faiss warns below 39), and
# _PROBE_FRACTION of them visited per query, at least _MIN_PROBES (at
# 70,000 codes: 1,058 lists, 34 visited).
_LISTS_PER_SQRT_N = 4
_TRAIN_PER_LIST = 39
_PROBE_FRACTION = 1 / 32
_MIN_PROBES = 16
# Codes of more dimensions are indexed by this many principal components
# (fitted on at most _PCA_SAMPLE codes), and the index proposes
# _REFINE_FACTOR * k candidates whose exact cosines pick the k. On all 70,000
# MNIST digits (784 pixels, k=32, one thread) 32, 64 and 128 components with
# 32 lists visited and 64 or 128 proposals gave recall 0.87-0.99; 64
# components, 1/32 of the lists and 3 k proposals gave 0.99 in 7-17 s (the
# IVF-flat index of the full 784 dimensions: 0.97 in 32 s, visiting 16 lists).
_REDUCED_DIMENSIONS = 64
_REFINE_FACTOR = 3
_PCA_SAMPLE = 20_000
_PCA_OVERSAMPLING = 16
_PCA_POWER_ITERATIONS = 2
# k-means iterations of the coarse quantiser (faiss's default is 25; the
# lists need only be roughly balanced, and training is the index's main cost).
_KMEANS_ITERATIONS = 10
# Seed of the coarse quantiser's k-means and of its training sample: a fit is
# reproducible whatever the global random state.
_FAISS_SEED = 1234


@torch.no_grad()
def nearest_neighbors(candidates, n_neighbors, *, queries=None, method="auto", rows=None):
    """Indices of the candidates most similar in angle to each query.

    Similarity is the cosine between codes: subspaces pass through the
    origin, so the direction of a code, not its length, says which subspace it
    lies near. The exact search processes queries in blocks, so memory is
    ``O(block * n_candidates)``, never ``O(n_queries * n_candidates)``.

    Parameters
    ----------
    candidates : torch.Tensor of shape (n_candidates, n_features)
        Codes to search among (the memory bank).
    n_neighbors : int
        Neighbours returned per query; at most ``n_candidates`` (or
        ``n_candidates - 1`` when ``queries`` is None).
    queries : torch.Tensor of shape (n_queries, n_features), optional
        Codes to find neighbours for. None searches the candidates among
        themselves and never returns a sample as its own neighbour.
    method : {"auto", "exact", "faiss"}, default="auto"
        ``"exact"`` compares every query with every candidate on the
        candidates' device. ``"faiss"`` searches an approximate index
        (:class:`NeighborIndex`; needs the ``faiss-cpu`` package, or
        ``faiss-gpu`` to run on CUDA). ``"auto"`` is ``"faiss"`` for at least
        20,000 candidates and 2,000 queries when faiss is installed (and,
        for CUDA codes, has GPU support), ``"exact"`` otherwise: below that
        size the results are those of the exact search whether faiss is
        installed or not.
    rows : torch.Tensor of shape (n_rows,), optional
        With ``queries=None``, the rows of that search to return: those
        candidates alone are searched for, among all of them, and each row is
        what the whole search gives it (the method is chosen for the whole
        search). Lets processes share out one search.

    Returns
    -------
    indices : torch.Tensor of shape (n_queries, n_neighbors)
        Int64 candidate indices, most similar first, on the candidates' device.

    Raises
    ------
    ImportError
        If ``method="faiss"`` and faiss is not installed.
    """
    _check_method(method)
    _check_n_neighbors(n_neighbors, len(candidates), queries is None)
    if rows is not None and queries is not None:
        raise ValueError("rows selects rows of the search of the candidates among "
                         "themselves; pass it with queries=None.")
    n_queries = len(candidates) if queries is None else len(queries)
    if method == "auto":
        method = search_method(candidates, n_queries)
    if method == "exact":
        if rows is not None:
            return _exact_search(candidates, n_neighbors, candidates[rows], own_index=rows)
        return _exact_search(candidates, n_neighbors, queries)
    return NeighborIndex(candidates, method="faiss")._faiss.search(queries, n_neighbors,
                                                                    rows=rows)


class NeighborIndex:
    """The candidates of a nearest-neighbour search, indexed once, searched often.

    Build it on the training codes and search it for their own neighbours
    (``search(None, k)``) and later for new codes (``search(queries, k)``):
    an approximate index is trained only once. Similarity is the cosine, as
    for :func:`nearest_neighbors`.

    Parameters
    ----------
    candidates : torch.Tensor of shape (n_candidates, n_features)
        Codes to search among.
    method : {"auto", "exact", "faiss"}, default="auto"
        ``"exact"`` keeps the candidates and searches them exhaustively in
        blocks. ``"faiss"`` builds an inverted-file index (faiss
        ``IndexIVFFlat``) of the unit-length codes, float32, projected on
        their 64 leading principal components when they have more
        dimensions: about ``4 sqrt(n)`` k-means lists, trained with a fixed
        seed, of which a thirty-second (at least 16) are visited per query.
        The index proposes ``3 k`` candidates per query (``k + 1`` without
        projection) and their exact cosines pick the ``k``; rows for which
        the visited lists hold too few codes are searched exactly. The
        index holds ``n x min(n_features, 64)`` floats besides the codes.
        On CUDA codes it searches on the GPU when faiss has GPU support, on
        the CPU otherwise; results are on the codes' device either way.
        ``"auto"`` is ``"faiss"`` from 20,000 candidates on when faiss is
        installed (and, for CUDA codes, has GPU support), ``"exact"``
        otherwise.
    n_lists : int, optional
        Inverted lists of the faiss index (default ``4 sqrt(n)``, at most
        ``n / 39``).
    n_probe : int, optional
        Lists visited per query (default a thirty-second of them, at least
        16). More is slower and closer to exact.
    n_components : int, optional
        Principal components indexed for codes of more dimensions (default
        64). More is slower and closer to exact.

    Attributes
    ----------
    method_ : {"exact", "faiss"}
        The search actually used.
    n_candidates_ : int

    Raises
    ------
    ImportError
        If ``method="faiss"`` and faiss is not installed.
    """

    @torch.no_grad()
    def __init__(self, candidates, method="auto", *, n_lists=None, n_probe=None,
                 n_components=None):
        _check_method(method)
        for name, value in (("n_lists", n_lists), ("n_probe", n_probe),
                            ("n_components", n_components)):
            is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            if value is not None and (not is_int or value < 1):
                raise ValueError(f"{name} must be None or a positive int, got {value!r}.")
        self.candidates = candidates
        self.n_candidates_ = len(candidates)
        self.method_ = (search_method(candidates, self.n_candidates_) if method == "auto"
                        else method)
        self._faiss = None
        if self.method_ == "faiss":
            self._faiss = _FaissSearch(candidates, n_lists, n_probe, n_components)

    @torch.no_grad()
    def search(self, queries, n_neighbors):
        """The ``n_neighbors`` candidates most similar to each query.

        Parameters
        ----------
        queries : torch.Tensor of shape (n_queries, n_features) or None
            None searches the candidates among themselves, never returning a
            sample as its own neighbour.
        n_neighbors : int

        Returns
        -------
        indices : torch.Tensor of shape (n_queries, n_neighbors)
            Int64 candidate indices, most similar first, on the candidates'
            device.
        """
        _check_n_neighbors(n_neighbors, self.n_candidates_, queries is None)
        if self.method_ == "exact":
            return _exact_search(self.candidates, n_neighbors, queries)
        return self._faiss.search(queries, n_neighbors)


def faiss_available(device=None):
    """Whether faiss is installed (and, for a CUDA ``device``, has GPU support)."""
    faiss = _import_faiss(required=False)
    if faiss is None:
        return False
    if device is not None and torch.device(device).type == "cuda":
        return _faiss_gpus(faiss) > 0
    return True


def _check_method(method):
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")


def _check_n_neighbors(n_neighbors, n_candidates, exclude_self):
    limit = n_candidates - 1 if exclude_self else n_candidates
    if not 1 <= n_neighbors <= limit:
        raise ValueError(f"n_neighbors must be in [1, {limit}], got {n_neighbors}.")


def search_method(candidates, n_queries):
    """The search ``method="auto"`` picks for ``n_queries`` among ``candidates``.

    ``"faiss"`` for a large search that faiss can run where the codes are,
    ``"exact"`` otherwise.
    """
    if len(candidates) < _FAISS_MIN_CANDIDATES or n_queries < _FAISS_MIN_QUERIES:
        return "exact"
    # On CUDA without faiss-gpu, the exact search on the GPU beats a CPU index.
    return "faiss" if faiss_available(candidates.device) else "exact"


# --- exact search -----------------------------------------------------------------------------

def _exact_search(candidates, n_neighbors, queries=None, own_index=None):
    """Exhaustive search in blocks of queries.

    ``own_index`` (int64, one per query) names the candidate that each query
    must not return, itself; ``queries=None`` searches the candidates among
    themselves, each excluding itself.
    """
    if queries is None:
        queries = candidates
        own_index = torch.arange(len(candidates), device=candidates.device)
    queries = queries.to(device=candidates.device, dtype=candidates.dtype)
    # Cosines from raw products and norms: no normalised copy of the codes,
    # which can be as large as the memory bank itself.
    key_norms = _norms(candidates)
    block = max(1, _BLOCK_ELEMENTS // len(candidates))
    # Filled in place: per-block results kept in a list fragment the C heap
    # between the large similarity blocks, and the freed memory is not returned.
    found = torch.empty((len(queries), n_neighbors), dtype=torch.int64,
                        device=candidates.device)
    for start in range(0, len(queries), block):
        chunk = queries[start:start + block]
        similarity = chunk @ candidates.T
        similarity /= _norms(chunk)[:, None]
        similarity /= key_norms[None, :]
        if own_index is not None:
            rows = torch.arange(len(similarity), device=similarity.device)
            similarity[rows, own_index[start:start + block]] = -torch.inf
        found[start:start + block] = similarity.topk(n_neighbors, dim=1).indices
    return found


def _norms(codes):
    # Zero codes get a tiny norm: their cosines are 0, not NaN.
    return torch.linalg.vector_norm(codes, dim=1).clamp(min=1e-12)


# --- faiss ------------------------------------------------------------------------------------

def _import_faiss(required=True):
    try:
        return importlib.import_module("faiss")
    except ImportError as exc:
        if not required:
            return None
        raise ImportError(
            "method='faiss' needs the faiss package: pip install faiss-cpu (or "
            "pip install 'skdsc[faiss]'; faiss-gpu for CUDA), or use method='exact'."
        ) from exc


def _faiss_gpus(faiss):
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return get_num_gpus() if get_num_gpus is not None else 0


@contextlib.contextmanager
def _faiss_threads(faiss):
    """faiss's OpenMP threads set to torch's for the duration of a call."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(torch.get_num_threads())
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _unit_float32(codes):
    """Float32 rows of unit length on the CPU (zero rows stay zero)."""
    codes = codes.detach().to(device="cpu", dtype=torch.float32)
    return codes / _norms(codes)[:, None]


def _principal_axes(sample, n_components, generator):
    """Mean and ``n_components`` leading principal axes of the rows of ``sample``.

    A randomised range finder (two power iterations): a few matrix products,
    where a full covariance of thousands of dimensions would cost more than
    the search it shortens.
    """
    mean = sample.mean(dim=0)
    centred = sample - mean
    width = min(n_components + _PCA_OVERSAMPLING, *centred.shape)
    basis = torch.linalg.qr(centred @ torch.randn(centred.shape[1], width,
                                                  generator=generator)).Q
    for _ in range(_PCA_POWER_ITERATIONS):
        basis = torch.linalg.qr(centred @ (centred.T @ basis)).Q
    _, _, right = torch.linalg.svd(basis.T @ centred, full_matrices=False)
    return mean, right[:n_components].T.contiguous()


def _index_shape(n_candidates, n_lists, n_probe):
    """Lists and lists visited for ``n_candidates`` codes."""
    if n_lists is None:
        n_lists = round(_LISTS_PER_SQRT_N * math.sqrt(n_candidates))
        n_lists = min(n_lists, n_candidates // _TRAIN_PER_LIST)
    n_lists = max(1, min(n_lists, n_candidates))
    if n_probe is None:
        n_probe = max(_MIN_PROBES, math.ceil(n_lists * _PROBE_FRACTION))
    return n_lists, min(n_probe, n_lists)


class _FaissSearch:
    """An IVF-flat index of the (reduced) unit-length codes, re-ranked exactly.

    Codes of more than ``n_components`` dimensions are projected on their
    leading principal axes; the index (squared distances between unit
    vectors, whose order is that of the cosines) proposes
    ``_REFINE_FACTOR * k`` candidates, and their exact cosines in the full
    space, computed as the exact search computes them, pick the ``k``.
    """

    def __init__(self, candidates, n_lists, n_probe, n_components):
        faiss = _import_faiss()
        self.faiss = faiss
        self.candidates = candidates
        self.key_norms = _norms(candidates)
        generator = torch.Generator().manual_seed(_FAISS_SEED)
        n_candidates, n_features = candidates.shape
        if n_components is None:
            n_components = _REDUCED_DIMENSIONS
        self.reduced = n_features > n_components
        if self.reduced:
            rows = torch.randperm(n_candidates, generator=generator)[:_PCA_SAMPLE].sort().values
            sample = _unit_float32(candidates[rows.to(candidates.device)])
            self.mean, self.basis = _principal_axes(sample, n_components, generator)
            del sample
        points = self._points(candidates)
        n_lists, n_probe = _index_shape(n_candidates, n_lists, n_probe)
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(points.shape[1]), points.shape[1],
                                   n_lists, faiss.METRIC_L2)
        index.cp.seed = _FAISS_SEED
        index.cp.niter = _KMEANS_ITERATIONS
        # Training sample drawn here, by a seeded generator, at most 256 codes
        # per list (faiss's own cap): the index does not depend on faiss's sampling.
        n_train = min(n_candidates, 256 * n_lists)
        rows = torch.randperm(n_candidates, generator=generator)[:n_train].sort().values.numpy()
        with _faiss_threads(faiss):
            index.train(np.ascontiguousarray(points[rows]))
            index.add(points)
        index.nprobe = n_probe
        self.n_lists, self.n_probe = n_lists, n_probe
        if candidates.device.type == "cuda" and _faiss_gpus(faiss) > 0:
            # Trained on the CPU, where the seeded k-means is reproducible; the
            # copy keeps the lists and nprobe.
            resources = faiss.StandardGpuResources()
            gpu_index = faiss.index_cpu_to_gpu(resources, candidates.device.index or 0, index)
            gpu_index.referenced_resources = resources  # kept alive with the index
            index = gpu_index
        self.index = index

    def _points(self, codes):
        """What the index holds of the codes: unit length, projected, float32, on the CPU.

        In blocks of rows: no full-size float32 copy of high-dimensional codes.
        """
        width = self.basis.shape[1] if self.reduced else codes.shape[1]
        points = np.empty((len(codes), width), dtype=np.float32)
        step = max(1, _BLOCK_ELEMENTS // max(codes.shape[1], 1))
        for start in range(0, len(codes), step):
            unit = _unit_float32(codes[start:start + step])
            if self.reduced:
                unit = (unit - self.mean) @ self.basis
            points[start:start + step] = unit.numpy()
        return points

    def search(self, queries, n_neighbors, rows=None):
        exclude_self = queries is None
        searched = self.candidates if rows is None else self.candidates[rows]
        points = self._points(searched if exclude_self else queries)
        # One more when the query is among the candidates: itself, dropped.
        wanted = n_neighbors + 1 if exclude_self else n_neighbors
        if self.reduced:
            wanted = max(wanted, _REFINE_FACTOR * n_neighbors)
        wanted = min(wanted, self.index.ntotal)
        with _faiss_threads(self.faiss):
            _, proposed = self.index.search(points, wanted)
        del points
        device = self.candidates.device
        proposed = torch.from_numpy(proposed.astype(np.int64, copy=False)).to(device)
        if queries is None:
            queries = searched
            own_index = (torch.arange(len(queries), device=device) if rows is None
                         else rows.to(device))
        else:
            queries = queries.to(device=device, dtype=self.candidates.dtype)
            own_index = None
        found, short = self._rerank(queries, proposed, n_neighbors, own_index)
        if short.numel():
            # faiss pads with -1 where the visited lists hold fewer codes than
            # asked for: those rows are searched exactly.
            found[short] = _exact_search(self.candidates, n_neighbors, queries[short],
                                         own_index=None if own_index is None
                                         else own_index[short])
        return found

    def _rerank(self, queries, proposed, n_neighbors, own_index):
        """The ``n_neighbors`` proposed candidates of largest exact cosine, per query.

        Returns the indices and the rows that had fewer valid proposals.
        """
        invalid = proposed < 0
        if own_index is not None:
            invalid |= proposed == own_index[:, None]
        keys = proposed.clamp(min=0)
        if self.candidates.device.type == "cpu":
            products = self._cpu_products(queries, keys)
        else:
            products = self._products(queries, keys)
        similarity = products.to(self.key_norms.dtype)
        similarity /= _norms(queries)[:, None]
        similarity /= self.key_norms[keys]
        similarity[invalid] = -torch.inf
        best = similarity.topk(n_neighbors, dim=1)
        short = torch.nonzero(torch.isinf(best.values).any(dim=1)).ravel()
        return proposed.gather(1, best.indices), short

    def _cpu_products(self, queries, keys):
        """Inner products of each query with its proposed candidates, by faiss.

        Read from the codes in place: gathering ``k`` candidate codes per query
        into a tensor first moves far more memory than the products need
        (15 times slower on MNIST pixels).
        """
        faiss = self.faiss
        rows = _float32_array(queries)
        bank = rows if queries is self.candidates else _float32_array(self.candidates)
        keys = np.ascontiguousarray(keys.numpy())
        products = np.empty(keys.shape, dtype=np.float32)
        with _faiss_threads(faiss):
            faiss.fvec_inner_products_by_idx(
                faiss.swig_ptr(products), faiss.swig_ptr(rows), faiss.swig_ptr(bank),
                faiss.swig_ptr(keys), rows.shape[1], keys.shape[0], keys.shape[1])
        return torch.from_numpy(products)

    def _products(self, queries, keys):
        """Inner products of each query with its proposed candidates, in blocks."""
        block = max(1, _BLOCK_ELEMENTS // (keys.shape[1] * queries.shape[1]))
        products = torch.empty(keys.shape, dtype=queries.dtype, device=queries.device)
        for start in range(0, len(queries), block):
            gathered = self.candidates[keys[start:start + block]]
            products[start:start + block] = torch.bmm(
                gathered, queries[start:start + block, :, None])[:, :, 0]
        return products


def _float32_array(codes):
    """The codes as a C-contiguous float32 array (no copy when they already are one)."""
    return np.ascontiguousarray(codes.detach().to(torch.float32).numpy())
