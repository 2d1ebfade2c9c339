"""A `--multirun` sweep as one parent MLflow run with the jobs as its children.

`SweepCallback` is a Hydra callback (configured under `hydra.callbacks` in conf/config.yaml):

- on_multirun_start: expands the sweep (command-line overrides and `hydra.sweeper.params`, e.g. from a
  `sweep=` preset), composes and validates every job before any work (one bad job: one line, exit 2),
  creates the parent run, and exports its id (QRPO_PARENT_RUN_ID) and the sweep's largest K + M
  (QRPO_SWEEP_MIN_SAMPLES) to the jobs. Each job then passes `sampler.min_samples_per_prompt` so the
  train prompts are sampled and scored once, at the largest size, and the smaller jobs reuse prefixes.
- on_multirun_end: reads the children's metrics by name and logs to the parent a comparison table
  (comparison.md, comparison.csv, and an MLflow table comparison.json: method, beta, lr, M, reward,
  LC reward, KL, win rate) and plots (reward_vs_kl.png: the frontier per method; reward_vs_M.png).
  A sweep that stops early still closes its parent: FAILED after a failed job, KILLED after SIGTERM
  (flows/termination.py; the running child ends FAILED and no further job starts).

`experiment=compare` (conf/compare/) is the same parent-and-children run without `--multirun`: its arms
are named override lists (a method, its transform, its beta) that a Cartesian grid cannot express, run
one after the other by `run_arms` through the same `start`/`end`, each child named after its arm.
"""

from __future__ import annotations

import atexit
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from flows.termination import exit_on_sigterm, stop_if_terminated, terminated

PARENT_ENV = "QRPO_PARENT_RUN_ID"
MIN_SAMPLES_ENV = "QRPO_SWEEP_MIN_SAMPLES"


