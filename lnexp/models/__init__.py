"""The paper's models (the MLP, the recurrent classifier, the skip-thought model), built from the
layers of :mod:`lnexp.norms` and :mod:`lnexp.cells`, and the initializers configs name."""
