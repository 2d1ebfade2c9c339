"""The evaluation plots are written as images: reward vs KL (one run and a sweep's frontier), reward vs
length, the reference-quantile histogram, training curves with the eval points."""

import numpy as np
import pyarrow as pa
from PIL import Image

from qrpo.evaluation import report

POINT = {"reward_mean": 0.3, "reward_mean_se": 0.05, "ref_reward_mean": 0.1, "ref_reward_mean_se": 0.04,
         "kl_k3": 0.8, "kl_k3_se": 0.1}


def _is_image(path):
    with Image.open(path) as image:
        return image.size[0] > 100 and image.size[1] > 100


def test_evaluation_plots_are_written(tmp_path):
    rng = np.random.default_rng(0)
    samples = lambda n: pa.table({"num_tokens": rng.integers(5, 30, n), "reward": rng.normal(size=n)})  # noqa: E731
    report.plot_reward_vs_kl([{**POINT, "label": "QRPO (β=0.1)"}], tmp_path / "one.png", "one run")
    sweep = [{**POINT, "kl_k3": k, "reward_mean": r, "label": f"β={b}"} for k, r, b in ((0.2, 0.15, 1), (0.8, 0.3, 0.1), (1.5, 0.25, 0.01))]
    report.plot_reward_vs_kl(sweep, tmp_path / "sweep.png", "sweep")
    report.plot_reward_vs_length(samples(40), samples(80), tmp_path / "length.png", "length")
    report.plot_quantile_histogram(rng.uniform(size=50), tmp_path / "quantiles.png", "quantiles")
    history = pa.table({"step": [1, 2, 3], "loss": [1.0, 0.5, 0.2], "learning_rate": [1e-5] * 3})
    report.plot_training(history, tmp_path / "training.png", "training", eval_points={**POINT, "reward_mean_se": float("nan")})
    for name in ("one", "sweep", "length", "quantiles", "training"):
        assert _is_image(tmp_path / f"{name}.png"), name
