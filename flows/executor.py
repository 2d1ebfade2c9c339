"""`executor=local|ray` in the flow: the heavy steps get the run's executor section.

The pipeline's heavy steps (`flows.step.step_runners`: the in-process tasks, or their `dispatch.pool`
twins) are called with `executor=sections.executor` bound, so every call site stays as it was. The
tasks hand it to the library (`qrpo.executor`), which runs the shards of sample, score, ref_logps and
eval_logps in the step's process or as Ray tasks; a step dispatched to a work pool rebuilds the same
section from the run's overrides (its type, ExecutorConfig, is one of the typed sections). Prefect's
view is the same either way: one task run per step, "Cached" when its artifact exists.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

from qrpo.config.sections import ExecutorConfig


def with_executor(steps: SimpleNamespace, executor: ExecutorConfig) -> SimpleNamespace:
    """The same step runners, each called with `executor=executor`."""
    return SimpleNamespace(**{name: functools.partial(runner, executor=executor) for name, runner in vars(steps).items()})
