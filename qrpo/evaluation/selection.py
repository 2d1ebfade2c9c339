"""Model selection across a sweep (hyper-parameters x checkpoint) on the selection half only.

Each run logs its metrics twice: on the selection half of the eval prompts (`eval_selection/...`) and
on the reporting half (`eval/...`). Choosing the best run by a reporting-half number and then reporting
that same number overstates it (the maximum of noisy estimates is biased upwards); choosing on the
selection half and reporting the chosen run's reporting-half number does not.
"""

from __future__ import annotations

import math

from qrpo.errors import InputError


def select_run(runs: list[dict[str, float]], metric: str = "reward_mean", higher_is_better: bool = True) -> tuple[int, dict[str, float]]:
    """(index of the chosen run, its reporting-half metrics without prefix): the run with the best
    `eval_selection/<metric>`; the reporting half takes no part in the choice."""
    key = f"eval_selection/{metric}"
    scored = [(i, run[key]) for i, run in enumerate(runs) if isinstance(run.get(key), (int, float)) and math.isfinite(run[key])]
    if not scored:
        raise InputError(f"no run has a finite {key}; selection needs each run's eval_selection/ metrics")
    best = max(scored, key=lambda item: item[1] if higher_is_better else -item[1])[0]
    return best, {k.removeprefix("eval/"): v for k, v in runs[best].items() if k.startswith("eval/")}
