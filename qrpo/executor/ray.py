"""`executor=ray`: the missing shards of a step as Ray tasks (see the package docstring for why Ray directly).

    qrpo-pipeline executor=ray executor.address=ray://head:10001 executor.gpus_per_shard=1

`RayExecutor.map` connects this process to the cluster once (`connect`: `executor.address`, else
$RAY_ADDRESS, else a local Ray started here), puts the shard function into Ray's object store once, and
submits one task per missing shard with `num_cpus=executor.cpus_per_shard`, `num_gpus=executor.gpus_per_shard`
and `max_retries=executor.max_retries` (Ray redoes a task whose worker process or node died; an error
raised by the shard function itself is not retried: it fails the step, as it would locally). Worker
processes are reused (`max_calls=0`, also for GPU tasks), so the model a worker loaded serves its next
shards (`qrpo.executor.cache`). Each task is named `<step>:<first row>-<last row>`, so Ray's dashboard and
state API (`ray list tasks`) show which node and worker process computed which shard.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from typing import Any, Callable, Sequence

from qrpo.config.sections import ExecutorConfig
from qrpo.errors import InputError
from qrpo.executor.base import Executor, placement

_remote = None


def connect(cfg: ExecutorConfig):
    """The `ray` module, connected to the cluster of `executor.address` (once per process)."""
    try:
        import ray
    except ImportError:
        raise InputError("executor=ray needs Ray: pip install 'qrpo-platform[ray]' (or pip install 'ray[default]')") from None
    if not ray.is_initialized():
        address = cfg.address or os.environ.get("RAY_ADDRESS") or None
        ray.init(address=address, namespace=cfg.namespace, runtime_env=dict(cfg.runtime_env) or None,
                 log_to_driver=True, configure_logging=False)
    return ray


def _run_shard(fn: Callable[[Any], Any], item: Any, keep_s: float) -> dict:
    """The body of every shard task, in a Ray worker process."""
    import ray

    from qrpo.executor import cache

    cache.configure(keep_s)
    fn(item)
    return placement(_label(item), ray.get_runtime_context().get_node_id())


def _label(item: Any) -> Any:
    return [item.start, item.stop] if isinstance(item, range) else item


class RayExecutor(Executor):
    kind = "ray"

    def __init__(self, cfg: ExecutorConfig):
        self.cfg = cfg

    def map(self, fn, items: Sequence[Any], name: str) -> list[dict]:
        global _remote
        ray = connect(self.cfg)
        if _remote is None:
            _remote = ray.remote(max_calls=0)(_run_shard)  # worker processes reused, GPU tasks too (Ray's default there is 1)
        cfg = self.cfg
        options = {"num_cpus": cfg.cpus_per_shard, "num_gpus": cfg.gpus_per_shard, "max_retries": cfg.max_retries,
                   "retry_exceptions": False}
        shared = ray.put(fn)  # once, not once per task
        pending = {}
        for item in items:
            label = _label(item)
            title = f"{name}:{label[0]}-{label[1]}" if isinstance(label, list) else f"{name}:{label}"
            pending[_remote.options(name=title, **options).remote(shared, item, cfg.keep_model_s)] = title
        records, start = [], time.perf_counter()
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                title = pending.pop(ref)
                try:
                    records.append(ray.get(ref))
                except ray.exceptions.RayError as err:
                    for other in pending:
                        ray.cancel(other)
                    raise RuntimeError(f"shard {title} failed on the Ray cluster: {err}") from None
        nodes = Counter(r["node"] for r in records)
        print(f"{name}: {len(records)} shard(s) on Ray in {time.perf_counter() - start:.1f} s, on {len(nodes)} node(s) "
              f"({', '.join(f'{n[:8]}: {c}' for n, c in nodes.items())})", file=sys.stderr)
        return records
