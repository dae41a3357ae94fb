"""Loss terms, each a mean over the samples of a batch.

Summed over the batches of an epoch they give the DSC-Net objective divided by
the number of samples, so the weights keep their published meaning.
"""


def reconstruction_loss(x, x_rebuilt):
    """Mean over samples of the squared error ``||x_i - x_rebuilt_i||^2``."""
    return (x - x_rebuilt).pow(2).flatten(1).sum(1).mean()


def self_expression_loss(codes, expressed):
    """Mean over samples of ``||z_i - C_i Z||^2``."""
    return (codes - expressed).pow(2).flatten(1).sum(1).mean()


def coefficient_loss(rows):
    """Mean over samples of ``||C_i||^2`` (the squared Frobenius norm per row)."""
    return rows.pow(2).sum(1).mean()
