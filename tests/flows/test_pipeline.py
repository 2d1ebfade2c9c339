"""The smoke experiment through the real Prefect flow, a real MLflow SQLite store and real tiny models."""

import pytest
from mlflow.tracking import MlflowClient

from flows.pipeline import qrpo_pipeline
from qrpo.store.artifacts import ArtifactStore
from qrpo.precision import resolve

# the summary's keys: each step by its name (and its instance where it runs more than once); the artifact
# folder is the step's name
STEPS = ["prepare_model", "load_dataset", "sample/train", "sample/eval_reference", "score/train", "score/eval_reference",
         "training_data", "ref_logps", "train", "sample/eval_policy_seed1", "score/eval_policy_seed1", "sample/eval_policy_seed2",
         "score/eval_policy_seed2", "eval_logps", "evaluate"]
# every eval/... metric that applies to the smoke run (no AlpacaEval, no code task)
EVAL_METRICS = ("reward_mean", "reward_gain", "reward_gain_ci_low", "reward_gain_ci_high", "win_rate_vs_ref", "length_mean",
                "kl_k1", "kl_k3", "reward_lc_mean", "quantile_mean", "reward_mean_se", "reward_gain_se", "kl_k1_se",
                "kl_k3_se", "ref_reward_mean", "ref_length_mean")
SECRET = "hf_supersecret_value_123"


@pytest.fixture(scope="module")
def runs(prefect_server, judge, tmp_path_factory):
    """First run, identical re-run, and a run that changes beta and adds AlpacaEval 2 (a local judge), in one QRPO_HOME."""
    import os

    home = tmp_path_factory.mktemp("home")
    saved = {k: os.environ.get(k) for k in ("QRPO_HOME", "HF_TOKEN")}
    os.environ["QRPO_HOME"], os.environ["HF_TOKEN"] = str(home), SECRET
    try:
        # secrets come from the environment; two evaluation seeds (a Hydra list override)
        base = ["experiment=smoke", "+secrets.hf_token=${oc.env:HF_TOKEN}", "eval.seeds=[1,2]"]
        first = qrpo_pipeline(base)
        again = qrpo_pipeline(base)
        base_url, judge_model = judge
        alpaca = ["eval.alpaca_eval.enabled=true", f"eval.alpaca_eval.judge_base_url={base_url}",
                  f"eval.alpaca_eval.judge_model={judge_model}", "eval.alpaca_eval.max_instances=8", "eval.alpaca_eval.max_new_tokens=16"]
        new_beta = qrpo_pipeline(base + ["algorithm.beta=0.2"] + alpaca)
        yield home, first, again, new_beta
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def test_first_run_writes_every_artifact_with_a_manifest(runs):
    home, first, _, _ = runs
    store = ArtifactStore(home / "artifacts")
    assert set(first["artifacts"]) == set(STEPS)
    for name in STEPS:
        artifact = store.get(name.split("/")[0], first["artifacts"][name])
        assert artifact is not None, f"{name} artifact missing"
        assert artifact.manifest["files"], f"{name} artifact is empty"
    assert not list((home / "artifacts" / ".tmp").iterdir()), "a temporary folder was left behind"
    assert first["cached_steps"] == []


