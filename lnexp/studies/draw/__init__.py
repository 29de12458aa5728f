"""The DRAW study: the paper's Figure 4, DRAW with and without layer normalization.

* :mod:`~lnexp.studies.draw.task`: DRAW's task on binarized MNIST
  (``config.experiment='draw'``) and the paper's Figure 4 curves;
* :mod:`~lnexp.studies.draw.report`: the bounds and speed against the paper's Figure 4
  (``python -m lnexp.studies.draw.report``);
* :mod:`~lnexp.studies.draw.pictures`: a run's samples and canvases as PNG files
  (``python -m lnexp.studies.draw.pictures``);
* :mod:`~lnexp.studies.draw.bench`: the bench section ``draw``.

Config: ``configs/draw.py``; page: ``docs/studies/draw.md``.
"""
