"""`qrpo-pipeline [OVERRIDES] [--multirun]`: compose the config with Hydra and run the Prefect flow.

    qrpo-pipeline                                   # the embedded default experiment
    qrpo-pipeline experiment=smoke                  # tiny models, about a minute
    qrpo-pipeline --multirun algorithm.beta=0.01,0.1
    qrpo-pipeline --cfg job                         # print the composed config
"""

from __future__ import annotations

import os
import sys

import flows  # noqa: F401  (offline defaults before Prefect and MLflow load)
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from flows.config import CONFIG_DIR, CONFIG_NAME, compose_config
from flows.sweep import job_overrides
from flows.validate import validate
from qrpo.errors import InputError


def run(overrides: list[str]) -> dict:
    """Validate, then run the flow; bad input exits with one line and status 2, before any work."""
    try:
        config = compose_config(overrides)
        validate(config)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    from flows.pipeline import qrpo_pipeline

    os.makedirs(os.environ["PREFECT_HOME"], exist_ok=True)  # Prefect's own history, under QRPO_HOME by default
    overrides = job_overrides(overrides, config)  # in a sweep: sample the sweep's largest K + M once
    try:
        summary = qrpo_pipeline(overrides)
    except InputError as err:  # found mid-run (e.g. every pair tied): same one line, finished artifacts kept
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(format_summary(summary))
    return summary


def format_summary(summary: dict) -> str:
    m = summary["metrics"]
    uri = summary["tracking_uri"]
    lines = [
        "",
        "QRPO pipeline finished",
        f"  held-out reward   before {m['ref_reward_mean']:+.4f}  ->  after {m['reward_mean']:+.4f}   (gain {m['reward_gain']:+.4f}, win rate vs reference {m['win_rate_vs_ref']:.0%})",
        f"  KL(pi || pi_ref)  k1 {m['kl_k1']:.4f}   k3 {m['kl_k3']:.4f}   (nats per completion)",
        f"  mean length       before {m['ref_length_mean']:.1f}  ->  after {m['length_mean']:.1f} tokens",
        f"  cached steps      {', '.join(summary['cached_steps']) or 'none'}",
        "",
        f"  MLflow:  mlflow ui --backend-store-uri {uri}   then open http://127.0.0.1:5000 (run {summary['mlflow_run_id']})"
        if uri.startswith("sqlite") else f"  MLflow:  {uri} (run {summary['mlflow_run_id']})",
        f"  Prefect: prefect server start   then open http://127.0.0.1:4200/runs/flow-run/{summary['flow_run_id']}",
    ]
    return "\n".join(lines)


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    run(list(HydraConfig.get().overrides.task))


def main() -> None:
    """Plain overrides run directly (bad input: one line, exit 2); Hydra flags such as --multirun,
    --cfg job or --help go through hydra.main, whose jobs call the same `run`."""
    args = sys.argv[1:]
    if any(arg.startswith("-") for arg in args):
        _hydra_main()
    else:
        run(args)


if __name__ == "__main__":
    main()
