"""The self-expression mode of a fit, dense or sparse, answered in one place.

A fit resolves its mode once (:func:`resolve_mode`); the mode object then
builds and restores the self-expressive layer, names the affinity and
threshold that suit it, turns the trained layer into the fitted coefficient
matrix and assigns new samples in ``predict``.
"""

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse

from ._memory import resolve_self_expression
from .distributed import DataParallelGroup
from .nn.neighbors import nearest_neighbors
from .nn.self_expression import (
    DenseSelfExpression, SparseSelfExpression, floored_penalty, local_ridge_regression,
)

# Query rows handled at once when dense prediction compares every cluster.
_PREDICT_CHUNK = 1024


class DenseMode:
    """Every sample may be rebuilt from every other: ``n x n`` coefficients."""

    name = "dense"
    # The DSC rebuild links samples whose low-rank rows point alike, which
    # pays off when every pair can be linked.
    affinity = "dsc"
    # A dense row spreads small weights over every sample: keep the largest
    # 10% of each column's mass, as DSC-Net does.
    threshold = 0.1
    refreshes = False

    def layer(self, bank, parallel=None):
        """A new :class:`~skdsc.nn.DenseSelfExpression` for the bank's samples."""
        return DenseSelfExpression(bank.n_slots).to(bank.codes.device)

    def restored_layer(self, state, bank):
        """A layer shaped as the checkpointed ``state`` (its values are loaded later)."""
        return self.layer(bank)

    def coefficient_matrix(self, layer):
        """The trained coefficients as an ndarray with a zero diagonal."""
        return layer.coefficients().cpu().numpy()

    def predict(self, codes, embedding, labels, n_clusters, penalty):
        """Cluster of each row of ``codes`` by ridge rebuild from every training code.

        Each query is expressed against all of ``embedding`` with the ridge
        penalty of training; its cluster is the one whose codes, with those
        coefficients, leave the smallest residual.
        """
        bank = torch.as_tensor(embedding, dtype=torch.float64, device=codes.device)
        # A map from a chunk of queries to their (chunk, n) coefficients:
        # nothing n x n is formed, whatever the latent dimension.
        projection = _ridge_projection(bank, penalty)
        members = [torch.as_tensor(np.flatnonzero(labels == k), device=codes.device)
                   for k in range(n_clusters)]
        # Filled in place (see skdsc.nn.neighbors): no per-chunk results left
        # between the large temporaries.
        predicted = torch.empty(len(codes), dtype=torch.int64, device=codes.device)
        for start in range(0, len(codes), _PREDICT_CHUNK):
            chunk = codes[start:start + _PREDICT_CHUNK].double()
            coefficients = projection(chunk)
            residuals = torch.stack([
                (chunk - coefficients[:, idx] @ bank[idx]).pow(2).sum(1)
                if len(idx) else torch.full((len(chunk),), torch.inf, dtype=chunk.dtype,
                                            device=chunk.device)
                for idx in members
            ], dim=1)
            predicted[start:start + len(chunk)] = residuals.argmin(1)
        return predicted


