"""Speed benchmarks (``scripts/bench.py``): named sections, one JSON file, one markdown report.

Each section is a module that fulfils :class:`lnexp.bench.section.Section` (its own
``Settings``, ``run(settings) -> {'rows', 'goals', 'setup', ...}``, the ``COLUMNS`` of its
markdown table) and is registered in :mod:`lnexp.bench.sections`:

* ``pimnist`` (:mod:`lnexp.studies.pimnist.bench`): PI-MNIST training examples/s, norm
  none/layer/batch at batch 128 and 4, lnexp against PyTorch (eager, fused Adam, ``torch.compile``)
  and against the machine's measured matmul rate and memory bandwidth;
* ``recurrent`` (:mod:`lnexp.bench.recurrent`): an LN-GRU / LN-LSTM layer's training step
  against Flax's and PyTorch's GRUs;
* ``skipthought`` (:mod:`lnexp.studies.skipthought.bench`): skip-thought training sentences/s;
* ``seeds`` (:mod:`lnexp.studies.pimnist.bench_seeds`): several seeds trained in one
  vectorized program against one after the other;
* ``fig6`` (:mod:`lnexp.studies.pimnist.bench_grid`): the Figure 6 grid's wall time against the
  machine's limits (needs the MNIST files);
* ``transformer`` (:mod:`lnexp.studies.transformer.bench`): the character-level Transformer LM's
  training tokens/s against the same model in PyTorch (eager and ``torch.compile``), the machine's
  matmul limit, and lnexp rows with RMS norm and no normalization.

PyTorch is an optional extra, not in ``requirements.txt`` (``pip install torch==2.13.0``, the
CPU build); without it its rows are marked skipped.
"""
