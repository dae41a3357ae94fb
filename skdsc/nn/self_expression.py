"""Self-expressive layer: each latent code rebuilt from the codes in the bank."""

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import DataParallelGroup


class _BankProduct(torch.autograd.Function):
    """``rows @ codes`` whose gradient also reaches the live codes at ``slots``.

    The bank holds the batch's codes detached; the live ones (with gradient)
    get what the product's columns ``slots`` would give them. Both products
    with the bank, forward and backward, have their rows shared out over the
    processes of ``parallel``.
    """

    @staticmethod
    def forward(ctx, rows, codes, live_codes, slots, parallel):
        ctx.save_for_backward(rows, codes, slots)
        ctx.parallel = parallel
        return parallel.split_rows(lambda part: part @ codes, rows)

    @staticmethod
    def backward(ctx, grad):
        rows, codes, slots = ctx.saved_tensors
        grad_rows = ctx.parallel.split_rows(lambda part: part @ codes.T, grad)
        grad_live = rows[:, slots].T @ grad
        return grad_rows, None, grad_live, None, None


class _CandidateProduct(torch.autograd.Function):
    """Each row of ``rows`` times the codes of its own candidates in the bank.

    Row ``i`` gives ``rows[i] @ codes[candidates[i]]``. The bank's codes are
    detached, so only ``rows`` gets a gradient. The rows of the product,
    forward and backward, are shared out over the processes of ``parallel``;
    each row is computed on its own, so the result is the single process's.
    """

    @staticmethod
    def forward(ctx, rows, codes, candidates, parallel):
        share, _ = parallel.share(torch.arange(len(rows), device=rows.device))
        gathered = codes[candidates[share]]
        ctx.save_for_backward(gathered, share)
        ctx.parallel = parallel
        expressed = torch.bmm(rows[share, None, :], gathered).squeeze(1)
        return parallel.gather_rows(expressed, len(rows))

    @staticmethod
    def backward(ctx, grad):
        gathered, share = ctx.saved_tensors
        # The same product that autograd takes for a batched matrix product.
        grad_rows = torch.bmm(grad[share, None, :], gathered.transpose(1, 2)).squeeze(1)
        return ctx.parallel.gather_rows(grad_rows, len(grad)), None, None, None


class DenseSelfExpression(nn.Module):
    """An ``n_samples x n_samples`` coefficient matrix with a zero diagonal.

    Rows are read with a sparse-gradient embedding lookup, so a mini-batch step
    touches (and, with :class:`torch.optim.SparseAdam`, updates) only the rows of
    the batch: the cost of a step is ``O(batch_size * n_samples)``.

    Parameters
    ----------
    n_samples : int
        Number of training samples (rows and columns of the matrix).
    init : float, default=1e-8
        Constant initial value of every coefficient; the gradient through the
        codes breaks the symmetry.
    """

    def __init__(self, n_samples, init=1e-8):
        super().__init__()
        self.weight = nn.Parameter(torch.full((n_samples, n_samples), float(init)))

    @torch.no_grad()
    def initialise(self, coefficients):
        """Start from the given ``(n_samples, n_samples)`` coefficients."""
        self.weight.copy_(coefficients)
        return self

    def ridge_start(self, codes, penalty, parallel=None):
        """Start from the exact ridge minimiser for fixed ``codes`` (:func:`ridge_coefficients`).

        One system for all the rows: ``parallel`` is not used.
        """
        return self.initialise(ridge_coefficients(codes, penalty))

    def rows(self, indices):
        """Coefficient rows of samples ``indices``, diagonal entries zeroed.

        Returns
        -------
        rows : torch.Tensor of shape (batch_size, n_samples)
        """
        rows = F.embedding(indices, self.weight, sparse=True)
        not_self = torch.arange(rows.shape[1], device=rows.device)[None, :] != indices[:, None]
        return rows * not_self

    def forward(self, indices, live_codes, bank, slots, live_indices=None, parallel=None):
        """Self-express the codes of a batch against the memory bank.

        Parameters
        ----------
        indices : torch.Tensor of shape (batch_size,)
            Sample indices of the rows to express.
        live_codes : torch.Tensor of shape (n_live, n_features)
            Codes of the batch from the current encoder, with gradient. They must
            already be written into ``bank`` at ``slots``.
        bank : MemoryBank
            Detached codes of all samples.
        slots : torch.Tensor of shape (n_live,)
            Bank slots holding ``live_codes``.
        live_indices : torch.Tensor of shape (n_live,), optional
            Samples of ``live_codes``; by default ``indices``. A data-parallel
            step expresses its share of a batch against the live codes of the
            whole batch.
        parallel : DataParallelGroup, optional
            Share out the rows of the products with the bank (forward and
            backward) over these processes; every process must then call with
            the same arguments, and gets the whole result.

        Returns
        -------
        expressed : torch.Tensor of shape (batch_size, n_features)
            ``C[B, :] @ bank``; the batch's own codes enter live, so that with a
            single full batch this is exactly DSC-Net's ``C @ Z``.
        rows : torch.Tensor of shape (batch_size, n_samples)
            The coefficient rows used (for the coefficient penalty).
        """
        rows = self.rows(indices)
        # Slot j holds sample j in an "index" bank: no reordering to pay for
        # (a copy of the rows and, backwards, a scatter of their gradient).
        by_slot = rows if bank.update == "index" else rows[:, bank.owners]
        if parallel is None:
            parallel = DataParallelGroup()
        return _BankProduct.apply(by_slot, bank.codes, live_codes, slots, parallel), rows

    @torch.no_grad()
    def coefficients(self):
        """The coefficient matrix with its diagonal set to zero, as a tensor."""
        weight = self.weight.detach().clone()
        weight.fill_diagonal_(0.0)
        return weight