def test_first_run_logs_metrics_params_tags_and_plots_to_mlflow(runs):
    _, first, _, _ = runs
    client = MlflowClient(first["tracking_uri"])
    run = client.get_run(first["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for name in tuple(f"{prefix}{m}" for m in EVAL_METRICS for prefix in ("eval/", "eval_selection/")) + (
                 "eval/num_seeds", "sample/eval_policy_seed1/completions", "score/eval_policy_seed2/reward_mean",
                 "sample/eval_reference/completions", "eval_logps/policy_logp_mean", "train/loss", "train/final_loss", "training_data/examples", "sample/train/completions",
                 "score/train/reward_mean", "ref_logps/ref_logp_mean", "prepare_model/parameters"):
        assert name in metrics, f"metric {name} not logged"
    assert metrics["eval/num_seeds"] == 2 and metrics["eval/num_prompts"] + metrics["eval_selection/num_prompts"] == 8
    assert metrics["eval/reward_gain_ci_low"] < metrics["eval/reward_gain"] < metrics["eval/reward_gain_ci_high"]
    assert metrics["sample/eval_policy_seed1/completions"] == 8 * 2  # eval prompts x samples_per_prompt
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(history) == int(metrics["train/steps"]) and len(history) > 1
    assert run.data.tags["algorithm"] == "qrpo"
    assert run.data.tags["num_ref_samples"] == "4"
    assert run.data.tags["model"] == "tiny-llama"
    assert run.data.params["algorithm.beta"] == "0.1"
    # precision=auto is logged as asked and as resolved on this machine (bf16 where the CPU has bf16 matmul)
    assert run.data.params["precision"] == "auto"
    assert run.data.params["precision_used"] == run.data.tags["precision"] == resolve("auto")
    files = {f.path for f in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/training_curves.png", "report/eval_rewards.png", "report/summary.md", "report/reward_vs_kl.png",
            "report/reward_vs_length.png", "report/quantile_histogram.png"} <= files


def test_summary_names_the_method_and_prints_the_gain_with_its_interval(runs):
    from flows.cli import format_summary

    _, first, _, new_beta = runs
    text = format_summary(first)
    m = first["metrics"]
    assert "QRPO (β=0.1, identity) finished" in text and "QRPO (β=0.2, identity) finished" in format_summary(new_beta)
    assert f"95% interval [{m['reward_gain_ci_low']:+.4f}, {m['reward_gain_ci_high']:+.4f}]" in text
    within = m["reward_gain_ci_low"] <= 0 <= m["reward_gain_ci_high"]
    assert ("within noise" in text) == within
    assert "k1" in text and "k3" in text and "2 seed(s)" in text
    assert set(first["selection_metrics"]) == set(m) and first["selection_metrics"] != m


def test_alpaca_eval_through_the_pipeline_logs_both_win_rates(runs):
    from flows.cli import format_summary

    _, first, _, with_alpaca = runs
    metrics = MlflowClient(with_alpaca["tracking_uri"]).get_run(with_alpaca["mlflow_run_id"]).data.metrics
    for name in ("eval/alpaca_eval_lc_win_rate", "eval/alpaca_eval_win_rate", "eval/alpaca_eval_lc_win_rate_se",
                 "eval/alpaca_eval_win_rate_se"):
        assert name in metrics and 0 <= metrics[name] <= 100, name
    assert metrics["sample/alpaca_eval/completions"] == 8 and metrics["eval/alpaca_eval_num_judged"] == 8
    assert "AlpacaEval 2      LC win rate" in format_summary(with_alpaca)
    assert not any("alpaca" in k for k in first["metrics"])  # off by default


def test_secrets_never_reach_mlflow(runs):
    _, first, _, _ = runs
    client = MlflowClient(first["tracking_uri"])
    run = client.get_run(first["mlflow_run_id"])
    assert run.data.params["secrets.hf_token"] == "***"
    assert all(SECRET not in value for value in run.data.params.values())
    local = client.download_artifacts(run.info.run_id, "config.yaml")
    text = open(local).read()
    assert SECRET not in text and "secrets" in text
    for name in ("report/summary.md",):
        assert SECRET not in open(client.download_artifacts(run.info.run_id, name)).read()


def test_secrets_never_reach_prefect_parameters(runs):
    from prefect.client.orchestration import get_client

    _, first, _, _ = runs
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(first["flow_run_id"])
    assert SECRET not in str(flow_run.parameters)


def test_identical_rerun_is_fully_cached(runs):
    home, first, again, _ = runs
    assert sorted(again["cached_steps"]) == sorted(STEPS)
    assert again["artifacts"] == first["artifacts"]
    assert again["metrics"] == first["metrics"]
    assert again["mlflow_run_id"] != first["mlflow_run_id"]
    client = MlflowClient(again["tracking_uri"])
    run = client.get_run(again["mlflow_run_id"])
    assert "eval/reward_mean" in run.data.metrics and "train/loss" in run.data.metrics
    # the report is an artifact too: drawn once, the re-run logs the same files (and not the store's manifest)
    logged = {i: {f.path for f in client.list_artifacts(r, "report")} for i, r in (("first", first["mlflow_run_id"]), ("again", run.info.run_id))}
    assert logged["again"] == logged["first"] and "report/summary.md" in logged["again"] and "report/manifest.json" not in logged["again"]
    summaries = [open(client.download_artifacts(r, "report/summary.md")).read() for r in (first["mlflow_run_id"], run.info.run_id)]
    assert summaries[0] == summaries[1]
    assert len(ArtifactStore(home / "artifacts").keys("report")) == 2  # the first run's (re-used by the re-run) and new_beta's


def test_changing_only_beta_reruns_train_and_evaluate_only(runs):
    _, first, _, new_beta = runs
    evaluation = {name for name in STEPS if "eval_policy" in name or name in ("eval_logps", "evaluate")}
    assert set(STEPS) - set(new_beta["cached_steps"]) == {"train"} | evaluation
    assert {"load_alpaca_eval", "sample/alpaca_eval", "alpaca_eval"} <= set(new_beta["artifacts"]) - set(new_beta["cached_steps"])
    assert new_beta["artifacts"]["train"] != first["artifacts"]["train"]
    assert new_beta["artifacts"]["training_data"] == first["artifacts"]["training_data"]


def test_prefect_records_every_step_and_marks_cached_ones(runs):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    _, first, again, _ = runs

    def task_states(flow_run_id):
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        return [(r.name.split("/")[0] if "/" in r.name else r.name.rsplit("-", 1)[0], r.state.name) for r in runs]

    first_states, again_states = task_states(first["flow_run_id"]), task_states(again["flow_run_id"])
    step_tasks = {"prepare_model", "load_dataset", "sample", "score", "training_data", "ref_logps", "train",
                  "eval_logps", "evaluate"}
    assert {name for name, _ in first_states} >= step_tasks | {"report"}
    assert all(state == "Completed" for name, state in first_states)
    assert all(state == "Cached" for name, state in again_states if name in step_tasks)
    assert len([1 for name, _ in again_states if name in step_tasks]) == len(STEPS)
