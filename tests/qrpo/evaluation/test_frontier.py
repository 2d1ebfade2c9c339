"""qrpo.evaluation.frontier: each method's reward read at one common KL along its own frontier, with a
paired bootstrap interval over prompts."""

from __future__ import annotations

import numpy as np
import pytest

from qrpo.errors import InputError
from qrpo.evaluation.frontier import common_kl, reward_at_kl, reward_at_kl_lines

PROMPTS = [f"p{i}" for i in range(10)]


def run(reward: float, kl: float, noise: float = 0.0, seed: int = 0):
    """One run's per-prompt means: constant over prompts (plus zero-mean noise when asked)."""
    e = np.random.default_rng(seed).normal(0, noise, len(PROMPTS)) if noise else np.zeros(len(PROMPTS))
    e -= e.mean()
    return dict(zip(PROMPTS, reward + e)), dict(zip(PROMPTS, kl + 0 * e))


def test_each_method_is_read_at_the_middle_of_the_common_kl_range_by_straight_lines():
    methods = {"qrpo": [run(0.3, 0.5), run(0.1, 0.1)],  # given out of KL order on purpose
               "dpo": [run(0.0, 0.2), run(0.6, 0.8), run(0.9, 1.4)],
               "sft": [run(0.5, 0.3)]}  # one run: no frontier, no reading
    assert common_kl({k: v for k, v in methods.items() if k != "sft"}) == pytest.approx(0.35)
    result = reward_at_kl(methods, num_bootstrap=50)
    assert result["kl"] == pytest.approx(0.35) and result["num_prompts"] == 10 and set(result["methods"]) == {"qrpo", "dpo"}
    qrpo, dpo = result["methods"]["qrpo"], result["methods"]["dpo"]
    assert qrpo["reward_at_kl"] == pytest.approx(0.1 + 0.5 * 0.25)  # slope 0.2 / 0.4 from (0.1, 0.1)
    assert dpo["reward_at_kl"] == pytest.approx(0.15) and dpo["num_runs"] == 3
    assert (qrpo["ci_low"], qrpo["ci_high"]) == pytest.approx((qrpo["reward_at_kl"],) * 2), "no spread over prompts: no width"
    assert reward_at_kl(methods, target=0.5, num_bootstrap=10)["methods"]["qrpo"]["reward_at_kl"] == pytest.approx(0.3)


def test_the_bootstrap_interval_covers_the_reading_and_widens_with_the_spread():
    narrow = reward_at_kl({"qrpo": [run(0.1, 0.1, 0.05, 1), run(0.3, 0.5, 0.05, 2)]}, num_bootstrap=400)["methods"]["qrpo"]
    wide = reward_at_kl({"qrpo": [run(0.1, 0.1, 0.5, 1), run(0.3, 0.5, 0.5, 2)]}, num_bootstrap=400)["methods"]["qrpo"]
    for r in (narrow, wide):
        assert r["ci_low"] < r["reward_at_kl"] < r["ci_high"]
    assert (wide["ci_high"] - wide["ci_low"]) > 5 * (narrow["ci_high"] - narrow["ci_low"])


def test_no_common_kl_and_no_shared_prompts():
    apart = {"qrpo": [run(0.1, 0.1), run(0.2, 0.2)], "dpo": [run(0.5, 0.6), run(0.7, 0.9)]}
    assert reward_at_kl(apart) == {"kl": None, "methods": {}}
    assert reward_at_kl({"sft": [run(0.5, 0.3)]}) == {"kl": None, "methods": {}}
    assert reward_at_kl_lines({"kl": None, "methods": {}}) == ""
    lonely = ({"x": 1.0}, {"x": 0.1})
    with pytest.raises(InputError, match="fewer than two prompts"):
        reward_at_kl({"qrpo": [lonely, run(0.3, 0.5)]})


def test_the_lines_name_the_kl_and_each_method():
    result = reward_at_kl({"qrpo": [run(0.1, 0.1), run(0.3, 0.5)]}, num_bootstrap=10)
    assert reward_at_kl_lines(result) == (
        "reward at equal KL (k3 = 0.3 nats, each method's frontier interpolated; 95% paired bootstrap over 10 prompts):\n"
        "  qrpo: +0.2000 [+0.2000, +0.2000] (2 runs)")
