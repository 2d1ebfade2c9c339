"""qrpo.evaluation.paired: arm-against-arm differences against scipy's paired t-test, Holm against its
definition, and the minimum detectable difference against the exact power of the noncentral t."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from qrpo.errors import InputError
from qrpo.evaluation.paired import (
    compare_arms, holm, minimum_detectable_difference, paired_difference, per_prompt_means, power_line, prompts_needed,
)


def exact_power(difference: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at a true mean difference, from the noncentral t."""
    df, nc = n - 1, difference / (sd / math.sqrt(n))
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def test_per_prompt_means_average_every_seed_and_sample_of_a_prompt_first():
    means = per_prompt_means(["a", "b", "a", "a", "b"], [1.0, 4.0, 2.0, 6.0, 0.0])
    assert means == {"a": 3.0, "b": 2.0}
    with pytest.raises(InputError, match="3 prompt ids but 2 values"):
        per_prompt_means(["a", "b", "c"], [1.0, 2.0])


def test_paired_difference_is_scipys_paired_t_test_on_the_shared_prompts():
    rng = np.random.default_rng(0)
    prompts = [f"p{i}" for i in range(24)]
    base = rng.normal(0.3, 0.5, 24)  # a large prompt-to-prompt spread, shared by both arms
    arm = base + rng.normal(0.05, 0.05, 24)
    a, b = dict(zip(prompts, arm)), dict(zip(prompts, base))
    a["only_in_arm"] = 99.0  # a prompt the baseline lacks takes no part
    result = paired_difference(a, b)
    reference = stats.ttest_rel(arm, base)
    interval = reference.confidence_interval(0.95)
    assert result.num_prompts == 24
    assert result.diff == pytest.approx(float(np.mean(arm - base)), rel=1e-12)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    assert (result.ci_low, result.ci_high) == pytest.approx((interval.low, interval.high), rel=1e-9)
    assert result.sd == pytest.approx(float(np.std(arm - base, ddof=1)), rel=1e-12)
    # the point of pairing: the unpaired test sees the shared spread and cannot tell the arms apart
    assert result.p_value < 0.01 < stats.ttest_ind(arm, base).pvalue


def _simulated_arms(rng, shift: float, prompts: int = 24, samples: int = 4):
    """Two arms evaluated on the same prompts as the pipeline does: a prompt effect both share (sd 0.5), each
    sample its own noise (sd 0.3), the arm `shift` above the baseline; per-prompt means as per_prompt.csv has."""
    effect = np.repeat(rng.normal(0, 0.5, prompts), samples)
    ids = np.repeat([f"p{i}" for i in range(prompts)], samples).tolist()
    arm = per_prompt_means(ids, (effect + shift + rng.normal(0, 0.3, effect.size)).tolist())
    baseline = per_prompt_means(ids, (effect + rng.normal(0, 0.3, effect.size)).tolist())
    return arm, baseline


def test_paired_interval_covers_a_known_difference_and_is_narrower_than_the_unpaired_one():
    """2,000 simulated comparisons with a true difference of 0.05: the 95% paired interval covers it in >= 93% of
    them, and on these correlated arms (the prompt effect is shared) it is far narrower than two-sample t's."""
    rng = np.random.default_rng(7)
    covered, paired_widths, unpaired_widths = 0, [], []
    for _ in range(2000):
        arm, baseline = _simulated_arms(rng, 0.05)
        result = paired_difference(arm, baseline)
        covered += result.ci_low <= 0.05 <= result.ci_high
        paired_widths.append(result.ci_high - result.ci_low)
        unpaired = stats.ttest_ind(list(arm.values()), list(baseline.values())).confidence_interval(0.95)
        unpaired_widths.append(unpaired.high - unpaired.low)
    assert 0.93 <= covered / 2000 <= 0.97
    assert np.mean(paired_widths) < 0.5 * np.mean(unpaired_widths)


