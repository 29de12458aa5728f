"""The sequential MNIST study: layer-normalized recurrent cells on pixel sequences.

* :mod:`~lnexp.studies.seqmnist.task`: the recurrent classifier's task
  (``config.experiment='seqmnist'``).

Config: ``configs/seqmnist.py``; page: ``docs/studies/seqmnist.md``.
"""
