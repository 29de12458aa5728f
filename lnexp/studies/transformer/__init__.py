"""The Transformer study: a character-level language model, post- vs pre-LN, warmup, RMSNorm.

* :mod:`~lnexp.studies.transformer.task`: the language model's task
  (``config.experiment='transformer'``);
* :mod:`~lnexp.studies.transformer.report`: the warmup and LN/RMS/none reports
  (``python -m lnexp.studies.transformer.report``);
* :mod:`~lnexp.studies.transformer.gradients`: per-layer gradient norms at initialization, post-
  vs pre-LN (``python -m lnexp.studies.transformer.gradients``);
* :mod:`~lnexp.studies.transformer.sample`: text from a trained run
  (``python -m lnexp.studies.transformer.sample``);
* :mod:`~lnexp.studies.transformer.bench`: the bench section ``transformer``.

Config: ``configs/transformer.py``; page: ``docs/studies/transformer.md``.
"""