class SparseSelfExpression(nn.Module):
    """Coefficients restricted to ``n_nonzero`` candidate samples per row.

    Row ``i`` may use only the samples ``neighbors[i]`` (its nearest codes, never
    itself), so the layer holds ``n_samples x n_nonzero`` values and indices
    instead of an ``n_samples x n_samples`` matrix: memory and the cost of a
    step grow as ``O(n_samples * n_nonzero)``. Coefficients outside the
    candidate sets are zero, so the loss terms keep their dense meaning.

    Parameters
    ----------
    neighbors : torch.Tensor of shape (n_samples, n_nonzero)
        Int64 candidate sample indices of every row, without the row itself
        and without repeats.
    init : float, default=1e-8
        Constant initial value of every coefficient.
    """

    def __init__(self, neighbors, init=1e-8):
        super().__init__()
        self.register_buffer("neighbors", neighbors.long().clone())
        self.weight = nn.Parameter(torch.full(neighbors.shape, float(init),
                                              device=neighbors.device))

    @property
    def n_samples(self):
        return self.neighbors.shape[0]

    def rows(self, indices):
        """Candidate coefficients of samples ``indices``, shape ``(batch, n_nonzero)``."""
        return F.embedding(indices, self.weight, sparse=True)

    def forward(self, indices, live_codes, bank, slots, live_indices=None, parallel=None):
        """Self-express the codes of a batch against their candidates in the bank.

        Parameters and returns as in :meth:`DenseSelfExpression.forward`, except
        that ``rows`` has shape ``(batch_size, n_nonzero)``. The bank must hold
        sample ``j`` in slot ``j`` (``bank_update="index"``).
        """
        rows = self.rows(indices)
        candidates = self.neighbors[indices]
        if parallel is None:
            parallel = DataParallelGroup()
        expressed = _CandidateProduct.apply(rows, bank.codes, candidates, parallel)
        # Straight-through term for candidates inside the batch: zero in value,
        # it routes their gradient into the live codes, as in the dense layer.
        live_indices = indices if live_indices is None else live_indices
        position = torch.full((self.n_samples,), -1, dtype=torch.long, device=indices.device)
        position[live_indices] = torch.arange(len(live_indices), device=indices.device)
        in_batch = position[candidates]
        row, column = (in_batch >= 0).nonzero(as_tuple=True)
        if len(row):
            delta = (live_codes - live_codes.detach())[in_batch[row, column]]
            expressed = expressed.index_add(0, row, rows[row, column, None] * delta)
        return expressed, rows

    @torch.no_grad()
    def ridge_start(self, codes, penalty, parallel=None):
        """Start every row at its ridge minimiser over its own candidates.

        The rows are independent: the processes of ``parallel`` share them out.
        """
        parallel = DataParallelGroup() if parallel is None else parallel
        self.weight.copy_(parallel.split_rows(
            lambda rows: local_ridge_regression(codes[rows], codes, self.neighbors[rows],
                                                penalty),
            torch.arange(len(codes), device=codes.device)))
        return self

    @torch.no_grad()
    def refresh(self, neighbors, optimizer=None):
        """Move to new candidate sets, keeping what was learnt where possible.

        A candidate kept from the old set keeps its value (and its optimiser
        moments); a new one starts at zero.

        Parameters
        ----------
        neighbors : torch.Tensor of shape (n_samples, n_nonzero)
            The new candidates.
        optimizer : torch.optim.Optimizer, optional
            Optimiser of :attr:`weight`, whose per-entry state is carried over.

        Returns
        -------
        changed : float
            Fraction of candidates that are new.
        """
        neighbors = neighbors.to(self.neighbors.device).long()
        source, kept = _matching_columns(self.neighbors, neighbors)
        state = optimizer.state.get(self.weight, {}) if optimizer is not None else {}
        for tensor in [self.weight.data, *(value for value in state.values()
                                           if torch.is_tensor(value)
                                           and value.shape == self.weight.shape)]:
            tensor.copy_(torch.where(kept, tensor.gather(1, source), 0.0))
        self.neighbors.copy_(neighbors)
        return 1.0 - kept.float().mean().item()

    @torch.no_grad()
    def coefficients(self):
        """The coefficients as ``(neighbors, values)``, both ``(n_samples, n_nonzero)``."""
        return self.neighbors.clone(), self.weight.detach().clone()


