"""The permutation-invariant MNIST study: the paper's Figure 6 (batch size 128 and 4).

* :mod:`~lnexp.studies.pimnist.task`: the MLP's task (``config.experiment='pimnist'``) and the
  paper's Figure 6 curves;
* :mod:`~lnexp.studies.pimnist.claims`: the paper's Figure 6 claims as verdicts
  (``scripts/compare.py --claims``);
* :mod:`~lnexp.studies.pimnist.ablation`: the protocol's ablation, each choice alone against it
  (``python -m lnexp.studies.pimnist.ablation``);
* :mod:`~lnexp.studies.pimnist.bench`, :mod:`~lnexp.studies.pimnist.bench_seeds`,
  :mod:`~lnexp.studies.pimnist.bench_grid`: the bench sections ``pimnist``, ``seeds`` and
  ``fig6``.

Config: ``configs/pimnist.py``; page: ``docs/studies/fig6.md``.
"""
