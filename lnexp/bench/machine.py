"""What the machine is and what it can do at best: float32 matmul rate and memory bandwidth.

The limits are measured, not looked up: the best of several runs of

* a float32 matrix product in XLA (and in PyTorch, when installed) at a square size and at the
  PI-MNIST MLP's own shapes; the machine's matmul rate is the fastest of them;
* a STREAM-style triad ``a = a * s + b`` in XLA over arrays of a given size with ``a`` donated,
  so the output reuses ``a``'s buffer; bytes moved = 3 x the array size. A fresh output buffer
  (no donation) is measured beside it: on many CPUs first writes to fresh pages are several
  times slower, which is why the training loop donates its state.

Example:
    >>> from lnexp.bench.machine import measure_bandwidth
    >>> measure_bandwidth(2**16, repeats=2)["bytes_per_s"] > 0
    True
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lnexp.bench.timing import import_torch


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on, including the load when the run started."""
    torch = import_torch()
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "flax": _version("flax"),
        "optax": _version("optax"),
        "torch": torch.__version__ if torch is not None else None,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "jax_devices": [str(d) for d in jax.devices()],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def busy_warnings(machine: dict[str, Any]) -> list[str]:
    """A warning when other processes kept the CPUs busy as the run started."""
    load = machine["load_average"]
    if load is None or load[0] < 0.5:
        return []
    return [
        f"The 1-minute load average was {load[0]:.2f} on {machine['cpu_count']} cores when the "
        "run started: other processes were using the CPUs, so these timings are not "
        "representative (multi-threaded PyTorch suffers most: its threads wait for each other)."
    ]


def _best_seconds(fn, repeats: int) -> float:
    fn()  # Warm up (and compile).
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


_jax_dot = jax.jit(jnp.dot)


def measure_matmul(
    shapes: Sequence[tuple[int, int, int]], repeats: int = 5, torch_threads: int = 0
) -> list[dict[str, Any]]:
    """FLOP/s of ``(m, k) @ (k, n)`` float32 products, in XLA and (if installed) PyTorch."""
    rows = []
    for m, k, n in shapes:
        a = jnp.asarray(np.random.default_rng(0).standard_normal((m, k), np.float32))
        b = jnp.asarray(np.random.default_rng(1).standard_normal((k, n), np.float32))
        seconds = _best_seconds(lambda a=a, b=b: _jax_dot(a, b).block_until_ready(), repeats)
        rows.append({"library": "jax", "shape": [m, k, n], "flops_per_s": 2 * m * k * n / seconds})
    torch = import_torch()
    if torch is not None:
        torch.set_num_threads(torch_threads or os.cpu_count() or 1)
        for m, k, n in shapes:
            a, b = torch.randn(m, k), torch.randn(k, n)
            seconds = _best_seconds(lambda a=a, b=b: a @ b, repeats)
            flops = 2 * m * k * n / seconds
            rows.append({"library": "torch", "shape": [m, k, n], "flops_per_s": flops})
    return rows


def measure_bandwidth(
    num_floats: int, repeats: int = 10, donate: bool = True, steps: int = 10
) -> dict[str, Any]:
    """Bytes/s of the triad ``a = a * s + b`` over float32 arrays of ``num_floats``.

    ``steps`` triads run in one jitted call (a ``fori_loop``), so the call overhead is
    negligible; with ``donate`` the output reuses ``a``'s buffer, else every call writes a
    freshly allocated array.
    """

    def triads(a, b):
        return jax.lax.fori_loop(0, steps, lambda _, a: a * 0.999 + b, a)

    b = jnp.ones(num_floats, jnp.float32)
    state = {"a": jnp.ones(num_floats, jnp.float32)}
    f = jax.jit(triads, donate_argnums=0 if donate else ())

    def call():
        state["a"] = f(state["a"], b).block_until_ready()

    seconds = _best_seconds(call, repeats)
    return {
        "array_mb": num_floats * 4 / 2**20,
        "donated": donate,
        "bytes_per_s": 3 * 4 * num_floats * steps / seconds,
    }


def machine_limits(
    matmul_shapes: Sequence[tuple[int, int, int]],
    bandwidth_floats: Sequence[int],
    torch_threads: int = 0,
) -> dict[str, Any]:
    """The measured matmul rate and memory bandwidth, every measurement, and the best of each.

    The memory bandwidth is STREAM's: the triad over the largest arrays (make them several times
    the last-level cache). The best triad over smaller arrays, which may stay in the cache, is
    returned beside it as ``cache_bandwidth_bytes_per_s``.

    Returns:
        ``{'matmul': rows, 'bandwidth': rows, 'matmul_flops_per_s': best,
        'bandwidth_bytes_per_s': largest arrays, donated, 'cache_bandwidth_bytes_per_s': best
        donated}``.
    """
    matmul = measure_matmul(matmul_shapes, torch_threads=torch_threads)
    bandwidth = [measure_bandwidth(n) for n in sorted(bandwidth_floats)]
    bandwidth.append(measure_bandwidth(max(bandwidth_floats), donate=False))
    donated = [r["bytes_per_s"] for r in bandwidth if r["donated"]]
    return {
        "matmul": matmul,
        "bandwidth": bandwidth,
        "matmul_flops_per_s": max(r["flops_per_s"] for r in matmul),
        "bandwidth_bytes_per_s": donated[-1],
        "cache_bandwidth_bytes_per_s": max(donated),
    }
