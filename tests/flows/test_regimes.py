"""The pointwise regime through the real flow: QRPO trains on single completions, a pair method refuses."""

import subprocess
import sys

from mlflow.tracking import MlflowClient

from flows.pipeline import qrpo_pipeline
from qrpo.store.artifacts import ArtifactStore


def test_smoke_pipeline_runs_end_to_end_in_the_pointwise_regime(prefect_server, qrpo_home):
    summary = qrpo_pipeline(["experiment=smoke", "regime=pointwise"])
    store = ArtifactStore(qrpo_home / "artifacts")
    table = store.require("training_data", summary["artifacts"]["training_data"]).table()
    assert "completion_ids" in table.column_names and "chosen_ids" not in table.column_names
    assert table.num_rows == 16 * 3  # every one of the K = 3 candidates of the 16 train prompts
    run = MlflowClient(summary["tracking_uri"]).get_run(summary["mlflow_run_id"])
    metrics = run.data.metrics
    assert metrics["training_data/examples"] == 48 and "train/quantile" in metrics and "train/residual_abs" in metrics
    assert sum(metrics[f"training_data/quantile_hist_{i:02d}"] for i in range(10)) == 48
    files = {f.path for f in MlflowClient(summary["tracking_uri"]).list_artifacts(run.info.run_id, "training_data")}
    assert "training_data/training_quantiles.png" in files


def test_reference_free_method_skips_the_reference_log_prob_step(prefect_server, qrpo_home):
    summary = qrpo_pipeline(["experiment=smoke", "algorithm=simpo"])
    assert "ref_logps" not in summary["artifacts"]
    assert not (qrpo_home / "artifacts" / "ref_logps").exists()


def test_pair_method_with_the_pointwise_regime_fails_with_one_clear_line(qrpo_home):
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from flows.cli import main; sys.argv[0]='qrpo-pipeline'; main()",
         "experiment=smoke", "regime=pointwise", "algorithm=dpo"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: algorithm dpo needs preference pairs")
    assert not qrpo_home.exists()


def test_the_default_regime_is_pointwise_for_qrpo_and_best_worst_for_pair_methods():
    from flows.config import compose_config

    assert compose_config([])["regime"]["name"] == "pointwise"
    assert compose_config([])["regime"]["leave_one_out"] is True
    for method in ("dpo", "simpo", "rebel", "sft"):
        regime = compose_config([f"algorithm={method}"])["regime"]
        assert (regime["name"], regime["leave_one_out"]) == ("best_worst", False), method
    assert compose_config(["regime=random_pairs", "algorithm=dpo"])["regime"]["name"] == "random_pairs", "explicit choices stay"
    assert compose_config(["regime.leave_one_out=false"])["regime"] == {**compose_config([])["regime"], "leave_one_out": False}
