"""Self-expressive layer: each latent code rebuilt from the codes in the bank."""

import torch
import torch.nn.functional as F
from torch import nn


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

    def rows(self, indices):
        """Coefficient rows of samples ``indices``, diagonal entries zeroed.

        Returns
        -------
        rows : torch.Tensor of shape (batch_size, n_samples)
        """
        rows = F.embedding(indices, self.weight, sparse=True)
        not_self = torch.arange(rows.shape[1], device=rows.device)[None, :] != indices[:, None]
        return rows * not_self

    def forward(self, indices, live_codes, bank, slots):
        """Self-express the codes of a batch against the memory bank.

        Parameters
        ----------
        indices : torch.Tensor of shape (batch_size,)
            Sample indices of the batch.
        live_codes : torch.Tensor of shape (batch_size, n_features)
            Codes of the batch from the current encoder, with gradient. They must
            already be written into ``bank`` at ``slots``.
        bank : MemoryBank
            Detached codes of all samples.
        slots : torch.Tensor of shape (batch_size,)
            Bank slots holding ``live_codes``.

        Returns
        -------
        expressed : torch.Tensor of shape (batch_size, n_features)
            ``C[B, :] @ bank``; the batch's own codes enter live, so that with a
            single full batch this is exactly DSC-Net's ``C @ Z``.
        rows : torch.Tensor of shape (batch_size, n_samples)
            The coefficient rows used (for the coefficient penalty).
        """
        rows = self.rows(indices)
        by_slot = rows[:, bank.owners]
        expressed = by_slot @ bank.codes
        # Straight-through term: zero in value, it routes the gradient of the
        # batch's own columns into the live codes (and so into the encoder).
        expressed = expressed + by_slot[:, slots] @ (live_codes - live_codes.detach())
        return expressed, rows

    @torch.no_grad()
    def coefficients(self):
        """The coefficient matrix with its diagonal set to zero, as a tensor."""
        weight = self.weight.detach().clone()
        weight.fill_diagonal_(0.0)
        return weight


def floored_penalty(codes, penalty):
    """``penalty``, raised to a tiny fraction of the codes' mean squared norm.

    Keeps ridge regressions against ``codes`` solvable when the penalty is
    zero (``lambda_coef=0``) or the codes are rank deficient.
    """
    return max(float(penalty), 1e-8 * float(codes.pow(2).sum(1).mean()) + 1e-12)


@torch.no_grad()
def ridge_coefficients(codes, penalty):
    """Exact minimiser of the self-expression and coefficient terms for fixed codes.

    For every row ``i`` solves ``min ||z_i - c Z||^2 + penalty ||c||^2`` with
    ``c_i = 0``. With ``M = (Z^T Z + penalty I)^-1`` the solution is
    ``C_ij = z_i M z_j^T / (1 - z_i M z_i^T)`` for ``j != i`` (the Woodbury form
    of ``C = I - diag(A)^-1 A`` with ``A = (Z Z^T + penalty I)^-1``), which costs
    ``O(n^2 d)`` and no ``n x n`` inverse.

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
    gram = z.T @ z + floored_penalty(z, penalty) * torch.eye(z.shape[1], dtype=z.dtype,
                                                              device=z.device)
    weighted = torch.linalg.solve(gram, z.T).T
    scale = 1.0 / (1.0 - (weighted * z).sum(1)).clamp(min=1e-12)
    # The n x n product in the codes' dtype: the solve above carries the precision.
    coefficients = (weighted * scale[:, None]).to(codes.dtype) @ codes.T
    coefficients.fill_diagonal_(0.0)
    return coefficients
