"""lnexp: "Layer Normalization" (Ba, Kiros & Hinton, 2016) reproduced in JAX/Flax NNX.

Modules to import into your own Flax projects live in :mod:`lnexp.norms`.
"""

from lnexp import norms
from lnexp.norms import (
    BatchNorm,
    LayerNorm,
    NormalizedLinear,
    RMSNorm,
    WeightNormLinear,
)

__all__ = [
    "BatchNorm",
    "LayerNorm",
    "NormalizedLinear",
    "RMSNorm",
    "WeightNormLinear",
    "norms",
]
