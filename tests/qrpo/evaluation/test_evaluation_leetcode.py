"""LeetCode pass rates from scored code samples (reward = fraction of unit tests passed), worked by hand."""

import numpy as np
import pyarrow as pa
import pytest

from qrpo.errors import InputError
from qrpo.evaluation import leetcode_metrics, pass_rates

PROMPTS = pa.table({"prompt_id": ["e1", "e2", "m1", "h1"], "prompt": ["..."] * 4, "split": ["eval"] * 4,
                    "difficulty": ["Easy", "Easy", "Medium", "Hard"]})


def test_pass_rates_overall_and_per_difficulty():
    """e1: 1, 1 (both full) -> pass 1, full 1;  e2: 0.5, 1 -> .75, .5;  m1: 0, 0.25 -> .125, 0;  h1: 1/3 -> 1/3, 0."""
    scored = pa.table({"prompt_id": ["e1", "e1", "e2", "e2", "m1", "m1", "h1"],
                       "reward": [1.0, 1.0, 0.5, 1.0, 0.0, 0.25, 1 / 3], "seed": [1, 2, 1, 2, 1, 2, 1]})
    m = pass_rates(scored, PROMPTS)
    assert m["leetcode_pass_rate"] == pytest.approx((1 + 0.75 + 0.125 + 1 / 3) / 4)
    assert m["leetcode_full_pass_rate"] == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    assert m["leetcode_pass_rate_easy"] == pytest.approx(0.875) and m["leetcode_full_pass_rate_easy"] == pytest.approx(0.75)
    assert m["leetcode_pass_rate_medium"] == pytest.approx(0.125) and m["leetcode_full_pass_rate_medium"] == 0
    assert m["leetcode_pass_rate_hard"] == pytest.approx(1 / 3) and m["leetcode_problems_hard"] == 1
    assert m["leetcode_pass_rate_se"] == pytest.approx(np.std([1, 0.75, 0.125, 1 / 3], ddof=1) / 2)
    assert np.isnan(m["leetcode_pass_rate_hard_se"])  # one problem: no standard error


def test_pass_rates_by_half_cover_every_problem_once():
    scored = pa.table({"prompt_id": ["e1", "e2", "m1", "h1"], "reward": [1.0, 0.0, 0.5, 1.0]})
    m = leetcode_metrics(scored, PROMPTS, split_seed=0)
    assert m["eval/leetcode_problems"] + m["eval_selection/leetcode_problems"] == 4
    assert {k for k in m if k.startswith("eval/leetcode_pass_rate")} >= {"eval/leetcode_pass_rate"}


def test_bad_inputs_are_input_errors():
    with pytest.raises(InputError, match="difficulty"):
        pass_rates(pa.table({"prompt_id": ["e1"], "reward": [1.0]}), PROMPTS.drop_columns(["difficulty"]))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        pass_rates(pa.table({"prompt_id": ["e1"], "reward": [2.0]}), PROMPTS)
    with pytest.raises(InputError, match="not in the prompt table"):
        pass_rates(pa.table({"prompt_id": ["zz"], "reward": [1.0]}), PROMPTS)