def sweep_jobs(task_overrides: list[str], sweeper_params: dict[str, Any] | None) -> list[list[str]]:
    """The override list of every job, in Hydra's BasicSweeper order (params from the config first)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{key}={value}" for key, value in (sweeper_params or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + list(task_overrides))
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def samples_per_prompt(config: dict) -> int:
    """K + M: completions the train `sample` step draws per prompt for this config."""
    return int(config["sampler"]["num_train_samples"]) + int(config["sampler"]["num_ref_samples"])


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.parent_id: str | None = None
        self.client = None
        self.started = 0.0
        self.jobs: list[list[str]] = []
        self.rows: list[dict] = []  # the comparison table logged last, one row per child
        self.paired_note = ""  # printed under the table: the baseline, the power line, equal-KL readings, all pairs
        self.baseline: str | None = None  # compare.baseline: the arm (run name) the others are paired with
        self.pairs = "baseline"  # compare.pairs=all: every pair of arms too (comparison/pairs.md|csv)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        task = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
        params = OmegaConf.to_container(config.hydra.sweeper.params, resolve=False) if config.hydra.sweeper.get("params") else {}
        from flows.validate import hand_over

        jobs = sweep_jobs(task, params)
        for job, (config, sections) in zip(jobs, self.start(task, params, jobs)):
            hand_over(job, config, sections)  # each job's `qrpo-pipeline` call takes its config as checked here

    def start(self, task: list[str], params: dict, jobs: list[list[str]]) -> list[tuple[dict, Any]]:
        """Compose and validate every job (one bad job: one line, exit 2), open the parent run, export its id
        and the largest K + M to the jobs; return each job's (config, typed sections)."""
        from flows.validate import load_config
        from qrpo.errors import InputError

        try:
            checked = [load_config(job) for job in jobs]
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        self.jobs = jobs
        configs = [config for config, _ in checked]
        largest = max(samples_per_prompt(c) for c in configs)
        os.environ[MIN_SAMPLES_ENV] = str(largest)
        self.parent_id = self._start_parent(configs[0], task, params, jobs, largest)
        os.environ[PARENT_ENV] = self.parent_id
        self.started = time.time()
        atexit.register(self._close_if_open)
        exit_on_sigterm()  # a SIGTERM mid-sweep: the running child ends FAILED, the parent KILLED
        print(f"sweep: {len(jobs)} jobs, parent MLflow run {self.parent_id}, sampling K+M = {largest} per train prompt once")
        return checked

    def _start_parent(self, config: dict, task: list[str], params: dict, jobs: list[list[str]], largest: int) -> str:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        from qrpo.store.tracking import artifact_location, tracking_uri

        self.client = MlflowClient(tracking_uri())
        name = config["mlflow_experiment"]
        found = self.client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found else self.client.create_experiment(name, artifact_location=artifact_location())
        tags = {"qrpo.sweep": "true", "sweep.jobs": str(len(jobs)), "sweep.overrides": " ".join(task)[:5000],
                "mlflow.note.content": "Sweep parent: the comparison of its children is under comparison/."}
        run = self.client.create_run(experiment_id, run_name=f"sweep-{time.strftime('%Y%m%d-%H%M%S')}", tags=tags)
        sweep_params = {"sweep.size": len(jobs), "sweep.min_samples_per_prompt": largest,
                        **{f"sweep.params.{k}": v for k, v in params.items()},
                        # read back by `qrpo-compare --parent-run`, so it pairs the arms as the sweep did
                        **({"compare.baseline": self.baseline} if self.baseline else {}), "compare.pairs": self.pairs}
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in sweep_params.items()])
        return run.info.run_id

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        stop_if_terminated()  # a SIGTERM some code swallowed: no further job

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.end()

    def end(self) -> None:
        """Log the comparison to the parent and close it (FAILED when a child did not finish, KILLED after
        SIGTERM)."""
        if self.parent_id is None:
            return
        try:
            children = self.log_comparison(self.parent_id)
        except BaseException:  # the children are logged; the parent must not stay RUNNING
            self.client.set_terminated(self.parent_id, "KILLED" if terminated() else "FAILED")
            self._forget()
            raise
        failed = [r for r in children if r.info.status != "FINISHED"]
        self.client.log_metric(self.parent_id, "sweep/wall_time_s", time.time() - self.started)
        status = "KILLED" if terminated() else "FAILED" if failed or not children else "FINISHED"
        self.client.set_terminated(self.parent_id, status)
        from qrpo.store.tracking import mlflow_ui_command

        from flows.compare import format_comparison

        if self.rows:
            print("\n" + format_comparison(self.rows) + (f"{self.paired_note}\n" if self.paired_note else ""))
        print(f"sweep: {len(children)} children logged to parent run {self.parent_id} (comparison/comparison.md)\n"
              f"  MLflow: {mlflow_ui_command()}   then open http://127.0.0.1:5000")
        self._forget()

    def log_comparison(self, parent_id: str) -> list:
        """Read the parent's children, log the table and plots to the parent; return the children."""
        from flows.compare import (
            DIFF_COLUMNS, OTHER_DIFF_COLUMNS, PAIR_COLUMNS, SWEEP_COLUMNS, plot_sweep, sweep_comparison, to_csv, to_markdown,
        )

        experiment_id = self.client.get_run(parent_id).info.experiment_id
        children = list(self.client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=5000))
        children.sort(key=lambda r: r.info.start_time)
        rows, note, pair_rows, readings = sweep_comparison(self.client, children, self.baseline, self.pairs)
        self.rows = rows
        pairs_table = to_markdown(pair_rows, PAIR_COLUMNS) if pair_rows else ""
        self.paired_note = "\n".join(n for n in (note, pairs_table and f"every pair of arms (Holm over all pairs):\n{pairs_table}") if n)
        columns = [c for c, _ in SWEEP_COLUMNS] + DIFF_COLUMNS + OTHER_DIFF_COLUMNS
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "comparison.md").write_text(to_markdown(rows, columns) + (f"\n{note}\n" if note else ""))
            (folder / "comparison.csv").write_text(to_csv(rows, columns))
            plot_sweep(rows, folder, readings)
            if pair_rows:
                (folder / "pairs.md").write_text(pairs_table)
                (folder / "pairs.csv").write_text(to_csv(pair_rows, PAIR_COLUMNS))
            self.client.log_artifacts(parent_id, str(folder), "comparison")
        self.client.log_table(parent_id, {c: [("" if r.get(c) is None else r[c]) for r in rows] for c in columns}, "comparison.json")
        done = [r["reward"] for r in rows if r["reward"] is not None]
        if done:
            self.client.log_metric(parent_id, "sweep/best_reward", max(done))
        self.client.log_metric(parent_id, "sweep/children", len(children))
        return children

    def _close_if_open(self) -> None:
        """atexit: a sweep that ended early still gets its comparison, and a FAILED parent (a job raised)
        or a KILLED one (SIGTERM)."""
        if self.parent_id is None or self.client is None:
            return
        try:
            self.log_comparison(self.parent_id)
        except Exception:
            pass  # what the table needs may be what failed; the parent is closed all the same
        try:
            self.client.set_terminated(self.parent_id, "KILLED" if terminated() else "FAILED")
        except Exception:
            pass
        self._forget()

    def _forget(self) -> None:
        from flows.validate import discard

        for job in self.jobs:  # a job that never ran leaves no handed-over config behind
            discard(job)
        self.parent_id = None
        for name in (PARENT_ENV, MIN_SAMPLES_ENV):
            os.environ.pop(name, None)


