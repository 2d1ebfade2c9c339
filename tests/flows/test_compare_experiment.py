"""experiment=compare on the smoke preset: every method as a child of one parent MLflow run, sampled and
scored once, one comparison row per method on the parent (a real subprocess, Prefect API, MLflow store)."""

import csv
import io
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from flows.config import compose_config
from flows.sweep import configured_arms
from qrpo.store.artifacts import ArtifactStore
from qrpo.errors import InputError
from tests.flows.test_sweep import cli_env

METHODS = {"qrpo-identity", "qrpo-log", "qrpo-normal_icdf", "dpo", "simpo", "rebel", "sft"}


@pytest.fixture(scope="module")
def compare(prefect_server, tmp_path_factory):
    home = tmp_path_factory.mktemp("compare_home")
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "experiment=smoke", "compare=methods", "compare.pairs=all",
                           "dataset.max_train_prompts=8", "dataset.max_eval_prompts=8"], cwd=tmp_path_factory.mktemp("cwd"), env=cli_env(home),
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("qrpo").experiment_id])
    return home, client, runs, proc


def test_compare_arms_are_read_from_the_preset_and_checked():
    arms = configured_arms(compose_config(["experiment=smoke", "compare=methods"]))
    assert {name for name in arms} == METHODS and arms["dpo"] == ["algorithm=dpo", "regime=best_worst"]
    assert configured_arms(compose_config(["experiment=smoke"])) == {}
    with pytest.raises(InputError, match="compare.arms must map each arm's name to a list of overrides"):
        configured_arms({"compare": {"arms": {"dpo": "algorithm=dpo"}}})


@pytest.mark.slow
def test_compare_parent_run_carries_one_row_per_method(compare):
    _, client, runs, proc = compare
    parents = [r for r in runs if r.data.tags.get("qrpo.sweep") == "true"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    children = {r.info.run_id: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent}
    assert len(children) == 7 and len(runs) == 8
    rows = list(csv.DictReader(io.StringIO(open(client.download_artifacts(parent, "comparison/comparison.csv")).read())))
    assert sorted(r["method"] for r in rows) == sorted(METHODS), "one row per method, none twice"
    for row in rows:
        child = children[row["run_id"]]
        assert row["run"] == child.info.run_name == row["method"], "each child is named after its arm"
        assert child.data.tags["method"] == row["method"] and row["status"] == "FINISHED"
        assert float(row["gain"]) == pytest.approx(child.data.metrics["eval/reward_gain"])
        assert float(row["gain_ci_low"]) <= float(row["gain"]) <= float(row["gain_ci_high"])
    transforms = {r["method"]: children[r["run_id"]].data.params.get("algorithm.transform") for r in rows}
    assert transforms["qrpo-log"] == "log" and transforms["qrpo-normal_icdf"] == "normal_icdf" and transforms["dpo"] is None
    assert {"comparison/reward_vs_kl.png", "comparison/comparison.md"} <= {f.path for f in client.list_artifacts(parent, "comparison")}
    printed = proc.stdout.split("comparison (held-out reporting half")[1]
    assert all(f"| {method} |" in printed for method in METHODS)
    # arm against arm: every arm but the baseline (the only DPO arm) carries its paired difference with it
    assert {r["method"] for r in rows if r["diff_vs_baseline"] == ""} == {"dpo"}
    assert "vs the baseline arm dpo (dpo, best by eval_selection/reward_mean)" in printed
    # compare.pairs=all: every pair of the 7 arms, Holm over all 21, in pairs.csv and on the terminal
    pairs = list(csv.DictReader(io.StringIO(open(client.download_artifacts(parent, "comparison/pairs.csv")).read())))
    assert len(pairs) == 21 and {frozenset((p["arm"], p["baseline"])) for p in pairs} == {
        frozenset((a, b)) for a in METHODS for b in METHODS if a != b}
    assert all(float(p["diff_ci_low"]) <= float(p["diff_vs_baseline"]) <= float(p["diff_ci_high"]) for p in pairs)
    assert "every pair of arms (Holm over all pairs):" in printed


@pytest.mark.slow
def test_compare_samples_and_scores_the_train_prompts_once(compare):
    home, *_ = compare
    store = ArtifactStore(home / "artifacts")
    train = [k for k in store.keys("sample") if store.require("sample", k).manifest["num_samples"] == 3 + 4]
    assert len(train) == 1, f"the train prompts were sampled into {len(train)} artifacts for 7 arms"
    assert len([k for k in store.keys("score") if store.require("score", k).manifest["inputs"]["sample"] in train]) == 1
    assert len(store.keys("train")) == 7


@pytest.fixture(scope="module")
def ref_scaling(prefect_server, tmp_path_factory):
    home = tmp_path_factory.mktemp("ref_scaling_home")
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "experiment=smoke", "compare=ref_scaling",
                           "dataset.max_train_prompts=8", "dataset.max_eval_prompts=8"], cwd=tmp_path_factory.mktemp("cwd"),
                          env=cli_env(home), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return home, proc


@pytest.mark.slow
def test_ref_scaling_samples_the_train_prompts_once_at_the_largest_m_and_pairs_with_m1(ref_scaling):
    """compare=ref_scaling: one train samples artifact of K + 16 per prompt read by all five arms (M = 1..16),
    five trainings, every arm paired with qrpo-M1, reward_vs_M.png on the parent."""
    home, proc = ref_scaling
    store = ArtifactStore(home / "artifacts")
    counts = sorted(store.require("sample", k).manifest["num_samples"] for k in store.keys("sample"))
    train = [k for k in store.keys("sample") if store.require("sample", k).manifest["num_samples"] == 3 + 16]
    assert len(train) == 1, f"train samples: {counts}"
    assert len(store.keys("train")) == 5
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("qrpo").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("qrpo.sweep") == "true")
    rows = list(csv.DictReader(io.StringIO(open(client.download_artifacts(parent.info.run_id, "comparison/comparison.csv")).read())))
    assert sorted(int(r["M"]) for r in rows) == [1, 2, 4, 8, 16] and {r["method"] for r in rows} == {"qrpo-identity"}
    assert [r["run"] for r in rows if r["diff_vs_baseline"] == ""] == ["qrpo-M1"]
    assert all(r["mde"] != "" and r["quantile_diff_vs_baseline"] != "" for r in rows if r["run"] != "qrpo-M1")
    assert parent.data.params["compare.baseline"] == "qrpo-M1"
    assert "comparison/reward_vs_M.png" in {f.path for f in client.list_artifacts(parent.info.run_id, "comparison")}
    assert "vs the baseline arm qrpo-M1 (qrpo-identity, compare.baseline)" in proc.stdout
