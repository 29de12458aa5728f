"""DRAW (Gregor et al., 2015): a recurrent variational auto-encoder that draws an image on a
canvas over ``T`` glimpses, with its LSTMs from :mod:`lnexp.cells` (the paper's Fig. 4).

At each glimpse ``t = 1..T`` (Gregor et al., eqs. 3-8)::

    x^_t  = x - s(c_{t-1})                            # the error image
    r_t   = read(x, x^_t, h^dec_{t-1})
    h^enc_t = LSTM_enc(h^enc_{t-1}, [r_t, h^dec_{t-1}])
    z_t   = mu_t + sigma_t * eps_t,  (mu_t, log sigma_t) = W(h^enc_t),  eps_t ~ N(0, I)
    h^dec_t = LSTM_dec(h^dec_{t-1}, z_t)
    c_t   = c_{t-1} + write(h^dec_t)

with ``c_0 = 0`` and zero initial LSTM states. The negative variational bound of an image, in
nats (their eqs. 9-12, the one this module's :func:`negative_bound` returns)::

    L = -log D(x | c_T) + sum_t KL(N(mu_t, sigma_t^2) || N(0, I))
      = sum_pixels BCE(s(c_T), x) + sum_t 1/2 sum_j (mu_tj^2 + sigma_tj^2 - log sigma_tj^2 - 1)

(their eq. 11 writes the constant as ``-T/2``; it is ``-1/2`` per latent dimension and glimpse,
``-T Z / 2`` in all).

Read and write either see the whole image (``attention=False``: ``r_t = [x, x^_t]``,
``write = W(h^dec)``) or attend through a grid of ``N x N`` Gaussian filters
(:func:`filterbank`) whose centre, stride, variance and intensity one linear map of the decoder
state emits (eq. 21)::

    read(x, x^, h)  = gamma [F_Y x F_X^T, F_Y x^ F_X^T]        # two N_r x N_r patches (eq. 27)
    write(h)        = 1/gamma^ F^_Y^T w F^_X,  w = W(h)         # an N_w x N_w patch (eqs. 28-29)

Layer norm enters through the cells: ``norm='cell'`` is the layer-normalization paper's DRAW
(Ba et al., 2016, sec. 6.4: plain gates, ``h_t = s(o) * tanh(LN(c_t))``, the raw ``c_t``
carried), ``'layer'`` the full LN-LSTM, ``'none'`` the baseline; encoder and decoder alike.

Two output maps start at zero, so that an untrained model's bound is exactly ``A B log 2``
nats (543.4 for MNIST): the write map (the canvas stays 0, every pixel probability 1/2) and the
map to ``(mu, log sigma)`` (``q(z_t)`` equals the prior, every KL term 0). Gradients still reach
everything after the first step. Gregor et al. do not state their initialization; this one makes
the start of every run's curve the same known number.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lnexp.cells import LSTMCell

Array = jax.Array

__all__ = ["DRAW", "bernoulli_nll", "filterbank", "gaussian_kl", "negative_bound"]


def filterbank(
    gx: Array, gy: Array, sigma2: Array, delta: Array, N: int, A: int, B: int
) -> tuple[Array, Array]:
    """The horizontal and vertical Gaussian filterbanks of DRAW's attention (Gregor et al.,
    2015, eqs. 19-20 and 25-26).

    For a grid of ``N x N`` filters centred at ``(gx, gy)`` with stride ``delta`` and isotropic
    variance ``sigma2``, all in pixel units (after eqs. 22-24)::

        mu_X^i = gx + (i - N/2 - 0.5) delta,   mu_Y^j = gy + (j - N/2 - 0.5) delta,  i, j = 1..N
        F_X[i, a] = exp(-(a - mu_X^i)^2 / (2 sigma2)) / Z_X   a = 1..A   (eq. 25)
        F_Y[j, b] = exp(-(b - mu_Y^j)^2 / (2 sigma2)) / Z_Y   b = 1..B   (eq. 26)

    where ``Z`` makes each filter (row) sum to 1. Pixel coordinates run from 1, so that the
    paper's ``gx = (A + 1)/2 (g~x + 1)`` puts ``g~x = 0`` at the image's centre. The
    normalization is a softmax over the pixels: exact whatever the variance, a row becomes the
    nearest pixel (split evenly between two equally near ones) as ``sigma2 -> 0`` and uniform
    (``1/A``) as ``sigma2 -> inf``, with no overflow or division by zero at either end.

    Args:
        gx, gy: Grid centres, shape ``(batch,)``.
        sigma2: Variances, ``(batch,)``, positive.
        delta: Strides, ``(batch,)``.
        N: Filters per side of the grid.
        A, B: Image width and height in pixels.

    Returns:
        ``(F_X, F_Y)`` of shapes ``(batch, N, A)`` and ``(batch, N, B)``, in float32 (or the
        inputs' wider float type).

    Example:
        >>> import jax.numpy as jnp
        >>> from lnexp.models.draw import filterbank
        >>> one = jnp.ones((1,))
        >>> Fx, Fy = filterbank(14.5 * one, 14.5 * one, one, 3.0 * one, 2, 28, 28)
        >>> Fx.shape, Fy.shape, bool(jnp.allclose(Fx.sum(-1), 1.0))
        ((1, 2, 28), (1, 2, 28), True)
    """
    dtype = jnp.promote_types(jnp.result_type(gx, gy, sigma2, delta), jnp.float32)
    col = lambda v: jnp.reshape(jnp.asarray(v, dtype), (-1, 1))
    offsets = jnp.arange(1, N + 1, dtype=dtype) - N / 2 - 0.5  # i - N/2 - 0.5, i = 1..N
    mu_x = col(gx) + offsets * col(delta)  # (batch, N)
    mu_y = col(gy) + offsets * col(delta)
    var = col(sigma2)[..., None]  # (batch, 1, 1)

    def bank(mu: Array, size: int) -> Array:
        pixels = jnp.arange(1, size + 1, dtype=dtype)  # a = 1..A
        return jax.nn.softmax(-jnp.square(pixels - mu[..., None]) / (2 * var), axis=-1)

    return bank(mu_x, A), bank(mu_y, B)


INITIAL_SPAN = 0.5
"""The initial grid spans this fraction of the image (``delta~ = 0.5``), its filters' standard
deviation half the stride."""


class _Attention(nnx.Module):
    """The filterbank parameters of one glimpse from the decoder state (Gregor et al., eq. 21):
    ``(g~x, g~y, log sigma^2, log delta~, log gamma) = W h + b``, then eqs. 22-24.

    The bias starts where the grid is centred (``g~ = 0``), spans the central half of the image
    (``delta~ = 1/2``) with filters whose standard deviation is half the stride, and
    ``gamma = 1``. With a zero bias (``delta~ = 1``, ``sigma = 1``) a 2 x 2 read grid sits on
    the corner pixels, always 0 in MNIST, where neither the read nor its gradient sees the digit.
    """

    def __init__(self, hidden: int, N: int, A: int, B: int, *, rngs: nnx.Rngs):
        self.N, self.A, self.B = N, A, B
        stride = (max(A, B) - 1) / max(N - 1, 1) * INITIAL_SPAN
        bias = jnp.array([0.0, 0.0, 2 * math.log(stride / 2), math.log(INITIAL_SPAN), 0.0])
        self.params = nnx.Linear(  # float32: the filters' geometry.
            hidden, 5, bias_init=lambda *_: bias, rngs=rngs
        )

    def __call__(self, h: Array) -> tuple[Array, Array, Array]:
        """``(F_X, F_Y, gamma)`` for the batch of decoder states ``h``."""
        gx_, gy_, log_sigma2, log_delta_, log_gamma = jnp.split(
            self.params(h.astype(jnp.float32)), 5, axis=-1
        )
        N, A, B = self.N, self.A, self.B
        gx = (A + 1) / 2 * (gx_ + 1)  # eq. 22
        gy = (B + 1) / 2 * (gy_ + 1)  # eq. 23
        delta = (max(A, B) - 1) / max(N - 1, 1) * jnp.exp(log_delta_)  # eq. 24 (N = 1: unused)
        Fx, Fy = filterbank(gx, gy, jnp.exp(log_sigma2), delta, N, A, B)
        return Fx, Fy, jnp.exp(log_gamma)


class DRAW(nnx.Module):
    """DRAW with or without attention, its encoder and decoder :class:`lnexp.cells.LSTMCell`.

    See the module docstring for the equations.

    Args:
        image_shape: ``(B, A)``: height and width of the images (flattened row by row).
        glimpses: ``T``, the number of drawing steps.
        hidden_size: Units of each LSTM.
        latent_size: ``Z``, the size of each ``z_t``.
        attention: Read and write through Gaussian filterbanks (``False``: the whole image).
        read_size: ``N`` of the read grid (2 on MNIST).
        write_size: ``N`` of the write grid (5 on MNIST).
        norm: The cells' normalization: ``'none'``, ``'cell'`` (LN on ``c_t`` only, the
            paper's DRAW), ``'layer'`` or another of :meth:`LSTMCell.accepted_norms`.
        epsilon: The normalizers' epsilon.
        dtype: The computation dtype of the cells and the linear maps (e.g. bfloat16); the
            filterbanks, the canvas and the bound are float32 whatever it is.
        rngs: Random streams.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from lnexp.models.draw import DRAW, negative_bound
        >>> model = DRAW(glimpses=4, hidden_size=16, latent_size=3, norm="cell",
        ...              rngs=nnx.Rngs(0))
        >>> x = jnp.zeros((2, 784))
        >>> noise = jax.random.normal(jax.random.key(0), (4, 2, 3))
        >>> bound, recon, kl = negative_bound(model, x, noise)
        >>> [round(float(b), 1) for b in bound]  # untrained: 784 log 2 nats
        [543.4, 543.4]
    """

    def __init__(
        self,
        *,
        image_shape: tuple[int, int] = (28, 28),
        glimpses: int = 64,
        hidden_size: int = 256,
        latent_size: int = 100,
        attention: bool = True,
        read_size: int = 2,
        write_size: int = 5,
        norm: str = "cell",
        epsilon: float = 1e-5,
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        for name, value in (("glimpses", glimpses), ("hidden_size", hidden_size),
                            ("latent_size", latent_size), ("read_size", read_size),
                            ("write_size", write_size)):  # fmt: skip
            if value < 1:
                raise ValueError(f"{name}={value}: must be at least 1.")
        B, A = image_shape
        self.image_shape = (B, A)
        self.glimpses, self.latent_size, self.attention = glimpses, latent_size, attention
        self.read_size, self.write_size = read_size, write_size
        H = hidden_size
        read_features = 2 * read_size**2 if attention else 2 * A * B
        write_features = write_size**2 if attention else A * B
        cell = dict(norm=norm, epsilon=epsilon, dtype=dtype, rngs=rngs)
        self.encoder = LSTMCell(read_features + H, H, **cell)
        self.decoder = LSTMCell(latent_size, H, **cell)
        zeros = nnx.initializers.zeros_init()
        linear = dict(dtype=dtype, kernel_init=zeros, rngs=rngs)
        self.latent = nnx.Linear(H, 2 * latent_size, **linear)  # (mu, log sigma)
        self.write_patch = nnx.Linear(H, write_features, **linear)
        if attention:
            self.read_attention = _Attention(H, read_size, A, B, rngs=rngs)
            self.write_attention = _Attention(H, write_size, A, B, rngs=rngs)

    # ----------------------------------------------------------------------------------------
    # Read and write.

    def read(self, x: Array, x_hat: Array, h_dec: Array) -> Array:
        """``r_t``: ``(batch, 2 N^2)`` with attention, ``(batch, 2 A B)`` without."""
        if not self.attention:
            return jnp.concatenate([x, x_hat], axis=-1)
        Fx, Fy, gamma = self.read_attention(h_dec)
        images = jnp.stack([x, x_hat], axis=1).reshape(-1, 2, *self.image_shape)
        patches = jnp.einsum("bnh,bchw,bmw->bcnm", Fy, images, Fx)  # F_Y x F_X^T
        return gamma * patches.reshape(len(x), -1)

    def write(self, h_dec: Array) -> Array:
        """The canvas increment, ``(batch, A B)`` in float32."""
        w = self.write_patch(h_dec).astype(jnp.float32)
        if not self.attention:
            return w
        N = self.write_size
        Fx, Fy, gamma = self.write_attention(h_dec)
        patch = jnp.einsum("bnh,bnm,bmw->bhw", Fy, w.reshape(-1, N, N), Fx)  # F_Y^T w F_X
        return (patch / gamma[:, :, None]).reshape(len(h_dec), -1)

    # ----------------------------------------------------------------------------------------
    # The glimpses.

    def __call__(self, x: Array, noise: Array, *, canvases: bool = False):
        """Encodes and redraws ``x`` over the glimpses.

        Args:
            x: ``(batch, A B)`` images in ``[0, 1]`` (binary for the bound to be a likelihood).
            noise: ``eps``, ``(T, batch, Z)`` standard normal draws.
            canvases: Also return ``c_t`` after every glimpse.

        Returns:
            ``(c_T, kl)``: the final canvas's logits ``(batch, A B)`` and the KL term of each
            glimpse ``(T, batch)``, both float32; with ``canvases=True`` also ``(T, batch, A B)``.
        """
        if noise.shape[0] != self.glimpses or noise.shape[-1] != self.latent_size:
            raise ValueError(
                f"noise of shape {noise.shape}: expected (glimpses={self.glimpses}, batch, "
                f"latent_size={self.latent_size})."
            )
        x = x.astype(jnp.float32)
        batch = len(x)
        graphdef, state = nnx.split(self)

        def glimpse(carry, eps):
            model = nnx.merge(graphdef, state)
            canvas, enc, dec = carry
            h_dec = dec[1]
            r = model.read(x, x - jax.nn.sigmoid(canvas), h_dec.astype(jnp.float32))
            enc, h_enc = model.encoder(enc, jnp.concatenate([r.astype(h_dec.dtype), h_dec], -1))
            mu, log_sigma = jnp.split(model.latent(h_enc).astype(jnp.float32), 2, axis=-1)
            z = mu + jnp.exp(log_sigma) * eps
            dec, h_dec = model.decoder(dec, z.astype(h_enc.dtype))
            canvas = canvas + model.write(h_dec)
            kl = gaussian_kl(mu, log_sigma)
            return (canvas, enc, dec), (kl, canvas if canvases else None)

        carry = (
            jnp.zeros((batch, x.shape[-1]), jnp.float32),
            self.encoder.initialize_carry((batch, self.encoder.in_features)),
            self.decoder.initialize_carry((batch, self.latent_size)),
        )
        (canvas, _, _), (kl, steps) = jax.lax.scan(glimpse, carry, noise.astype(jnp.float32))
        return (canvas, kl, steps) if canvases else (canvas, kl)

    def generate(self, noise: Array) -> Array:
        """Draws from the prior: ``z_t = eps_t``, the decoder alone.

        Args:
            noise: ``(T, batch, Z)`` standard normal draws.

        Returns:
            The canvases' pixel probabilities ``s(c_t)`` after every glimpse, ``(T, batch, A B)``.
        """
        graphdef, state = nnx.split(self)
        batch = noise.shape[1]

        def glimpse(carry, z):
            model = nnx.merge(graphdef, state)
            canvas, dec = carry
            dec, h_dec = model.decoder(dec, z.astype(dec[1].dtype))
            canvas = canvas + model.write(h_dec)
            return (canvas, dec), jax.nn.sigmoid(canvas)

        B, A = self.image_shape
        carry = (
            jnp.zeros((batch, A * B), jnp.float32),
            self.decoder.initialize_carry((batch, self.latent_size)),
        )
        return jax.lax.scan(glimpse, carry, noise.astype(jnp.float32))[1]


def gaussian_kl(mu: Array, log_sigma: Array) -> Array:
    """``KL(N(mu, sigma^2) || N(0, I))`` over the last axis, in nats (Gregor et al., eq. 11
    with the constant ``-1/2`` per dimension)::

        KL = 1/2 sum_j (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1)

    Example:
        >>> import jax.numpy as jnp
        >>> from lnexp.models.draw import gaussian_kl
        >>> float(gaussian_kl(jnp.zeros(3), jnp.zeros(3)))  # q = p
        0.0
        >>> float(gaussian_kl(jnp.ones(2), jnp.zeros(2)))  # mu = 1 in 2 dimensions
        1.0
    """
    return 0.5 * jnp.sum(jnp.square(mu) + jnp.exp(2 * log_sigma) - 2 * log_sigma - 1, axis=-1)


def bernoulli_nll(logits: Array, labels: Array) -> Array:
    """The negative log-likelihood of ``labels`` (in ``{0, 1}``) under ``Bernoulli(s(logits))``,
    elementwise, in nats: ``optax.sigmoid_binary_cross_entropy`` by the same operations, so that
    this module needs only JAX::

        BCE = -x log s(c) - (1 - x) log(1 - s(c)),  log(1 - s(c)) = log s(-c)

    Example:
        >>> import jax.numpy as jnp
        >>> from lnexp.models.draw import bernoulli_nll
        >>> round(float(bernoulli_nll(jnp.float32(0.0), jnp.float32(1.0))), 4)  # log 2
        0.6931
    """
    labels = labels.astype(logits.dtype)
    log_p, log_not_p = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
    return -labels * log_p - (1.0 - labels) * log_not_p


def negative_bound(model: DRAW, x: Array, noise: Array) -> tuple[Array, Array, Array]:
    """The negative variational bound of each image in nats, and its two parts.

    Args:
        model: A :class:`DRAW`.
        x: ``(batch, A B)`` binary images.
        noise: ``(T, batch, Z)`` standard normal draws (the reparameterized ``z_t``).

    Returns:
        ``(bound, reconstruction, kl)``, each ``(batch,)`` float32: ``bound = reconstruction +
        kl``, the Bernoulli negative log-likelihood of ``x`` under ``s(c_T)`` and the sum of
        the glimpses' KL terms.
    """
    canvas, kl = model(x, noise)
    recon = jnp.sum(bernoulli_nll(canvas, x.astype(jnp.float32)), -1)
    kl = jnp.sum(kl, axis=0)
    return recon + kl, recon, kl
