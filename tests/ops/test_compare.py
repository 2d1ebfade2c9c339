"""`qrpo-compare` on a real MLflow SQLite store holding runs logged here."""

import csv
import io

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from flows.compare import main


def log_run(client, experiment_id, *, algorithm, dataset, beta, metrics, parent=None, status="FINISHED"):
    tags = {"algorithm": algorithm, "dataset": dataset}
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(experiment_id, tags=tags)
    client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
                     params=[Param("algorithm.beta", str(beta)), Param("train.learning_rate", "1e-05"),
                             Param("sampler.num_ref_samples", "4")])
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        yield _fill(uri, tmp_path)


def _fill(uri, tmp_path):
    client = MlflowClient(uri)
    exp = client.create_experiment("paper", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, tags={"qrpo.sweep": "true"}).info.run_id
    ids = {
        # QRPO on chat: the selection half prefers beta=0.3 although its test-half reward is lower
        "qrpo_a": log_run(client, exp, algorithm="qrpo", dataset="chat", beta=0.1, parent=parent, metrics={
            "eval_selection/reward_mean": 0.20, "eval/reward_mean": 0.50, "eval/kl_k3": 0.3, "eval/reward_lc_mean": 0.45}),
        "qrpo_b": log_run(client, exp, algorithm="qrpo", dataset="chat", beta=0.3, parent=parent, metrics={
            "eval_selection/reward_mean": 0.40, "eval/reward_mean": 0.35, "eval/kl_k3": 0.1, "eval/reward_lc_mean": 0.33}),
        "dpo_chat": log_run(client, exp, algorithm="dpo", dataset="chat", beta=0.1, metrics={
            "eval/reward_mean": 0.30, "eval/kl_k3": 0.5, "eval/alpaca_eval_lc_win_rate": 0.21, "eval/alpaca_eval_win_rate": 0.19}),
        "dpo_code": log_run(client, exp, algorithm="dpo", dataset="code", beta=0.1, metrics={
            "eval/reward_mean": 0.10, "eval/kl_k3": 0.2, "eval/leetcode_pass_rate": 0.25}),
        "qrpo_failed": log_run(client, exp, algorithm="qrpo", dataset="chat", beta=1.0, status="FAILED", metrics={
            "eval_selection/reward_mean": 9.0, "eval/reward_mean": 9.0}),
    }
    return uri, client, parent, ids


def rows_of(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_compare_picks_the_best_config_by_the_selection_half_and_leaves_missing_metrics_blank(store, tmp_path, capsys):
    _, _, _, ids = store
    assert main(["--experiment", "paper", "--out", str(tmp_path / "out")]) == 0
    rows = {(r["method"], r["dataset"]): r for r in rows_of((tmp_path / "out" / "results.csv").read_text())}
    assert set(rows) == {("qrpo", "chat"), ("dpo", "chat"), ("dpo", "code")}
    qrpo = rows[("qrpo", "chat")]
    assert qrpo["run_id"] == ids["qrpo_b"] and float(qrpo["beta"]) == 0.3, "chosen by eval_selection, not the test half"
    assert float(qrpo["reward"]) == 0.35 and float(qrpo["lc_reward"]) == 0.33 and qrpo["selected_by"] == "eval_selection/reward_mean"
    assert qrpo["pass_rate"] == "" and qrpo["alpaca_lc"] == ""
    assert float(rows[("dpo", "chat")]["alpaca_lc"]) == 0.21 and rows[("dpo", "chat")]["selected_by"] == "eval/reward_mean"
    assert float(rows[("dpo", "code")]["pass_rate"]) == 0.25
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert markdown == capsys.readouterr().out.split("written:")[0]
    assert markdown.startswith("| method | dataset | reward | lc_reward | kl |") and markdown.count("\n") == 5


def test_compare_filters_by_parent_run_and_by_tag(store, tmp_path, capsys):
    _, _, parent, ids = store
    assert main(["--parent-run", parent, "--out", str(tmp_path / "p")]) == 0
    rows = rows_of((tmp_path / "p" / "results.csv").read_text())
    assert [(r["method"], r["run_id"]) for r in rows] == [("qrpo", ids["qrpo_b"])]
    assert main(["--experiment", "paper", "--filter", "tags.dataset = 'code'", "--out", str(tmp_path / "t")]) == 0
    assert [r["run_id"] for r in rows_of((tmp_path / "t" / "results.csv").read_text())] == [ids["dpo_code"]]


@pytest.mark.parametrize("args, message", [
    (["--experiment", "nope"], "no such MLflow experiment"),
    (["--parent-run", "0123456789abcdef"], "no such run"),
    (["--experiment", "paper", "--filter", "tags.dataset == "], "--filter"),
    (["--experiment", "paper", "--filter", "tags.dataset = 'none'"], "no finished run"),
])
def test_compare_bad_input_is_one_line_and_exit_2(store, capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
