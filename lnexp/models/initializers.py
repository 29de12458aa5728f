"""Weight initializers by name, so configs can choose them with a string.

The initializers themselves belong to the layers (:func:`lnexp.cells.symmetric_uniform`, Flax's
own); this table and its :class:`~lnexp.errors.UserError` are the application's.
"""

from __future__ import annotations

from flax import nnx

from lnexp.cells import symmetric_uniform
from lnexp.errors import UserError

Initializer = nnx.initializers.Initializer


INITIALIZERS = {
    "lecun_normal": nnx.initializers.lecun_normal,
    "he_normal": nnx.initializers.he_normal,
    "he_uniform": nnx.initializers.he_uniform,
    "glorot_normal": nnx.initializers.glorot_normal,
    "glorot_uniform": nnx.initializers.glorot_uniform,
    "orthogonal": nnx.initializers.orthogonal,
    # PyTorch's nn.Linear default: uniform in +-1/sqrt(fan_in).
    "torch": lambda: nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
    "uniform_0.1": lambda: symmetric_uniform(0.1),
    # A fixed small scale, whatever the fan-in (the era's "N(0, 0.01^2)").
    "normal_0.01": lambda: nnx.initializers.normal(0.01),
}


def get_initializer(name: str) -> Initializer:
    """The initializer called ``name`` (one of :data:`INITIALIZERS`)."""
    if name not in INITIALIZERS:
        raise UserError(f"Unknown initializer {name!r}: expected one of {sorted(INITIALIZERS)}.")
    return INITIALIZERS[name]()
