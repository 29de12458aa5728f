"""The one exception type for mistakes a user can fix.

Anything that goes wrong because of what the user gave us (a config value, a data directory, a
batch size that does not fit the devices, a diverged run) raises :class:`UserError` with a
one-paragraph message naming the problem and the fix. The command line prints that message and
exits non-zero without a traceback; library callers can catch it like any ``ValueError``.
"""


class UserError(ValueError):
    """A problem with the user's input, with a message that says how to fix it."""
