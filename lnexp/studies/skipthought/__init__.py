"""The skip-thought study: sentence encoders trained on books, scored on SentEval (paper Table 3).

* :mod:`~lnexp.studies.skipthought.task`: the skip-thought model's task
  (``config.experiment='skipthought'``) and the paper's Table 3;
* :mod:`~lnexp.studies.skipthought.encode`: a trained run's encoder,
  ``lnexp.encode(workdir, sentences)`` (``python -m lnexp.studies.skipthought.encode``);
* :mod:`~lnexp.studies.skipthought.evaluate`: the evaluation protocol for any encoder (Kiros et
  al., 2015; ``python -m lnexp.studies.skipthought.evaluate``);
* :mod:`~lnexp.studies.skipthought.report`: scores along training beside the paper's Table 3
  (``scripts/compare_senteval.py``);
* :mod:`~lnexp.studies.skipthought.bench`: the bench section ``skipthought``.

The tasks' data is :mod:`lnexp.data.senteval`. Config: ``configs/skipthought.py``; page:
``docs/studies/skipthoughts.md``.
"""