def test_the_mde_sits_at_80_percent_on_a_simulated_power_curve():
    """Rejections at the 5% level of simulated comparisons (the pipeline's per-prompt means, 24 prompts) with a
    true difference of 0, mde/2 and mde, where mde comes from the spread of the paired differences: 80% +- 3
    points at the mde, about 5% at no difference."""
    rng = np.random.default_rng(11)
    sd = math.sqrt(2 * 0.3 ** 2 / 4)  # per-prompt difference of two 4-sample means; the shared prompt effect cancels
    mde = minimum_detectable_difference(sd, 24)
    rate = {}
    for fraction in (0.0, 0.5, 1.0):
        rejected = sum(paired_difference(*_simulated_arms(rng, fraction * mde)).p_value < 0.05 for _ in range(2000))
        rate[fraction] = rejected / 2000
    assert abs(rate[1.0] - 0.80) <= 0.03, rate
    assert 0.2 < rate[0.5] < 0.4 and rate[0.0] < 0.075, rate


def test_paired_difference_edge_cases():
    with pytest.raises(InputError, match="share no prompt"):
        paired_difference({"a": 1.0}, {"b": 1.0})
    one = paired_difference({"a": 2.0}, {"a": 1.0})
    assert one.diff == 1.0 and one.num_prompts == 1 and math.isnan(one.p_value) and math.isnan(one.mde)
    shifted = paired_difference({"a": 2.0, "b": 3.0}, {"a": 1.0, "b": 2.0})  # every prompt up by exactly 1
    assert (shifted.diff, shifted.ci_low, shifted.ci_high, shifted.p_value, shifted.mde) == (1.0, 1.0, 1.0, 0.0, 0.0)
    same = paired_difference({"a": 2.0, "b": 3.0}, {"a": 2.0, "b": 3.0})
    assert (same.diff, same.p_value) == (0.0, 1.0)


def test_holm_step_down_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, max(.., 2*0.03), max(.., 1*0.04)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], rel=1e-12)
    assert holm([0.5, 0.9]) == [1.0, 1.0], "adjusted p-values are clipped at 1"
    assert holm([0.02]) == [0.02]
    adjusted = holm([0.01, float("nan"), 0.02])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


@pytest.mark.parametrize("n", [8, 24, 200])
def test_the_minimum_detectable_difference_has_about_80_percent_power(n):
    sd = 0.3
    mde = minimum_detectable_difference(sd, n)
    assert 0.77 < exact_power(mde, sd, n) < 0.81
    assert exact_power(0.5 * mde, sd, n) < 0.35, "half of it is detected far less often"
    assert math.isnan(minimum_detectable_difference(sd, 1))


def test_prompts_needed_is_the_smallest_count_whose_mde_is_small_enough():
    sd, target = 0.3, 0.05
    n = prompts_needed(sd, target)
    assert minimum_detectable_difference(sd, n) <= target < minimum_detectable_difference(sd, n - 1)
    assert prompts_needed(0.0, 0.01) == 2
    with pytest.raises(InputError, match="positive difference"):
        prompts_needed(sd, 0.0)


def _arms(seed=1, n=30):
    rng = np.random.default_rng(seed)
    prompts = [f"p{i}" for i in range(n)]
    base = rng.normal(0.0, 1.0, n)
    return {name: dict(zip(prompts, base + shift + rng.normal(0, 0.1, n)))
            for name, shift in (("dpo", 0.0), ("qrpo", 0.1), ("simpo", 0.02))}


def test_compare_arms_against_a_baseline_adjusts_across_the_table():
    arms = _arms()
    rows = compare_arms(arms, baseline="dpo")
    assert [(r["arm"], r["baseline"]) for r in rows] == [("qrpo", "dpo"), ("simpo", "dpo")]
    raw = [paired_difference(arms[r["arm"]], arms["dpo"]) for r in rows]
    assert [r["diff_vs_baseline"] for r in rows] == [x.diff for x in raw]
    assert [r["diff_p_holm"] for r in rows] == holm([x.p_value for x in raw])
    assert all(r["diff_ci_low"] < r["diff_vs_baseline"] < r["diff_ci_high"] for r in rows)
    assert rows[0]["diff_p_holm"] < 0.05 and rows[0]["diff_ci_low"] > 0, "a 0.1 shift with 0.1 paired noise is clear"
    with pytest.raises(InputError, match="compare.baseline='ipo' is not one of the arms: dpo, qrpo, simpo"):
        compare_arms(arms, baseline="ipo")


