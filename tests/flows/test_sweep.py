"""`qrpo-pipeline --multirun`: one parent MLflow run with the jobs as children, a comparison on the
parent, and the train prompts sampled once for the whole sweep (a real subprocess, Prefect API and
MLflow SQLite store)."""

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute  # noqa: F401
import pytest
from mlflow.tracking import MlflowClient

from flows.config import compose_config
from flows.sweep import job_overrides, samples_per_prompt, sweep_jobs
from qrpo.store.artifacts import ArtifactStore

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ["experiment=smoke", "algorithm.beta=0.1,0.2", "sampler.num_ref_samples=2,4"]


def cli_env(home: Path, api: str | None = None) -> dict:
    """The CLI's environment: QRPO_HOME `home`, the Prefect API `api` (default: the one this process uses)."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "QRPO_", "PREFECT_"))}
    env.update(QRPO_HOME=str(home), PYTHONPATH=str(ROOT), PREFECT_API_URL=api or PREFECT_API_URL.value(),
               PREFECT_HOME=str(home / "prefect"), HF_HUB_OFFLINE="1")
    return env


def run_multirun(overrides: list[str], home: Path, workdir: Path, api: str | None = None):
    """`qrpo-pipeline --multirun OVERRIDES` in a subprocess, to success; (MLflow client, all runs, process)."""
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "--multirun", *overrides], cwd=workdir, env=cli_env(home, api),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("qrpo")
    return client, client.search_runs([experiment.experiment_id]), proc


@pytest.fixture(scope="module")
def sweep(prefect_server, tmp_path_factory):
    home = tmp_path_factory.mktemp("sweep_home")
    workdir = tmp_path_factory.mktemp("cwd")  # a fresh folder: nothing may be written where the command runs
    client, runs, proc = run_multirun(SWEEP, home, workdir)
    return home, workdir, client, runs, proc


def test_sweep_jobs_expand_like_hydra_and_take_the_largest_k_plus_m():
    jobs = sweep_jobs(SWEEP[1:], {"train.learning_rate": "1e-5,3e-5"})
    assert len(jobs) == 8 and ["train.learning_rate=1e-05", "algorithm.beta=0.1", "sampler.num_ref_samples=2"] in jobs
    config = compose_config(["experiment=smoke", "sampler.num_ref_samples=4"])
    assert samples_per_prompt(config) == 3 + 4


def test_job_overrides_pass_the_sweep_minimum_only_when_the_config_knows_the_key(monkeypatch):
    monkeypatch.setenv("QRPO_SWEEP_MIN_SAMPLES", "7")
    base = ["experiment=smoke"]
    assert job_overrides(base, {"sampler": {}}) == base
    assert job_overrides(base, {"sampler": {"min_samples_per_prompt": 0}}) == [*base, "sampler.min_samples_per_prompt=7"]
    mine = [*base, "sampler.min_samples_per_prompt=9"]
    assert job_overrides(mine, {"sampler": {"min_samples_per_prompt": 0}}) == mine
    monkeypatch.delenv("QRPO_SWEEP_MIN_SAMPLES")
    assert job_overrides(base, {"sampler": {"min_samples_per_prompt": 0}}) == base


def test_sweep_summary_reads_each_childs_own_metrics_and_leaves_a_missing_one_blank(tmp_path):
    """The parent's comparison (csv, md, json) on a store with hand-logged children: each cell is that child's
    own logged value; a metric a child did not log (LC reward here, everything for a child that failed
    before eval) is a blank cell, never 0 and never another child's number."""
    import json

    from mlflow.entities import Metric, Param

    from flows.sweep import SweepCallback

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("qrpo", artifact_location=(tmp_path / "mlruns").as_uri())
    parent = client.create_run(experiment_id, tags={"qrpo.sweep": "true"}).info.run_id
    logged = {"with_lc": {"eval/reward_mean": 0.61, "eval/reward_lc_mean": 0.47, "eval/kl_k3": 0.12, "eval/win_rate_vs_ref": 0.7},
              "without_lc": {"eval/reward_mean": 0.35, "eval/kl_k3": 0.08, "eval/win_rate_vs_ref": 0.55},
              "failed": {}}
    ids = {}
    for i, (name, metrics) in enumerate(logged.items()):  # started in this order: the table's row order
        run = client.create_run(experiment_id, start_time=1000 + i, run_name=name,
                                tags={"mlflow.parentRunId": parent, "method": "qrpo-identity"})
        client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
                         params=[Param("algorithm.beta", str(0.1 * (i + 1))), Param("sampler.num_ref_samples", "4")])
        client.set_terminated(run.info.run_id, "FAILED" if name == "failed" else "FINISHED")
        ids[name] = run.info.run_id
    sweep = SweepCallback()
    sweep.client = client
    assert {r.info.run_id for r in sweep.log_comparison(parent)} == set(ids.values())

    rows = {r["run_id"]: r for r in csv.DictReader(io.StringIO(open(client.download_artifacts(parent, "comparison/comparison.csv")).read()))}
    lines = [line for line in open(client.download_artifacts(parent, "comparison/comparison.md")).read().splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    markdown = {r["run_id"]: r for r in (dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[1:])}
    table = json.load(open(client.download_artifacts(parent, "comparison.json")))
    stored = {r[table["columns"].index("run_id")]: dict(zip(table["columns"], r)) for r in table["data"]}
    assert set(rows) == set(markdown) == set(stored) == set(ids.values())
    for column, metric in [("lc_reward", "eval/reward_lc_mean"), ("reward", "eval/reward_mean"), ("kl", "eval/kl_k3"),
                           ("win_rate", "eval/win_rate_vs_ref")]:
        for name, run_id in ids.items():
            value = client.get_run(run_id).data.metrics.get(metric)  # what that child logged, read back from MLflow
            assert (value is None) == (metric not in logged[name])
            where = f"{column} of child {name!r}"
            if value is None:
                assert rows[run_id][column] == "" and markdown[run_id][column] == "" and stored[run_id][column] == "", where
            else:
                assert float(rows[run_id][column]) == pytest.approx(value), where
                assert float(markdown[run_id][column]) == pytest.approx(value, rel=1e-3), where
                assert stored[run_id][column] == pytest.approx(value), where
    assert rows[ids["without_lc"]]["lc_reward"] == "" and rows[ids["with_lc"]]["lc_reward"] != ""  # both branches ran
    assert rows[ids["failed"]]["status"] == "FAILED" and rows[ids["failed"]]["reward"] == ""
    assert client.get_run(parent).data.metrics["sweep/children"] == 3


def test_a_comparison_that_fails_at_the_end_still_closes_the_parent_as_failed(tmp_path, monkeypatch):
    """The sweep's last step (reading the children, plotting) raising must not leave the parent RUNNING: the
    error propagates and the parent ends FAILED; the atexit path does the same when the run ends early."""
    from flows.sweep import SweepCallback

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("qrpo", artifact_location=(tmp_path / "mlruns").as_uri())

    def broken(parent_id):
        raise ValueError("the table could not be built")

    for path in ("end", "atexit"):
        sweep = SweepCallback()
        sweep.client, sweep.parent_id = client, client.create_run(experiment_id, tags={"qrpo.sweep": "true"}).info.run_id
        parent = sweep.parent_id
        monkeypatch.setattr(sweep, "log_comparison", broken)
        if path == "end":
            with pytest.raises(ValueError, match="could not be built"):
                sweep.end()
        else:
            sweep._close_if_open()
        assert client.get_run(parent).info.status == "FAILED", path
        assert sweep.parent_id is None


@pytest.mark.slow
def test_multirun_makes_one_parent_run_with_four_children(sweep):
    _, _, client, runs, _ = sweep
    parents = [r for r in runs if r.data.tags.get("qrpo.sweep") == "true"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.params["sweep.size"] == "4"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and len(runs) == 5, "every run of the sweep is a child of its parent"
    assert all(r.info.status == "FINISHED" for r in children)
    grid = sorted((r.data.params["algorithm.beta"], r.data.params["sampler.num_ref_samples"]) for r in children)
    assert grid == [("0.1", "2"), ("0.1", "4"), ("0.2", "2"), ("0.2", "4")]


def test_a_sweep_prints_its_comparison_table_one_row_per_child(sweep):
    _, _, _, runs, proc = sweep
    printed = proc.stdout.split("comparison (held-out reporting half")[1].split("\nsweep: ")[0]
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| run | method | beta | lr | M | K | reward | gain |")
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(rows) == 1 + 4 and all(f"| {r.info.run_name} |" in printed for r in children)


@pytest.mark.slow
def test_parent_run_carries_the_comparison_table_and_plots(sweep):
    _, _, client, runs, _ = sweep
    parent = next(r for r in runs if r.data.tags.get("qrpo.sweep") == "true")
    children = {r.info.run_id: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    files = {f.path for f in client.list_artifacts(parent.info.run_id, "comparison")}
    assert {"comparison/comparison.md", "comparison/comparison.csv", "comparison/reward_vs_kl.png",
            "comparison/reward_vs_M.png"} <= files
    assert "comparison.json" in {f.path for f in client.list_artifacts(parent.info.run_id)}
    rows = list(csv.DictReader(io.StringIO(open(client.download_artifacts(parent.info.run_id, "comparison/comparison.csv")).read())))
    assert len(rows) == 4 and {r["run_id"] for r in rows} == set(children)
    for row in rows:
        child = children[row["run_id"]]
        assert row["method"] == "qrpo-identity" and float(row["beta"]) == float(child.data.params["algorithm.beta"])
        assert int(row["M"]) == int(child.data.params["sampler.num_ref_samples"])
        assert float(row["lr"]) == float(child.data.params["train.learning_rate"])
        assert float(row["reward"]) == pytest.approx(child.data.metrics["eval/reward_mean"])
        assert float(row["kl"]) == pytest.approx(child.data.metrics["eval/kl_k3"])
        assert float(row["win_rate"]) == pytest.approx(child.data.metrics["eval/win_rate_vs_ref"])
        lc = client.get_run(row["run_id"]).data.metrics.get("eval/reward_lc_mean")  # the child's own logged value
        if lc is None:
            assert row["lc_reward"] == "", "a metric a child lacks is a blank cell"
        else:
            assert float(row["lc_reward"]) == pytest.approx(lc)
    # arm vs arm: no DPO arm here, so the baseline is the best child by the selection half; the others
    # carry its paired differences, recomputed here from each child's own report/per_prompt.csv
    from qrpo.evaluation import paired

    best = max(children.values(), key=lambda r: r.data.metrics["eval_selection/reward_mean"]).info.run_id
    per_prompt = {i: paired.read_per_prompt(client.download_artifacts(i, "report/per_prompt.csv")) for i in children}
    expected = {r["arm"]: r for r in paired.compare_arms(per_prompt, best)}
    for row in rows:
        if row["run_id"] == best:
            assert row["diff_vs_baseline"] == "" and row["diff_p_holm"] == ""
        else:
            assert float(row["diff_vs_baseline"]) == pytest.approx(expected[row["run_id"]]["diff_vs_baseline"], rel=1e-9)
            assert float(row["diff_ci_low"]) <= float(row["diff_vs_baseline"]) <= float(row["diff_ci_high"])
            assert float(row["diff_p_holm"]) == pytest.approx(expected[row["run_id"]]["diff_p_holm"], rel=1e-9)
            assert float(row["mde"]) == pytest.approx(expected[row["run_id"]]["mde"], rel=1e-9)
    markdown = open(client.download_artifacts(parent.info.run_id, "comparison/comparison.md")).read()
    assert markdown.count("\n| ") == 4 and "| method |" in markdown
    assert f"vs the baseline arm {children[best].info.run_name} " in markdown and "\npower: this comparison detects" in markdown
    assert "\nreward at equal KL (k3 = " in markdown and "\n  qrpo-identity: " in markdown and "(4 runs)" in markdown
    assert parent.data.metrics["sweep/children"] == 4


@pytest.mark.slow
def test_sweep_writes_nothing_in_the_working_folder(sweep):
    home, workdir, client, _, _ = sweep
    assert list(workdir.iterdir()) == [], "no mlruns/, outputs/ or multirun/ where the command ran"
    assert [e.name for e in client.search_experiments()] == ["qrpo"], "no stray `Default` experiment"
    assert (home / "hydra" / "multirun").is_dir()


@pytest.mark.slow
def test_sweep_samples_and_scores_the_train_prompts_once(sweep):
    """M = 2, 4 with K = 3: the sweep passes K + max M = 7 to every job; the first job samples 7 per train
    prompt, the second finds them (Cached), and both score the same artifact, so one scoring too."""
    home, *_ = sweep
    store = ArtifactStore(home / "artifacts")
    samples = {k: store.require("sample", k) for k in store.keys("sample")}
    train_ids = set(store.require("load_dataset", store.keys("load_dataset")[0]).table().filter(
        pa.compute.equal(store.require("load_dataset", store.keys("load_dataset")[0]).table().column("split"), "train")).column("prompt_id").to_pylist())
    train = [k for k, a in samples.items() if set(a.table().column("prompt_id").to_pylist()) == train_ids]
    assert len(train) == 1, f"the train prompts were sampled into {len(train)} artifacts for one sweep"
    assert samples[train[0]].manifest["num_samples"] == 7
    scored = [k for k in store.keys("score") if store.require("score", k).manifest["inputs"]["sample"] in train]
    assert len(scored) == 1, f"the train samples were scored {len(scored)} times"


def test_a_bad_value_in_any_sweep_job_stops_the_sweep_before_any_work(prefect_server, tmp_path):
    home = tmp_path / "home"
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "--multirun", "experiment=smoke", "algorithm.beta=0.1,-1"],
                          cwd=tmp_path, env=cli_env(home), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error: algorithm (qrpo.objective.algorithms.QRPO): beta must be a positive finite number; got -1.0"]
    assert not home.exists(), "no job, no parent run, no artifact may be written"


@pytest.mark.slow
def test_sigterm_during_a_sweep_closes_the_parent_as_killed_and_the_running_child_as_failed(prefect_server, tmp_path):
    """A scheduler's SIGTERM (or `kill`, `docker stop`) mid-sweep: without a handler the process dies
    before atexit and the parent and the running child stay RUNNING in the dashboard for ever."""
    import signal
    import time

    home = tmp_path / "home"
    home.mkdir()
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    client.search_experiments()  # the store's tables made here: polling a store the sweep is still migrating races with it
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "--multirun", "experiment=smoke", "algorithm.beta=0.1,0.2"],
                            cwd=tmp_path, env=cli_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, children = time.time() + 300, []
    try:
        while time.time() < deadline and proc.poll() is None and not children:  # wait for the first child to start
            time.sleep(1)
            experiment = client.get_experiment_by_name("qrpo")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            children = [r for r in runs if "mlflow.parentRunId" in r.data.tags and r.info.status == "RUNNING"]
        assert children, f"no child run started: {proc.poll()} {proc.stderr.read()[-3000:] if proc.poll() is not None else ''}"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr[-5000:]  # SystemExit(128 + SIGTERM), not a completed sweep
    runs = {r.info.run_id: r for r in client.search_runs([client.get_experiment_by_name("qrpo").experiment_id])}
    parent = runs[children[0].data.tags["mlflow.parentRunId"]]
    assert parent.info.status == "KILLED", stderr[-3000:]
    statuses = sorted(r.info.status for r in runs.values() if r.info.run_id != parent.info.run_id)
    assert "FAILED" in statuses and "RUNNING" not in statuses, statuses  # the child the signal hit; none left RUNNING
