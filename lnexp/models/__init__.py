"""Models built from :mod:`lnexp.norms`."""
