"""The one exception type for bad input: a message that says what is wrong, where, and how to fix it.

Entry points print `str(error)` as one line and exit non-zero; anything else is a bug and keeps its
traceback.
"""


class InputError(ValueError):
    """Bad configuration, data or paths supplied by the user."""
