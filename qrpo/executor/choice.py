"""Which executor runs a step's shards: `executor_for(cfg, step)`."""

from __future__ import annotations

from qrpo.config.sections import ExecutorConfig
from qrpo.executor.base import Executor, LocalExecutor


def executor_for(cfg: ExecutorConfig | None, step: str) -> Executor:
    """The executor of one step: Ray when `executor=ray` and the step is in `executor.steps`, else local."""
    if cfg is not None and cfg.runs(step) == "ray":
        from qrpo.executor.ray import RayExecutor

        return RayExecutor(cfg)
    return LocalExecutor()
