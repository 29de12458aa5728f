"""lnexp: "Layer Normalization" (Ba, Kiros & Hinton, 2016) reproduced in JAX/Flax NNX.

The modules to import into your own Flax projects: the normalization layers of
:mod:`lnexp.norms` and the layer-normalized recurrent cells of :mod:`lnexp.cells`.
"""

from lnexp import cells, norms
from lnexp.cells import GRUCell, LSTMCell, SimpleCell
from lnexp.norms import (
    BatchNorm,
    LayerNorm,
    NormalizedLinear,
    RMSNorm,
    WeightNormLinear,
    make_norm,
    moments,
)

__all__ = [
    "BatchNorm",
    "GRUCell",
    "LSTMCell",
    "LayerNorm",
    "NormalizedLinear",
    "RMSNorm",
    "SimpleCell",
    "WeightNormLinear",
    "cells",
    "make_norm",
    "moments",
    "norms",
]
