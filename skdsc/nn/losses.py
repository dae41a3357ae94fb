"""Loss terms, each a mean over the samples of a batch.

Summed over the batches of an epoch they give the DSC-Net objective divided by
the number of samples, so the weights keep their published meaning.
"""

import torch
import torch.nn.functional as F


def reconstruction_loss(x, x_rebuilt):
    """Mean over samples of the squared error ``||x_i - x_rebuilt_i||^2``."""
    return (x - x_rebuilt).pow(2).flatten(1).sum(1).mean()


def self_expression_loss(codes, expressed):
    """Mean over samples of ``||z_i - C_i Z||^2``."""
    return (codes - expressed).pow(2).flatten(1).sum(1).mean()


def coefficient_loss(rows):
    """Mean over samples of ``||C_i||^2`` (the squared Frobenius norm per row)."""
    return rows.pow(2).sum(1).mean()


def info_nce_loss(anchors, positives, negatives, temperature, exclude=None):
    """InfoNCE: each anchor must pick its positive out of the negatives.

    Parameters
    ----------
    anchors : torch.Tensor of shape (batch, dim)
    positives : torch.Tensor of shape (batch, dim)
        One positive per anchor.
    negatives : torch.Tensor of shape (n_negatives, dim)
        Shared by every anchor (e.g. the memory bank, or a random draw of its
        slots). Normalised here, so pass only the rows to use rather than a
        whole bank to be masked.
    temperature : float
        Divides the cosine similarities.
    exclude : torch.Tensor of shape (batch, n_negatives) of bool, optional
        Negatives not to use for an anchor (its own code in the bank).

    Returns
    -------
    loss : torch.Tensor
        Mean over anchors of ``-log softmax`` of the positive's similarity.
    """
    anchors = F.normalize(anchors, dim=1)
    positive_logits = (anchors * F.normalize(positives, dim=1)).sum(1, keepdim=True)
    negative_logits = anchors @ F.normalize(negatives, dim=1).T
    if exclude is not None:
        negative_logits = negative_logits.masked_fill(exclude, -torch.inf)
    logits = torch.cat([positive_logits, negative_logits], dim=1) / temperature
    return -logits.log_softmax(dim=1)[:, 0].mean()


def paired_info_nce_loss(first, second, temperature):
    """InfoNCE between two views of a batch, the other views of the batch as negatives.

    Each of the ``2 * batch`` codes must pick the other view of its own
    sample among the ``2 * batch - 1`` other codes (NT-Xent). All codes come
    from the current encoder, so no negative is stale.

    Parameters
    ----------
    first, second : torch.Tensor of shape (batch, dim)
        Codes of two views; row ``i`` of both belongs to sample ``i``.
    temperature : float
        Divides the cosine similarities.

    Returns
    -------
    loss : torch.Tensor
    """
    batch = len(first)
    codes = F.normalize(torch.cat([first, second]), dim=1)
    logits = (codes @ codes.T) / temperature
    logits = logits.masked_fill(torch.eye(2 * batch, dtype=torch.bool, device=codes.device),
                                -torch.inf)
    partner = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)]).to(codes.device)
    return F.cross_entropy(logits, partner)
