"""`qrpo-pipeline [OVERRIDES] [--multirun]`: compose the config with Hydra and run the Prefect flow.

    qrpo-pipeline                                   # the embedded default experiment
    qrpo-pipeline experiment=smoke                  # tiny models, about a minute
    qrpo-pipeline --multirun algorithm.beta=0.01,0.1
    qrpo-pipeline --cfg job                         # print the composed config
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import sys
import threading
from typing import NoReturn

import flows  # noqa: F401  (offline defaults before Prefect and MLflow load)
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from flows.config import CONFIG_DIR, CONFIG_NAME
from flows.local_api import LocalAPI
from flows.sweep import configured_arms, arm_settings, job_overrides, run_arms
from flows.termination import STATUS as TERMINATED
from flows.termination import exit_on_sigterm, terminated
from flows.validate import hand_over, load_config
from qrpo.errors import InputError


def run(overrides: list[str]) -> dict | list[dict]:
    """Validate, then run the flow (experiment=compare: every arm, see flows/sweep.py); bad input exits with
    one line and status 2, before any work."""
    try:  # on a QRPO_HOME that has run before, the temporary Prefect server boots during the slower checks
        config, sections = load_config(overrides, values_checked=LocalAPI.start_early)
        arms = configured_arms(config)
        baseline, pairs = arm_settings(config, arms)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if arms:
        return run_arms(overrides, arms, run_flow, baseline, pairs)  # prints the comparison at its end, as a sweep does
    return run_flow(overrides, config, sections)


def run_flow(overrides: list[str], config: dict, sections=None) -> dict:
    """One pipeline run of a validated config; prints and returns its summary. The flow takes the config
    checked here (`hand_over`) instead of composing and validating it again, unless a sweep job's overrides
    gain the sweep's sample count (another config)."""
    os.makedirs(os.environ["PREFECT_HOME"], exist_ok=True)  # Prefect's own history, under QRPO_HOME by default
    api = LocalAPI.get()  # without PREFECT_API_URL: the temporary server boots on the other core while the flow imports
    from flows.pipeline import qrpo_pipeline
    from qrpo.store.tracking import open_tracking_store

    open_tracking_store()  # MLflow's store (engine, schema check: ~1 s) opens while the server still boots

    final = job_overrides(overrides, config)  # in a sweep: sample the sweep's largest K + M once
    if sections is not None and final == overrides:
        hand_over(final, config, sections)
    overrides = final
    try:
        with api.serving() if api is not None else contextlib.nullcontext():
            summary = qrpo_pipeline(overrides)
    except InputError as err:  # found mid-run (e.g. every pair tied): same one line, finished artifacts kept
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(format_summary(summary))
    return summary


def prefect_ui_command(flow_run_id: str) -> str:
    """How to look at this flow run: its page on the Prefect server the run used, or, after a run on the
    temporary local API, the command that opens a server on that API's database (PREFECT_HOME) and the page."""
    from prefect.settings import PREFECT_API_URL

    from qrpo.store.tracking import tool_command

    api = PREFECT_API_URL.value()
    if api:
        return f"open {api.rstrip('/').removesuffix('/api')}/runs/flow-run/{flow_run_id}"
    home = shlex.quote(os.path.abspath(os.path.expanduser(os.environ["PREFECT_HOME"])))
    return f"PREFECT_HOME={home} {tool_command('prefect')} server start   then open http://127.0.0.1:4200/runs/flow-run/{flow_run_id}"


