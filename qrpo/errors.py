"""The one exception type for bad input: a message that says what is wrong, where, and how to fix it.

Entry points print `str(error)` as one line and exit non-zero; anything else is a bug and keeps its
traceback.
"""


class InputError(ValueError):
    """Bad configuration, data or paths supplied by the user."""


class UnknownKeyError(InputError):
    """Keys a section does not have, e.g. Hydra's `+algorithm.bta=0.1`: "unknown key algorithm.bta;
    valid keys: beta, transform, ..." (the valid keys of that section, in the order its class takes them)."""

    def __init__(self, section: str, unknown, valid):
        unknown, valid = list(unknown), list(valid)
        keys = ", ".join(f"{section}.{key}" for key in unknown)
        super().__init__(f"unknown key{'s' if len(unknown) > 1 else ''} {keys}; valid keys: {', '.join(valid) or '(none)'}")
