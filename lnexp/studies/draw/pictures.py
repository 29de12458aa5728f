"""Pictures of a trained DRAW run: samples from the prior, and the canvas over the glimpses for a
few test digits, as PNG files in the run directory.

Command line::

    python -m lnexp.studies.draw.pictures --workdir runs/draw/model.norm=cell/seed=0

writes ``WORKDIR/pictures/samples.png`` (a grid of the final canvases' pixel probabilities
``s(c_T)`` of ``z_t ~ N(0, I)``) and ``WORKDIR/pictures/canvas.png`` (one row per test digit: the
canvas ``s(c_t)`` after evenly spaced glimpses, then the binary digit itself). The same seed gives
the same pictures. The test digits are read with the run's own data settings (``--data_dir``
points elsewhere when the MNIST files moved).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from flax import nnx

from lnexp import cli, flag_kinds
from lnexp.errors import UserError, command_line
from lnexp.models.draw import DRAW
from lnexp.studies.draw import task as experiment
from lnexp.training.metric_writers import quiet_library_logs
from lnexp.training.run_dir import RunDir


def tile(images: np.ndarray, columns: int, pad: int = 1) -> np.ndarray:
    """``(n, h, w)`` images in a grid of ``columns`` columns, ``pad`` white pixels between."""
    n, h, w = images.shape
    rows = -(-n // columns)
    grid = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[pad + r * (h + pad) :][:h, pad + c * (w + pad) :][:, :w] = image
    return grid


def load_model(workdir: Path, step: int | None = None) -> tuple[ml_collections.ConfigDict, DRAW]:
    """The run's config and its trained model (newest readable checkpoint, or ``step``)."""
    run = RunDir(workdir)
    saved = run.read_config()
    if saved is None:
        raise UserError(
            f"{run.config_path} is missing: {workdir} is not a run directory. Pass the --workdir "
            "of a training run of configs/draw.py."
        )
    config = ml_collections.ConfigDict(saved)
    if config.experiment != "draw":
        raise UserError(f"{workdir} is a {config.experiment!r} run, not a DRAW run.")
    _, model = run.trained_model(experiment.build_model(config, nnx.Rngs(0)), step)
    return config, model


def write_pictures(
    workdir: str | Path,
    *,
    samples: int = 64,
    digits: int = 8,
    glimpse_columns: int = 8,
    seed: int = 0,
    step: int | None = None,
    data_dir: str | None = None,
) -> dict[str, Path]:
    """Writes ``samples.png`` and ``canvas.png`` into ``WORKDIR/pictures``; returns their paths.

    Raises:
        UserError: not a DRAW run, no readable checkpoint, the test digits cannot be read, or a
            count below 1.
    """
    if min(samples, digits, glimpse_columns) < 1:
        raise UserError("--samples, --digits and --glimpse_columns must each be at least 1.")
    workdir = Path(workdir).resolve()  # orbax needs absolute paths.
    config, model = load_model(workdir, step)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = model.image_shape
    out = workdir / "pictures"
    out.mkdir(exist_ok=True)
    T = model.glimpses
    key = jax.random.key(seed)

    noise = jax.random.normal(key, (T, samples, model.latent_size))
    drawn = np.asarray(nnx.jit(DRAW.generate)(model, noise))[-1].reshape(samples, *side)
    paths = {"samples": out / "samples.png"}
    plt.imsave(paths["samples"], tile(drawn, int(np.ceil(np.sqrt(samples)))), cmap="gray",
               vmin=0.0, vmax=1.0)  # fmt: skip

    if data_dir is not None:
        config.data.dir = data_dir
    test = experiment.load_data(config)["test"]
    x = jnp.asarray(test["image"][:digits], jnp.float32) / 255
    noise = experiment.eval_noise(model, jnp.arange(len(x)))
    canvases = nnx.jit(lambda m, x, n: m(x, n, canvases=True)[2])(model, x, noise)
    shown = np.unique(np.linspace(0, T - 1, min(glimpse_columns, T)).round().astype(int))
    steps = np.asarray(jax.nn.sigmoid(canvases))[shown]  # (columns, digits, pixels)
    rows = np.concatenate([steps, np.asarray(x)[None]], axis=0).transpose(1, 0, 2)
    columns = len(shown) + 1
    paths["canvas"] = out / "canvas.png"
    plt.imsave(paths["canvas"], tile(rows.reshape(-1, *side), columns), cmap="gray",
               vmin=0.0, vmax=1.0)  # fmt: skip
    return paths


def define_flags() -> None:
    """The command line's flags (defined only when the module runs as a program)."""
    flag_kinds.path("workdir", None, "A DRAW run directory.", must_exist=True)
    flag_kinds.count("samples", 64, "Samples from the prior.", high=4096)
    flag_kinds.count("digits", 8, "Test digits redrawn.", high=10_000)
    flag_kinds.count("glimpse_columns", 8, "Canvases shown per digit.", high=1024)
    flag_kinds.count("seed", 0, "The prior samples' seed.", low=0)
    flag_kinds.count("checkpoint", None, "Step (default: newest).", low=0)
    flag_kinds.path("data_dir", None, "MNIST's IDX files, if moved.", must_exist=True)
    flags.mark_flag_as_required("workdir")


@command_line
def main(argv: Sequence[str]) -> int:
    del argv
    quiet_library_logs()
    FLAGS = flags.FLAGS
    paths = write_pictures(
        Path(FLAGS.workdir),
        samples=FLAGS.samples,
        digits=FLAGS.digits,
        glimpse_columns=FLAGS.glimpse_columns,
        seed=FLAGS.seed,
        step=FLAGS.checkpoint,
        data_dir=FLAGS.data_dir,
    )
    for path in paths.values():
        print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