def format_summary(summary: dict) -> str:
    """The run in a few lines: the method trained, the held-out gain with its 95% interval (in words when
    it is within noise), KL and length; all on the reporting half of the eval prompts."""
    from qrpo.evaluation import gain_in_words
    from qrpo.store.tracking import mlflow_ui_command

    m = summary["metrics"]
    uri = summary["tracking_uri"]
    se = lambda name: f" ± {m[name + '_se']:.4f}" if isinstance(m.get(name + "_se"), float) and m[name + "_se"] == m[name + "_se"] else ""  # noqa: E731
    seeds = f", {int(m['num_seeds'])} seed(s)" if "num_seeds" in m else ""
    lines = [
        "",
        f"{summary.get('label', 'QRPO pipeline')} finished"
        + (f"   (held-out reporting half: {int(m['num_prompts'])} prompts{seeds}; ± = standard error over prompts)" if "num_prompts" in m else ""),
        f"  held-out reward   before {m['ref_reward_mean']:+.4f}  ->  after {m['reward_mean']:+.4f}{se('reward_mean')}",
    ]
    if all(isinstance(m.get(k), float) and m[k] == m[k] for k in ("reward_gain_ci_low", "reward_gain_ci_high")):
        lines.append(f"  reward gain       {m['reward_gain']:+.4f}   95% interval [{m['reward_gain_ci_low']:+.4f}, {m['reward_gain_ci_high']:+.4f}]"
                     f"   {gain_in_words(m)}")
    else:
        lines.append(f"  reward gain       {m['reward_gain']:+.4f}   (no interval: {gain_in_words(m)})")
    if "reward_lc_mean" in m:
        lines.append(f"  length-controlled after {m['reward_lc_mean']:+.4f}{se('reward_lc_mean')}   (gain {m.get('reward_lc_gain', float('nan')):+.4f})")
    lines += [
        f"  win rate vs ref   {m['win_rate_vs_ref']:.1%}   reference quantile {m.get('quantile_mean', float('nan')):.3f} (0.5 = no change)",
        f"  KL(pi || pi_ref)  k1 {m['kl_k1']:.4f}{se('kl_k1')}   k3 {m['kl_k3']:.4f}{se('kl_k3')}   (nats per completion)",
        f"  mean length       before {m['ref_length_mean']:.1f}  ->  after {m['length_mean']:.1f} tokens",
    ]
    if summary.get("optimum"):  # QRPO: where training was heading, the same for every prompt
        o = summary["optimum"]
        lines.append(f"  optimum pi*       KL {o['optimum_kl']:.4f}   expected quantile {o['optimum_expected_quantile']:.3f}"
                     f"   (beta {o['beta']:.4g}; measured above: k3 and the reference quantile)")
    if "alpaca_eval_lc_win_rate" in m:
        lines.append(f"  AlpacaEval 2      LC win rate {m['alpaca_eval_lc_win_rate']:.1f}%{se('alpaca_eval_lc_win_rate')}   "
                     f"win rate {m['alpaca_eval_win_rate']:.1f}%{se('alpaca_eval_win_rate')}")
    if "leetcode_pass_rate" in m:
        before = lambda name: f"{m['ref_' + name]:.1%} -> " if "ref_" + name in m else ""  # noqa: E731
        lines.append(f"  LeetCode          pass rate {before('leetcode_pass_rate')}{m['leetcode_pass_rate']:.1%}   "
                     f"full pass {before('leetcode_full_pass_rate')}{m['leetcode_full_pass_rate']:.1%}")
    lines += [
        f"  cached steps      {', '.join(summary['cached_steps']) or 'none'}",
        "",
        f"  MLflow:  {mlflow_ui_command(uri)}   then open http://127.0.0.1:5000 (run {summary['mlflow_run_id']})"
        if not uri.startswith(("http://", "https://")) else f"  MLflow:  {uri} (run {summary['mlflow_run_id']})",
        f"  Prefect: {prefect_ui_command(summary['flow_run_id'])}",
    ]
    return "\n".join(lines)


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    run(list(HydraConfig.get().overrides.task))


def main() -> None:
    """Plain overrides run directly (bad input: one line, exit 2); Hydra flags such as --multirun,
    --cfg job or --help go through hydra.main, whose jobs call the same `run`. SIGTERM (a scheduler,
    `kill`, docker stop) ends the process with status 143 and its MLflow runs closed, none left RUNNING."""
    exit_on_sigterm()
    args = sys.argv[1:]
    if any(arg.startswith("-") for arg in args):
        _hydra_main()
    else:
        run(args)
    exit_without_teardown()


def exit_without_teardown() -> NoReturn:
    """End a finished CLI process (status 0, or 143 when a SIGTERM arrived during the exit) without the interpreter's teardown: after the work, Python's
    finalisation frees the objects of every imported module (torch, Prefect, MLflow, ...) one by one, ~2 s of
    a ~10 s cached re-run on 2 cores, for nothing. What a normal exit does before that runs first, as the
    interpreter runs it (the same two CPython calls, in order): `threading._shutdown` (the threading module's
    exit callbacks, where Prefect's log and event workers drain to the API, then the join of non-daemon
    threads), then the atexit handlers (the temporary server stops, open MLflow runs end, logging flushes);
    then stdout and stderr are flushed."""
    threading._shutdown()
    atexit._run_exitfuncs()  # a SIGTERM inside a handler is printed and dropped there: `terminated()` still says so
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(TERMINATED if terminated() else 0)


if __name__ == "__main__":
    main()
