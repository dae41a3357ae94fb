"""Deep subspace clustering for scikit-learn, on PyTorch."""

from ._bdsc import MiniBatchDeepSubspaceClustering
from ._checkpoint import CheckpointError
from ._contrastive import ContrastiveDSC

__all__ = ["CheckpointError", "ContrastiveDSC", "MiniBatchDeepSubspaceClustering"]
__version__ = "0.1.0"
