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

    def layer(self, bank):
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
        projection = _ridge_projection(bank, penalty)
        members = [torch.as_tensor(np.flatnonzero(labels == k), device=codes.device)
                   for k in range(n_clusters)]
        # Filled in place (see skdsc.nn.neighbors): no per-chunk results left
        # between the large temporaries.
        predicted = torch.empty(len(codes), dtype=torch.int64, device=codes.device)
        for start in range(0, len(codes), _PREDICT_CHUNK):
            chunk = codes[start:start + _PREDICT_CHUNK].double()
            coefficients = chunk @ projection
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

    def __init__(self, n_nonzero):
        self.n_nonzero = n_nonzero

    def layer(self, bank):
        """A new :class:`~skdsc.nn.SparseSelfExpression` over the nearest codes."""
        n_candidates = min(self.n_nonzero, bank.n_slots - 1)
        return SparseSelfExpression(nearest_neighbors(bank.codes, n_candidates))

    def restored_layer(self, state, bank):
        """A layer over the checkpointed candidates (values are loaded later)."""
        return SparseSelfExpression(state["neighbors"].to(bank.codes.device))

    def refresh(self, layer, bank, optimizer, parallel):
        """Move the candidates to the nearest codes in ``bank``; the fraction changed.

        Every process of ``parallel`` takes the first one's candidates.
        """
        neighbors = parallel.broadcast_(nearest_neighbors(bank.codes, layer.neighbors.shape[1]))
        return layer.refresh(neighbors, optimizer)

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

    def predict(self, codes, embedding, labels, n_clusters, penalty):
        """Cluster of each row of ``codes`` by ridge rebuild from its nearest codes.

        As in training, each query is expressed against its ``n_nonzero``
        nearest training codes; nothing larger than ``n x n_nonzero`` is formed.
        """
        bank = torch.as_tensor(embedding, device=codes.device)
        train_labels = torch.as_tensor(labels, device=codes.device)
        # The search and the ridge solves block their own work, so every row
        # is handled in one call each (bank norms and penalty computed once).
        neighbors = nearest_neighbors(bank, min(self.n_nonzero, len(bank)), queries=codes)
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


def mode_named(name, n_nonzero):
    """The mode object of a resolved mode name (``"dense"`` or ``"sparse"``)."""
    return DenseMode() if name == "dense" else SparseMode(n_nonzero)


def resolve_mode(self_expression, n_samples, device, *, bank_update, n_nonzero):
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
    return mode_named(name, n_nonzero)


def _ridge_projection(bank, penalty):
    """Matrix ``P`` with ``codes @ P`` the ridge coefficients against ``bank``.

    Solves ``min_c ||z - c @ bank||^2 + penalty * ||c||^2`` for every row; uses
    the smaller of the two equivalent normal equations.
    """
    n_samples, n_latent = bank.shape
    penalty = floored_penalty(bank, penalty)
    if n_latent <= n_samples:
        gram = bank.T @ bank + penalty * torch.eye(n_latent, dtype=bank.dtype, device=bank.device)
        return torch.linalg.solve(gram, bank.T)
    gram = bank @ bank.T + penalty * torch.eye(n_samples, dtype=bank.dtype, device=bank.device)
    return bank.T @ torch.linalg.inv(gram)
