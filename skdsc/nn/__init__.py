"""PyTorch building blocks of the skdsc estimators."""

from .augment import Augmentation
from .autoencoder import ConvAutoencoder, MLPAutoencoder
from .encoders import ProjectionEncoder, create_backbone
from .memory_bank import MemoryBank
from .self_expression import DenseSelfExpression

__all__ = [
    "Augmentation", "ConvAutoencoder", "DenseSelfExpression", "MLPAutoencoder", "MemoryBank",
    "ProjectionEncoder", "create_backbone",
]
