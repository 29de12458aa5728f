"""The reporting side: grids of run directories -> tables and figures beside the paper's curves.

* :mod:`~lnexp.reporting.grid`: a grid's cells (``--grid`` axes x seeds) and training them;
* :mod:`~lnexp.reporting.runs`: reading run directories as runs, and exporting them;
* :mod:`~lnexp.reporting.summary`: the table per cell vs the paper, and ``report`` (table and
  figure);
* :mod:`~lnexp.reporting.figure`: the figure, drawn like the paper's Figure 6;
* :mod:`~lnexp.reporting.tuning`: a hyperparameter per configuration chosen on validation.

``scripts/compare.py`` is their command line; they read what :mod:`lnexp.training` wrote. What
is specific to one study (e.g. the Figure 6 claims, :mod:`lnexp.studies.pimnist.claims`) lives in
its folder of :mod:`lnexp.studies`.
"""
