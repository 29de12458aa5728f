"""The registered benchmark sections and the settings of all of them (:class:`BenchConfig`,
whose fields are ``scripts/bench.py``'s flags).

Each section is a module that fulfils :class:`lnexp.bench.section.Section`. A new section is
its module, its entry in :data:`SECTIONS` and its ``Settings`` among :class:`BenchConfig`'s bases.
"""

from __future__ import annotations

import dataclasses

from lnexp.bench import norms, recurrent
from lnexp.bench.section import Section
from lnexp.studies.draw import bench as draw
from lnexp.studies.pimnist import bench as pimnist
from lnexp.studies.pimnist import bench_grid as fig6
from lnexp.studies.pimnist import bench_seeds as seeds
from lnexp.studies.skipthought import bench as skipthought
from lnexp.studies.transformer import bench as transformer

SECTIONS: dict[str, Section] = {
    "norms": norms,
    "pimnist": pimnist,
    "recurrent": recurrent,
    "skipthought": skipthought,
    "transformer": transformer,
    "seeds": seeds,
    "fig6": fig6,
    "draw": draw,
}
"""Section name -> module, in the order ``--sections=all`` runs them."""


@dataclasses.dataclass(frozen=True)
class BenchConfig(
    # Fields come in the reverse order of the bases (the shared settings first); a section's
    # Settings before the Settings it extends (seeds' extends pimnist's).
    draw.Settings,
    fig6.Settings,
    transformer.Settings,
    skipthought.Settings,
    seeds.Settings,
    pimnist.Settings,
    recurrent.Settings,
    norms.Settings,
):
    """Every section's settings in one frozen dataclass (each section reads its own); the fields,
    their defaults and their help are the sections' (``scripts/bench.py`` makes each a flag)."""
