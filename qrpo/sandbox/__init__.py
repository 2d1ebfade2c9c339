"""A sandbox for model-written code: each test case in its own bubblewrap-isolated process, verdicts in the parent.

`runner.py` is the parent side (limits, bubblewrap, the bounded pool, comparing values), `harness.py`
the child side (runs one case, prints the returned value), `seccomp.py` the no-fork filter, and
`__main__.py` the command line: `python -m qrpo.sandbox --program FILE --entry-point NAME --tests FILE`.
"""

from qrpo.sandbox.runner import (
    CaseResult,
    ProgramResult,
    Sandbox,
    SandboxLimits,
    TestCase,
    parse_case,
    parse_entry_point,
    same_value,
)

__all__ = ["CaseResult", "ProgramResult", "Sandbox", "SandboxLimits", "TestCase", "parse_case", "parse_entry_point", "same_value"]
