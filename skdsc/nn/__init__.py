"""PyTorch building blocks of the skdsc estimators."""

from .augment import Augmentation
from .autoencoder import ConvAutoencoder, MLPAutoencoder
from .encoders import ProjectionEncoder, create_backbone
from .memory_bank import MemoryBank
from .momentum import MomentumEncoder
from .neighbors import nearest_neighbors
from .self_expression import DenseSelfExpression, SparseSelfExpression

__all__ = [
    "Augmentation", "ConvAutoencoder", "DenseSelfExpression", "MLPAutoencoder", "MemoryBank",
    "MomentumEncoder",
    "ProjectionEncoder", "SparseSelfExpression", "create_backbone", "nearest_neighbors",
]