def configured_arms(config: dict) -> dict[str, list[str]]:
    """`compare.arms` of a composed config (experiment=compare): {arm name: its overrides}, checked."""
    from qrpo.errors import InputError

    arms = (config.get("compare") or {}).get("arms") or {}
    if not isinstance(arms, dict) or not all(isinstance(v, list) and all(isinstance(o, str) for o in v) for v in arms.values()):
        raise InputError("compare.arms must map each arm's name to a list of overrides, e.g. "
                         "{dpo_b0.1: [algorithm=dpo, algorithm.beta=0.1, regime=best_worst]}")
    return {str(name): list(overrides) for name, overrides in arms.items()}


COMPARE_PAIRS = ("baseline", "all")


def arm_settings(config: dict, arms: dict[str, list[str]]) -> tuple[str | None, str]:
    """(`compare.baseline`, `compare.pairs`) of experiment=compare, checked: the arm every other arm is
    paired with (None: the best DPO arm by the selection half), and "all" to add every pair of arms."""
    from qrpo.errors import InputError

    section = config.get("compare") or {}
    baseline, pairs = section.get("baseline"), section.get("pairs") or "baseline"
    if baseline is not None and baseline not in arms:
        raise InputError(f"compare.baseline={baseline!r} is not one of the arms: {', '.join(arms)}")
    if pairs not in COMPARE_PAIRS:
        raise InputError(f"compare.pairs={pairs!r} is not one of {', '.join(COMPARE_PAIRS)}")
    return baseline, pairs


def run_arms(overrides: list[str], arms: dict[str, list[str]], run_job, baseline: str | None = None,
                pairs: str = "baseline") -> list[dict]:
    """experiment=compare: every arm (the command line's overrides, then the arm's own, then its name as
    `run_name`) as a child of one parent MLflow run, sampled and scored once at the largest K + M; the
    comparison table and the reward-vs-KL frontier end on the parent. `run_job(overrides, config)` runs one
    pipeline and returns its summary. Returns the table's rows."""
    jobs = [[*overrides, *arm, f"run_name={name}"] for name, arm in arms.items()]
    sweep = SweepCallback()
    sweep.baseline, sweep.pairs = baseline, pairs
    checked = sweep.start(list(overrides), {"arms": " ".join(arms)}, jobs)
    try:
        for i, (name, job, (config, _)) in enumerate(zip(arms, jobs, checked), 1):
            stop_if_terminated()  # a SIGTERM some code swallowed: no further arm
            print(f"compare: arm {i}/{len(jobs)} {name}: {' '.join(arms[name])}", flush=True)
            run_job(job, config)
    finally:
        sweep.end()
    return sweep.rows


def job_overrides(overrides: list[str], config: dict) -> list[str]:
    """A sweep job's overrides plus `sampler.min_samples_per_prompt` = the sweep's largest K + M, when
    the config has that key and the job does not set it itself."""
    largest = os.environ.get(MIN_SAMPLES_ENV)
    if not largest or "min_samples_per_prompt" not in config.get("sampler", {}):
        return overrides
    if any(o.lstrip("+~").startswith("sampler.min_samples_per_prompt=") for o in overrides):
        return overrides
    return [*overrides, f"sampler.min_samples_per_prompt={largest}"]


__all__ = ["SweepCallback", "configured_arms", "arm_settings", "run_arms", "job_overrides", "sweep_jobs", "samples_per_prompt", "PARENT_ENV", "MIN_SAMPLES_ENV"]
