"""PyTorch building blocks of the skdsc estimators."""

from .autoencoder import ConvAutoencoder, MLPAutoencoder
from .memory_bank import MemoryBank
from .self_expression import DenseSelfExpression

__all__ = ["ConvAutoencoder", "DenseSelfExpression", "MLPAutoencoder", "MemoryBank"]