def _matching_columns(old, new, block=4096):
    """Where each entry of ``new`` sits in the same row of ``old``.

    Returns ``(source, kept)``: ``old[i, source[i, j]] == new[i, j]`` wherever
    ``kept[i, j]``. Rows are compared in blocks to bound the
    ``block x k x k`` comparison.
    """
    # Results are written into arrays allocated up front: small per-block
    # results kept alive between large temporaries fragment the C heap, which
    # then cannot give the freed temporaries back (peak RSS grew by gigabytes).
    sources = torch.empty(new.shape, dtype=torch.int64, device=new.device)
    kept = torch.empty(new.shape, dtype=torch.bool, device=new.device)
    for start in range(0, len(new), block):
        equal = new[start:start + block, :, None] == old[start:start + block, None, :]
        kept[start:start + block] = equal.any(2)
        sources[start:start + block] = equal.float().argmax(2)
    return sources, kept


def mean_square_norm(codes):
    """Mean over the rows of ``codes`` of their squared norm, as a 0-d tensor.

    The scale of a set of codes: ridge penalties and loss weights relative to
    it mean the same for codes of any magnitude. Row norms first, so no
    temporary copy of a (possibly large) code matrix is made.
    """
    return torch.linalg.vector_norm(codes, dim=1).pow(2).mean()


def floored_penalty(codes, penalty):
    """``penalty``, raised to a tiny fraction of the codes' mean squared norm.

    Keeps ridge regressions against ``codes`` solvable when the penalty is
    zero (``lambda_coef=0``) or the codes are rank deficient.
    """
    mean_square = mean_square_norm(codes)
    return max(float(penalty), 1e-8 * float(mean_square) + 1e-12)


@torch.no_grad()
def ridge_coefficients(codes, penalty):
    """Exact minimiser of the self-expression and coefficient terms for fixed codes.

    For every row ``i`` solves ``min ||z_i - c Z||^2 + penalty ||c||^2`` with
    ``c_i = 0``: ``C = I - diag(A)^-1 A`` with ``A = (Z Z^T + penalty I)^-1``.
    The system solved is the smaller of the two sizes: with fewer samples
    than features, ``A`` itself (``n x n``); otherwise its Woodbury form
    ``C_ij = z_i M z_j^T / (1 - z_i M z_i^T)`` with
    ``M = (Z^T Z + penalty I)^-1`` (``d x d``), which needs no ``n x n``
    inverse. Either way the cost is ``O(n d min(n, d))``.

    Parameters
    ----------
    codes : torch.Tensor of shape (n_samples, n_features)
    penalty : float
        Ridge weight, ``lambda_coef / lambda_self``; a tiny floor keeps the
        problem well posed when it is zero.

    Returns
    -------
    coefficients : torch.Tensor of shape (n_samples, n_samples)
        Zero diagonal, in the dtype of ``codes``.
    """
    z = codes.double()
    n_samples, n_features = z.shape
    penalty = floored_penalty(z, penalty)
    if n_samples < n_features:
        kernel = z @ z.T
        kernel.diagonal().add_(penalty)
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(kernel))
        inverse /= -inverse.diagonal()[:, None]
        coefficients = inverse.to(codes.dtype)
    else:
        gram = z.T @ z
        gram.diagonal().add_(penalty)
        weighted = torch.linalg.solve(gram, z.T).T
        scale = 1.0 / (1.0 - (weighted * z).sum(1)).clamp(min=1e-12)
        # The n x n product in the codes' dtype: the solve above carries the precision.
        coefficients = (weighted * scale[:, None]).to(codes.dtype) @ codes.T
    coefficients.fill_diagonal_(0.0)
    return coefficients


@torch.no_grad()
def local_ridge_regression(queries, codes, neighbors, penalty, block=None):
    """Ridge coefficients of each query over its candidate codes.

    Row ``i`` solves ``min ||q_i - c Z[neighbors[i]]||^2 + penalty ||c||^2``.

    Parameters
    ----------
    queries : torch.Tensor of shape (n_queries, n_features)
    codes : torch.Tensor of shape (n_samples, n_features)
    neighbors : torch.Tensor of shape (n_queries, n_nonzero)
        Candidate indices into ``codes`` of each query.
    penalty : float
        Ridge weight; floored as in :func:`floored_penalty`.
    block : int, optional
        Queries solved at once; by default as many as keep the gathered
        ``block x n_nonzero x n_features`` candidates near 64 MiB.

    Returns
    -------
    coefficients : torch.Tensor of shape (n_queries, n_nonzero)
        In the dtype of ``codes``.
    """
    penalty = floored_penalty(codes, penalty)
    if block is None:
        block = max(1, (1 << 23) // (neighbors.shape[1] * codes.shape[1]))
    identity = torch.eye(neighbors.shape[1], dtype=torch.float64, device=codes.device)
    # Filled in place (see _matching_columns).
    solved = codes.new_empty(neighbors.shape)
    for start in range(0, len(queries), block):
        basis = codes[neighbors[start:start + block]].double()
        query = queries[start:start + block].double()
        gram = basis @ basis.transpose(1, 2) + penalty * identity
        target = torch.bmm(basis, query[:, :, None])
        solved[start:start + block] = torch.linalg.solve(gram, target).squeeze(2)
    return solved
