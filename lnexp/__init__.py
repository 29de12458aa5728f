"""lnexp: "Layer Normalization" (Ba, Kiros & Hinton, 2016) reproduced in JAX/Flax NNX.

The modules to import into your own Flax projects: the normalization layers of
:mod:`lnexp.norms` and the layer-normalized recurrent cells of :mod:`lnexp.cells`.
``lnexp.encode(workdir, sentences)`` encodes sentences with a trained skip-thought run
(:mod:`lnexp.studies.skipthought.encode`, imported on first use).

The layers, the cells and the models (:mod:`lnexp.models`) need only JAX, Flax and NumPy, the
package's dependencies; ``encode``, the experiments, data, reports and command lines need its
``experiments`` extra (``pip install -e ".[experiments]"``).
``lnexp.__version__`` is the package's version, the one source pyproject.toml reads.
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

__version__ = "0.1.0"  # The one place: pyproject.toml reads it (see CHANGELOG.md).

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
    "encode",
    "make_norm",
    "moments",
    "norms",
]


def __getattr__(name: str):
    if name == "encode":  # Lazy: the training stack (orbax, optax) loads only when used.
        from lnexp.studies.skipthought.encode import encode

        return encode
    raise AttributeError(f"module 'lnexp' has no attribute {name!r}")
