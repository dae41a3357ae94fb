"""Deep subspace clustering for scikit-learn, on PyTorch."""

from ._bdsc import MiniBatchDeepSubspaceClustering

__all__ = ["MiniBatchDeepSubspaceClustering"]
__version__ = "0.1.0"
