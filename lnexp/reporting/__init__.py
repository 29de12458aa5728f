"""The reporting side: grids of run directories -> tables, figures and the paper's claims.

* :mod:`~lnexp.reporting.grid`: a grid's cells (``--grid`` axes x seeds) and training them;
* :mod:`~lnexp.reporting.runs`: reading run directories as runs, and exporting them;
* :mod:`~lnexp.reporting.summary`: the table per cell vs the paper, and ``report`` (table and
  figure);
* :mod:`~lnexp.reporting.figure`: the figure, drawn like the paper's Figure 6;
* :mod:`~lnexp.reporting.claims`: the paper's Figure 6 claims as verdicts;
* :mod:`~lnexp.reporting.tuning`: a hyperparameter per configuration chosen on validation.

``scripts/compare.py`` is their command line; they read what :mod:`lnexp.training` wrote.
"""
