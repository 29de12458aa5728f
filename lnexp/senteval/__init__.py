"""The SentEval side: skip-thought runs as sentence encoders, scored on downstream tasks.

* :mod:`~lnexp.senteval.encode`: a trained run's encoder, ``lnexp.encode(workdir, sentences)``;
* :mod:`~lnexp.senteval.evaluate`: the evaluation protocol for any encoder (Kiros et al., 2015);
* :mod:`~lnexp.senteval.report`: scores along training beside the paper's Table 3
  (``scripts/compare_senteval.py``).

The tasks' data is :mod:`lnexp.data.senteval`.
"""
