"""Extending the platform from outside the package, as docs/architecture.md says: a method is one class and
one YAML, a reward is one class and one YAML, both found through `_target_` and Hydra's search path, and
`experiment=smoke` runs with them end to end (the real flow, a real MLflow store)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]

EXTENSION = '''
import numpy as np

from qrpo.objective.algorithms import Algorithm
from qrpo.rewards.base import RewardModel


class RewardRegression(Algorithm):
    """A toy method: regress beta log(pi/pi_ref) of each single completion onto its raw reward."""

    name = "reward_regression"
    needs_pairs = False  # trains on single completions: regime=auto gives it the pointwise regime

    def __init__(self, beta: float = 0.1):
        self.beta = beta

    def __call__(self, batch):
        residual = self.beta * (batch.policy_logps - batch.ref_logps) - batch.rewards
        return residual ** 2, {"toy_residual": residual.detach()}


class LengthReward(RewardModel):
    """A toy reward: the completion's length in hundreds of characters."""

    def __init__(self, scale: float):
        self.scale = scale

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.score_max)

    def score(self, prompts, completions):
        return np.array([len(text) / self.scale for text in completions], dtype=np.float64)
'''


def test_a_method_and_a_reward_of_your_own_run_the_smoke_experiment(tmp_path):
    (tmp_path / "my_extension.py").write_text(EXTENSION)
    conf = tmp_path / "conf"
    (conf / "algorithm").mkdir(parents=True)
    (conf / "reward").mkdir()
    (conf / "algorithm" / "reward_regression.yaml").write_text(textwrap.dedent("""\
        # qrpo-pipeline hydra.searchpath=[file://<this conf>] algorithm=reward_regression
        _target_: my_extension.RewardRegression
        beta: 0.2
    """))
    (conf / "reward" / "length.yaml").write_text(textwrap.dedent("""\
        # qrpo-pipeline hydra.searchpath=[file://<this conf>] reward=length
        name: length
        kind: null           # none of the built-in families: its own class reads the section (score_max: the scale)
        _target_: my_extension.LengthReward.from_config
        score_max: 100.0
    """))
    home = tmp_path / "home"
    env = {**os.environ, "QRPO_HOME": str(home), "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-c", "import sys; from flows.cli import main; sys.argv[0] = 'qrpo-pipeline'; main()",
               "experiment=smoke", f"hydra.searchpath=[file://{conf}]", "algorithm=reward_regression", "reward=length"]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("qrpo").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["algorithm"] == "rewardregression" and run.data.tags["reward"] == "length"
    assert run.data.params["regime.name"] == "pointwise", "regime=auto reads needs_pairs from the class"
    assert "train/toy_residual" in run.data.metrics and "eval/reward_mean" in run.data.metrics
    # the rewards the run trained and evaluated on are the toy reward's: length / 100
    scored = [pq.read_table(p / "data.parquet") for p in (home / "artifacts" / "score").iterdir() if (p / "data.parquet").exists()]
    assert scored and all(
        r == len(c) / 100.0 for t in scored for r, c in zip(t.column("reward").to_pylist(), t.column("completion").to_pylist()))