def test_compare_arms_all_pairs_and_the_power_line():
    rows = compare_arms(_arms(), baseline=None)
    assert [(r["arm"], r["baseline"]) for r in rows] == [("dpo", "qrpo"), ("dpo", "simpo"), ("qrpo", "simpo")]
    worst = max(r["mde"] for r in rows)
    line = power_line(rows, target=worst / 2)
    assert line.startswith(f"power: this comparison detects differences >= {worst:.4g} (80% power, 5% level, 30 prompts)")
    sd = max(rows, key=lambda r: r["mde"])["diff_sd"]
    assert line.endswith(f"; to detect {worst / 2:.4g} it needs {prompts_needed(sd, worst / 2)} eval prompts")
    assert power_line(rows, target=2 * worst).endswith("prompts)"), "a difference it already detects needs nothing more"
    assert power_line([{"mde": float("nan"), "num_prompts": 1}]).startswith("power: fewer than two shared prompts")


def test_power_line_says_what_the_largest_unresolved_difference_would_need():
    """Without a target the line names the largest |diff| below its own mde (here 0.03 of the three), at that
    comparison's spread; a table whose every difference is resolved (or zero) adds nothing."""
    rows = [{"arm": "a", "diff_vs_baseline": 0.5, "mde": 0.1, "diff_sd": 0.2, "num_prompts": 24},   # resolved
            {"arm": "b", "diff_vs_baseline": -0.03, "mde": 0.09, "diff_sd": 0.15, "num_prompts": 24},
            {"arm": "c", "diff_vs_baseline": 0.02, "mde": 0.08, "diff_sd": 0.13, "num_prompts": 24}]
    line = power_line(rows)
    assert line.startswith("power: this comparison detects differences >= 0.1 (80% power, 5% level, 24 prompts)")
    assert line.endswith(f"; to detect 0.03 (the largest difference seen and not resolved) it needs {prompts_needed(0.15, 0.03)} eval prompts")
    assert prompts_needed(0.15, 0.03) > 24
    assert "needs" not in power_line([rows[0], {**rows[1], "diff_vs_baseline": 0.0}])


def test_per_prompt_table_keeps_the_reporting_half_and_averages_its_samples(tmp_path):
    import pyarrow as pa

    from qrpo.evaluation.paired import per_prompt_table, read_per_prompt, write_per_prompt

    evaluated = pa.table({"prompt_id": ["a", "b", "a", "c", "b"], "half": ["reporting", "selection", "reporting", "reporting", "selection"],
                          "reward": [1.0, 9.0, 3.0, 0.5, 9.0], "ref_quantile": [0.25, 1.0, 0.75, 0.5, 1.0], "seed": [0, 0, 1, 0, 1],
                          "policy_logp": [-1.0, -2.0, -3.0, -4.0, -5.0], "ref_logp": [-1.5, -2.0, -3.0, -4.0, -5.0]})
    k3 = math.expm1(-0.5) + 0.5  # log ratio +0.5 for a's first sample, 0 for the others
    rows = per_prompt_table(evaluated)
    assert rows == [{"prompt_id": "a", "reward": 2.0, "ref_quantile": 0.5, "kl_k3": pytest.approx(k3 / 2, rel=1e-12)},
                    {"prompt_id": "c", "reward": 0.5, "ref_quantile": 0.5, "kl_k3": 0.0}]
    write_per_prompt(rows, tmp_path / "per_prompt.csv")
    assert read_per_prompt(tmp_path / "per_prompt.csv") == {"a": 2.0, "c": 0.5}
    assert read_per_prompt(tmp_path / "per_prompt.csv", "ref_quantile") == {"a": 0.5, "c": 0.5}
    assert read_per_prompt(tmp_path / "per_prompt.csv", "kl_k3") == pytest.approx({"a": k3 / 2, "c": 0.0}, rel=1e-12)
    # an evaluate table with per-sample length-controlled rewards: their per-prompt means too
    with_lc = per_prompt_table(evaluated.append_column("reward_lc", pa.array([0.5, 7.0, 1.5, 0.25, 7.0])))
    assert [(r["prompt_id"], r["reward_lc"]) for r in with_lc] == [("a", 1.0), ("c", 0.25)]
    write_per_prompt(with_lc, tmp_path / "with_lc.csv")
    assert read_per_prompt(tmp_path / "with_lc.csv", "reward_lc") == {"a": 1.0, "c": 0.25}
