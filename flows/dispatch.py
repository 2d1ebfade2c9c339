"""`dispatch.pool` / `dispatch.steps`: which heavy steps run as runs of a work pool's step deployment.

Checked when a config is validated (`check_dispatch`, before any work) and read by the pipeline
(`flows.step.step_runners`). Prefect is imported only when a pool is set, so that checking a config stays
quick (the step flow itself is in flows/step.py).
"""

from __future__ import annotations

from qrpo.config.sections import check_type
from qrpo.errors import InputError

# The steps that can run on another pool: those that load a model or a reward model.
DISPATCHABLE = ("sample", "score", "ref_logps", "train", "eval_logps")
DEPLOYMENT = "qrpo-step/qrpo-step-{pool}"  # dispatch.pool=gpu: qrpo-step/qrpo-step-gpu (prefect.yaml)
RESULT_ARTIFACT = "qrpo-step-result"  # the table artifact (one row: step, key, cached) each step run leaves


def dispatch_section(config: dict) -> tuple[str | None, list[str]]:
    """(dispatch.pool, dispatch.steps), type-checked: one InputError naming the key."""
    section = config.get("dispatch") or {}
    if not isinstance(section, dict):
        raise InputError(f"dispatch must be a mapping (pool: ..., steps: [...]); got {section!r}")
    unknown = sorted(set(section) - {"pool", "steps"})
    if unknown:
        raise InputError(f"unknown key(s) {', '.join('dispatch.' + k for k in unknown)}; known: pool, steps")
    pool, steps = section.get("pool"), section.get("steps", list(DISPATCHABLE))
    check_type("dispatch.pool", pool, str | None)
    check_type("dispatch.steps", steps, list[str])
    if pool is not None and not pool.strip():
        raise InputError("dispatch.pool is empty; name a work pool (dispatch.pool=gpu) or leave it null to run every step here")
    for name in steps:
        if name not in DISPATCHABLE:
            raise InputError(f"dispatch.steps: {name!r} is not one of {', '.join(DISPATCHABLE)} (the steps that can run on another pool)")
    return pool, list(steps)


def check_dispatch(config: dict) -> None:
    """dispatch.pool set: a Prefect server must be configured and know the step deployment of that pool
    (its workers pick the steps up); checked before any work, so a bad setup is one line, not a hung run."""
    pool, _ = dispatch_section(config)
    if pool is None:
        return
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    api, name = PREFECT_API_URL.value(), DEPLOYMENT.format(pool=pool)
    if not api:
        raise InputError(f"dispatch.pool={pool} needs a Prefect server whose workers run the steps, but PREFECT_API_URL is not set "
                         "(a run without it uses a temporary local API that no worker sees); set PREFECT_API_URL=http://<host>:4200/api, "
                         "or leave dispatch.pool=null to run every step in this process")
    try:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(name)
    except ObjectNotFound:
        raise InputError(f"dispatch.pool={pool}: the Prefect server at {api} has no deployment {name}; register it from the "
                         f"repository root with `prefect --no-prompt deploy --name {name.split('/')[1]}` (prefect.yaml)") from None
    except Exception as err:  # connection refused, timeouts, HTTP errors
        raise InputError(f"dispatch.pool={pool}: cannot read deployment {name} from the Prefect server at {api}: "
                         f"{' '.join(str(err).split())[:200]}") from None
    if deployment.work_pool_name != pool:
        raise InputError(f"dispatch.pool={pool}: deployment {name} is on work pool {deployment.work_pool_name!r}, not {pool!r}; "
                         "fix its work_pool in prefect.yaml and deploy it again")
