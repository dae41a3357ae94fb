"""PyTorch building blocks of the skdsc estimators."""

from .augment import Augmentation
from .autoencoder import ConvAutoencoder, MLPAutoencoder
from .encoders import (ProjectionEncoder, convert_state_dict, create_backbone, load_weights,
                       save_state_dict)
from .memory_bank import MemoryBank
from .momentum import MomentumEncoder
from .neighbors import NeighborIndex, nearest_neighbors
from .self_expression import DenseSelfExpression, SparseSelfExpression

__all__ = [
    "Augmentation", "ConvAutoencoder", "DenseSelfExpression", "MLPAutoencoder", "MemoryBank",
    "MomentumEncoder", "NeighborIndex",
    "ProjectionEncoder", "SparseSelfExpression", "convert_state_dict", "create_backbone",
    "load_weights", "nearest_neighbors", "save_state_dict",
]
