"""The data sets, as NumPy arrays or sentence streams, fetched and checked on first use: MNIST
(:mod:`~lnexp.data.mnist`), the book corpus (:mod:`~lnexp.data.text`,
:mod:`~lnexp.data.gutenberg`), SentEval's tasks (:mod:`~lnexp.data.senteval`); the cache and
downloads (``python -m lnexp.data.download``)."""