class SparseMode:
    """Each sample is rebuilt from its ``n_nonzero`` nearest codes only.

    Parameters
    ----------
    n_nonzero : int
        Candidates per sample (at most all other samples).
    """

    name = "sparse"
    # The DSC rebuild can only reweight the candidate edges of a sparse
    # pattern, and its sharpened angles drop many of them: |C| + |C|^T
    # clusters better there (benchmarks/RESULTS.md, "Affinity of the sparse mode").
    affinity = "symmetric"
    # A sparse row already holds only its candidates; thresholding again cuts
    # the graph apart.
    threshold = 1.0
    refreshes = True

    def __init__(self, n_nonzero, neighbor_search="auto"):
        self.n_nonzero = n_nonzero
        self.neighbor_search = neighbor_search

    def layer(self, bank, parallel=None):
        """A new :class:`~skdsc.nn.SparseSelfExpression` over the nearest codes.

        The processes of ``parallel`` share out the search.
        """
        n_candidates = min(self.n_nonzero, bank.n_slots - 1)
        return SparseSelfExpression(self._candidates(bank, n_candidates, parallel))

    def _candidates(self, bank, n_candidates, parallel):
        """Each code's nearest others in ``bank``, the rows searched shared out."""
        parallel = DataParallelGroup() if parallel is None else parallel
        return parallel.split_rows(
            lambda rows: nearest_neighbors(bank.codes, n_candidates, rows=rows,
                                           method=self.neighbor_search),
            torch.arange(bank.n_slots, device=bank.codes.device))

    def restored_layer(self, state, bank):
        """A layer over the checkpointed candidates (values are loaded later)."""
        return SparseSelfExpression(state["neighbors"].to(bank.codes.device))

    def refresh(self, layer, bank, optimizer, parallel):
        """Move the candidates to the nearest codes in ``bank``; the fraction changed.

        The processes of ``parallel`` share out the search and all take its
        result.
        """
        return layer.refresh(self._candidates(bank, layer.neighbors.shape[1], parallel),
                             optimizer)

    def coefficient_matrix(self, layer):
        """The trained coefficients as a CSR matrix with sorted indices."""
        neighbors, values = (part.cpu().numpy() for part in layer.coefficients())
        n_samples, n_nonzero = neighbors.shape
        matrix = sparse.csr_matrix(
            (values.ravel(), neighbors.ravel(),
             np.arange(0, n_samples * n_nonzero + 1, n_nonzero)),
            shape=(n_samples, n_samples),
        )
        matrix.sort_indices()
        return matrix

    def predict(self, codes, embedding, labels, n_clusters, penalty, index=None):
        """Cluster of each row of ``codes`` by ridge rebuild from its nearest codes.

        As in training, each query is expressed against its ``n_nonzero``
        nearest training codes, found in ``index`` (a
        :class:`~skdsc.nn.NeighborIndex` of ``embedding``) when one is given;
        nothing larger than ``n x n_nonzero`` is formed.
        """
        bank = torch.as_tensor(embedding, device=codes.device)
        train_labels = torch.as_tensor(labels, device=codes.device)
        # The search and the ridge solves block their own work, so every row
        # is handled in one call each (bank norms and penalty computed once).
        n_neighbors = min(self.n_nonzero, len(bank))
        neighbors = (nearest_neighbors(bank, n_neighbors, queries=codes,
                                       method=self.neighbor_search)
                     if index is None else index.search(codes, n_neighbors))
        # Rows per block so that the gathered candidates and the per-cluster
        # rebuilds, (block, n_nonzero or n_clusters, n_latent), stay small.
        block = max(1, (1 << 23) // (max(neighbors.shape[1], n_clusters) * bank.shape[1]))
        coefficients = local_ridge_regression(codes, bank, neighbors, penalty, block=block)
        predicted = torch.empty(len(codes), dtype=torch.int64, device=codes.device)
        for start in range(0, len(codes), block):
            rows = slice(start, start + block)
            basis = bank[neighbors[rows]].double()
            members = F.one_hot(train_labels[neighbors[rows]], n_clusters).double()
            # Rebuild of each row from the candidates of each cluster alone; a
            # cluster without candidates rebuilds nothing (residual ||z||^2).
            weights = (coefficients[rows].double()[:, :, None] * members).transpose(1, 2)
            residuals = (codes[rows, None, :].double() - weights @ basis).pow(2).sum(2)
            predicted[rows] = residuals.argmin(1)
        return predicted


def mode_named(name, n_nonzero, neighbor_search="auto"):
    """The mode object of a resolved mode name (``"dense"`` or ``"sparse"``)."""
    return DenseMode() if name == "dense" else SparseMode(n_nonzero, neighbor_search)


def resolve_mode(self_expression, n_samples, device, *, bank_update, n_nonzero,
                 neighbor_search="auto"):
    """The mode a fit trains with, checked before any training.

    ``self_expression="auto"`` is resolved by the free memory (see
    :func:`skdsc._memory.resolve_self_expression`).
    """
    name = resolve_self_expression(self_expression, n_samples, device)
    if name == "sparse" and bank_update != "index":
        raise ValueError(
            "self_expression='sparse' needs bank_update='index' (candidates are "
            f"looked up by sample), got bank_update={bank_update!r}."
        )
    return mode_named(name, n_nonzero, neighbor_search)


def _ridge_projection(bank, penalty):
    """The map ``queries -> ridge coefficients`` against ``bank``, as a function.

    The returned function takes queries ``(m, d)`` and gives, for every row
    ``z``, the minimiser ``c`` (a row of length ``n``) of
    ``||z - c @ bank||^2 + penalty * ||c||^2``. Neither way of computing it
    forms an ``n x n`` matrix:

    * ``d <= n``: ``c = z (bank^T bank + penalty I)^-1 bank^T``, one solve of
      the ``d x d`` system, kept as a ``(d, n)`` projection (the size of the
      bank itself) and applied to each chunk by one product;
    * ``d > n``: the ``d x d`` system would be larger than ``n x n``, and the
      ``n x n`` one, ``c (bank bank^T + penalty I) = z bank^T``, is what must
      not be formed. It is solved by conjugate gradients that only multiply
      by ``bank`` and ``bank^T``: ``O(m n d)`` time per iteration and memory
      ``O(m (n + d))`` for a chunk of ``m`` queries, against ``O(n^3)`` once
      and ``O(n^2)`` memory for the inverse. The price is time: every chunk
      takes some dozens of iterations (33 on ORL's autoencoder codes, n=400,
      d=3840) instead of one product, so there prediction is several times
      slower than with the inverse (2.5 s against 0.4 s for 400 rows, one
      thread); the coefficients agree with the inverse's to about ``1e-9``
      relative and gave the same labels on ORL and COIL-20.

    ``predict`` calls it with chunks of at most ``_PREDICT_CHUNK`` queries, so
    the ``(m, n)`` coefficient blocks stay linear in ``n``.
    """
    n_samples, n_latent = bank.shape
    penalty = floored_penalty(bank, penalty)
    if n_latent <= n_samples:
        gram = bank.T @ bank + penalty * torch.eye(n_latent, dtype=bank.dtype, device=bank.device)
        projection = torch.linalg.solve(gram, bank.T)
        return lambda queries: queries @ projection
    preconditioner = _JacobiPreconditioner(bank, penalty)
    return lambda queries: _conjugate_gradient_ridge(bank, penalty, queries, preconditioner)


class _JacobiPreconditioner:
    """Inverse of the diagonal of ``bank bank^T + penalty I``, ``O(n)`` to keep."""

    def __init__(self, bank, penalty):
        self.inverse_diagonal = 1.0 / (bank.pow(2).sum(1) + penalty)

    def __call__(self, rows):
        return rows * self.inverse_diagonal


# Relative residual at which a query's solve stops: well below the rounding
# of the direct solve's residual comparisons that decide a label.
_CG_TOLERANCE = 1e-12


def _conjugate_gradient_ridge(bank, penalty, queries, preconditioner, *,
                              tolerance=_CG_TOLERANCE, max_iter=None):
    """Rows ``c`` with ``c (bank bank^T + penalty I) = z bank^T``, one per query ``z``.

    Preconditioned conjugate gradients, run for all queries at once (each
    row its own step sizes); the system matrix is applied as
    ``(c @ bank) @ bank.T + penalty * c`` and never formed. A row stops
    changing once its residual is below ``tolerance`` times its right-hand
    side's norm.

    Parameters
    ----------
    bank : torch.Tensor of shape (n, d)
    penalty : float
        Positive, so the system is positive definite.
    queries : torch.Tensor of shape (m, d)
    preconditioner : callable
        Applies an approximation of the system's inverse to ``(m, n)`` rows.
    tolerance : float
    max_iter : int or None
        Defaults to ``max(100, 2 * n)`` (in exact arithmetic ``n`` suffice).

    Returns
    -------
    coefficients : torch.Tensor of shape (m, n)
    """
    if max_iter is None:
        max_iter = max(100, 2 * bank.shape[0])
    rhs = queries @ bank.T
    limit = tolerance * rhs.norm(dim=1)
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    preconditioned = preconditioner(residual)
    direction = preconditioned.clone()
    rho = (residual * preconditioned).sum(1)
    for _ in range(max_iter):
        active = residual.norm(dim=1) > limit
        if not bool(active.any()):
            break
        applied = (direction @ bank) @ bank.T + penalty * direction
        curvature = (direction * applied).sum(1)
        # Rows that have converged keep their solution: a zero step.
        step = torch.where(active, rho / torch.where(active, curvature, 1.0), 0.0)
        solution += step[:, None] * direction
        residual -= step[:, None] * applied
        preconditioned = preconditioner(residual)
        rho_next = (residual * preconditioned).sum(1)
        beta = torch.where(active, rho_next / torch.where(active, rho, 1.0), 0.0)
        direction = preconditioned + beta[:, None] * direction
        rho = rho_next
    return solution
