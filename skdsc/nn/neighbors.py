"""Blockwise nearest-neighbour search among latent codes, on their own device."""

import torch

# Similarities held at once: a query block times all candidates (256 MiB of float32).
_BLOCK_ELEMENTS = 1 << 26


@torch.no_grad()
def nearest_neighbors(candidates, n_neighbors, *, queries=None):
    """Indices of the candidates most similar in angle to each query.

    Similarity is the cosine between codes: subspaces pass through the
    origin, so the direction of a code, not its length, says which subspace it
    lies near. Queries are processed in blocks, so memory is
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

    Returns
    -------
    indices : torch.Tensor of shape (n_queries, n_neighbors)
        Int64 candidate indices, most similar first, on the candidates' device.
    """
    exclude_self = queries is None
    limit = len(candidates) - 1 if exclude_self else len(candidates)
    if not 1 <= n_neighbors <= limit:
        raise ValueError(f"n_neighbors must be in [1, {limit}], got {n_neighbors}.")
    if queries is None:
        queries = candidates
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
        if exclude_self:
            rows = torch.arange(len(similarity), device=similarity.device)
            similarity[rows, rows + start] = -torch.inf
        found[start:start + block] = similarity.topk(n_neighbors, dim=1).indices
    return found


def _norms(codes):
    # Zero codes get a tiny norm: their cosines are 0, not NaN.
    return torch.linalg.vector_norm(codes, dim=1).clamp(min=1e-12)
