"""Evaluation metrics: length control, KL estimators, standard errors and intervals, halves."""

import numpy as np
import pyarrow as pa
import pytest

from qrpo.errors import InputError
from qrpo.evaluation import evaluate_halves, evaluation_metrics, gain_in_words, kl_estimates, length_controlled_rewards, split_halves
from qrpo.evaluation.metrics import cluster_mean_se, kl_terms, reference_quantiles, t_interval


def _tables(rng, P=200, M=8, N=4, planted=0.0, length_shift=0.0, gain=0.0):
    """Reference and policy samples whose reward = prompt effect + planted * length + noise."""
    prompt_effect = rng.normal(0, 1, P)  # [P]
    base_length = rng.uniform(20, 60, P)  # [P]

    def draw(n, shift, extra):
        g = np.repeat(np.arange(P), n)
        length = np.round(base_length[g] + shift + rng.normal(0, 8, len(g)))
        reward = prompt_effect[g] + planted * (length - base_length[g]) / 8 + extra + rng.normal(0, 1, len(g))
        return g, length, reward

    ref_g, ref_l, ref_r = draw(M, 0.0, 0.0)
    g, l, r = draw(N, length_shift, gain)
    return g, l, r, ref_g, ref_l, ref_r


def _slope(z_r, z_l):
    return float(z_r @ z_l / (z_l @ z_l))


def _standardise(values, g, ref_values, ref_g):
    P = g.max() + 1
    mu = np.array([ref_values[ref_g == p].mean() for p in range(P)])
    sd = np.array([ref_values[ref_g == p].std(ddof=1) for p in range(P)])
    return (values - mu[g]) / sd[g]


def test_length_controlled_reward_removes_a_planted_length_effect():
    rng = np.random.default_rng(0)
    g, l, r, ref_g, ref_l, ref_r = _tables(rng, M=32, planted=0.8, length_shift=12.0)
    raw_gain = r.mean() - ref_r.mean()
    assert raw_gain > 0.8  # longer answers alone bought about 0.8 * 12 / 8 = 1.2 of reward
    lc, ref_lc, slope = length_controlled_rewards(r, l, g, ref_r, ref_l, ref_g)
    assert slope == pytest.approx(0.8 / np.sqrt(1.64), abs=0.03)  # the correlation of reward and length
    assert abs(lc.mean() - ref_lc.mean()) < 0.1  # no gain once length is controlled
    assert ref_lc.mean() == pytest.approx(ref_r.mean(), abs=1e-9)  # the reference's own mean is unchanged
    zl = np.concatenate([_standardise(l, g, ref_l, ref_g), _standardise(ref_l, ref_g, ref_l, ref_g)])
    before = np.concatenate([_standardise(r, g, ref_r, ref_g), _standardise(ref_r, ref_g, ref_r, ref_g)])
    after = np.concatenate([_standardise(lc, g, ref_r, ref_g), _standardise(ref_lc, ref_g, ref_r, ref_g)])
    assert _slope(before, zl) > 0.5 and abs(_slope(after, zl)) < 0.02  # the fit saw the reference half only
    # pooled over policy and reference samples, the remaining slope is zero by construction
    lc_all, ref_lc_all, _ = length_controlled_rewards(r, l, g, ref_r, ref_l, ref_g, fit_on="all")
    after = np.concatenate([_standardise(lc_all, g, ref_r, ref_g), _standardise(ref_lc_all, ref_g, ref_r, ref_g)])
    assert abs(_slope(after, zl)) < 1e-9 and abs(lc_all.mean() - ref_lc_all.mean()) < 0.1


def test_length_controlled_reward_leaves_a_length_free_reward_unchanged():
    rng = np.random.default_rng(1)
    g, l, r, ref_g, ref_l, ref_r = _tables(rng, planted=0.0, length_shift=12.0, gain=0.5)
    lc, _, slope = length_controlled_rewards(r, l, g, ref_r, ref_l, ref_g)
    assert abs(slope) < 0.05
    assert lc.mean() - ref_r.mean() == pytest.approx(r.mean() - ref_r.mean(), abs=0.1)  # the real gain of 0.5 stays
    # why the default fits on the reference: pooled with a longer and better policy, the slope takes up the gain
    lc_all, _, slope_all = length_controlled_rewards(r, l, g, ref_r, ref_l, ref_g, fit_on="all")
    assert slope_all > 0.1 and lc_all.mean() < r.mean() - 0.2


def test_length_controlled_reward_with_constant_lengths_changes_nothing():
    g, ref_g = np.array([0, 0, 1]), np.array([0, 0, 1, 1])
    lc, ref_lc, slope = length_controlled_rewards(np.array([1.0, 2.0, 3.0]), np.full(3, 16.0), g,
                                                  np.array([0.0, 1.0, 2.0, 5.0]), np.full(4, 16.0), ref_g)
    assert slope == 0.0 and lc.tolist() == [1.0, 2.0, 3.0] and ref_lc.tolist() == [0.0, 1.0, 2.0, 5.0]


def test_k1_and_k3_match_the_exact_kl_of_an_enumerable_distribution():
    rng = np.random.default_rng(2)
    pi = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    pi_ref = np.array([0.2, 0.2, 0.2, 0.2, 0.2])
    exact = float(np.sum(pi * np.log(pi / pi_ref)))  # 0.2626 nats
    y = rng.choice(5, size=200_000, p=pi)
    est = kl_estimates(np.log(pi[y]), np.log(pi_ref[y]))
    log_ratio = np.log(pi[y] / pi_ref[y])
    se1 = log_ratio.std() / np.sqrt(len(y))
    se3 = (np.expm1(-log_ratio) + log_ratio).std() / np.sqrt(len(y))
    assert abs(est["kl_k1"] - exact) < 4 * se1 and abs(est["kl_k3"] - exact) < 4 * se3
    # on few samples k1 can go negative, k3 never
    few = [kl_estimates(np.log(pi[s]), np.log(pi_ref[s])) for s in rng.choice(5, size=(300, 2), p=pi)]
    assert min(e["kl_k1"] for e in few) < 0 <= min(e["kl_k3"] for e in few)


def test_cluster_standard_error_matches_a_simulation_with_known_variance():
    """Prompt effects ~ N(0, tau^2), samples ~ N(effect, sigma^2), n per prompt: Var(mean) = (tau^2 + sigma^2/n)/P."""
    rng = np.random.default_rng(3)
    P, n, tau, sigma, reps = 30, 4, 1.0, 1.5, 3000
    groups = np.repeat(np.arange(P), n)
    truth = np.sqrt((tau**2 + sigma**2 / n) / P)
    means, ses, covered = [], [], 0
    for _ in range(reps):
        values = rng.normal(0, tau, P)[groups] + rng.normal(0, sigma, P * n)
        mean, se, _ = cluster_mean_se(values, groups, P)
        low, high = t_interval(mean, se, P)
        means.append(mean), ses.append(se)
        covered += low <= 0 <= high
    assert np.std(means) == pytest.approx(truth, rel=0.05)
    assert np.sqrt(np.mean(np.square(ses))) == pytest.approx(truth, rel=0.03)
    assert 0.935 < covered / reps < 0.965
    # the naive per-sample standard error ignores the prompt clusters and is far too small here
    naive = values.std(ddof=1) / np.sqrt(P * n)
    assert naive < 0.85 * truth


def test_paired_gain_interval_covers_the_true_gain_and_is_narrower_than_unpaired():
    rng = np.random.default_rng(4)
    covered, reps, widths = 0, 300, []
    for _ in range(reps):
        g, l, r, ref_g, ref_l, ref_r = _tables(rng, P=24, M=4, N=2, gain=0.3)
        m = evaluation_metrics(_policy_table(g, l, r), _ref_table(ref_g, ref_l, ref_r))
        covered += m["reward_gain_ci_low"] <= 0.3 <= m["reward_gain_ci_high"]
        widths.append(m["reward_gain_ci_high"] - m["reward_gain_ci_low"])
        unpaired = 2 * 1.96 * np.hypot(m["reward_mean_se"], m["ref_reward_mean_se"])
    assert 0.91 < covered / reps < 0.99
    assert np.mean(widths) < unpaired  # prompt effects (sd 1) cancel in the paired difference


def _policy_table(g, l, r, seed=None):
    n = len(g)
    columns = {"prompt_id": [f"p{i:03d}" for i in g], "reward": r, "num_tokens": l.astype(np.int64),
               "policy_logp": np.zeros(n), "ref_logp": np.zeros(n)}
    if seed is not None:
        columns["seed"] = seed
    return pa.table(columns)


def _ref_table(g, l, r):
    return pa.table({"prompt_id": [f"p{i:03d}" for i in g], "reward": r, "num_tokens": l.astype(np.int64)})


def test_metrics_worked_by_hand():
    """Two prompts. p0: reference rewards 0, 1; policy 1, 2 (gain 1). p1: reference 0, 0; policy 0, 1 (gain 0.5)."""
    ref = pa.table({"prompt_id": ["p0", "p0", "p1", "p1"], "reward": [0.0, 1.0, 0.0, 0.0], "num_tokens": [4, 6, 5, 5]})
    pol = pa.table({"prompt_id": ["p0", "p0", "p1", "p1"], "reward": [1.0, 2.0, 0.0, 1.0], "num_tokens": [5, 7, 3, 5],
                    "policy_logp": [-1.0, -2.0, -1.0, -1.0], "ref_logp": [-2.0, -2.0, -1.0, -1.0], "seed": [7, 8, 7, 8]})
    m = evaluation_metrics(pol, ref)
    assert m["reward_mean"] == 1.0 and m["ref_reward_mean"] == 0.25
    assert m["reward_gain"] == 0.75 and m["reward_gain_se"] == pytest.approx(0.25)  # sd(1, .5)/sqrt 2
    assert m["reward_gain_ci_low"] == pytest.approx(0.75 - 12.706 * 0.25, abs=1e-3)  # t_{1, .975} = 12.706
    # quantiles (<=): p0: 1 -> 2/2, 2 -> 2/2; p1: 0 -> 2/2, 1 -> 2/2.  wins (ties 1/2): p0: .75, 1; p1: .5, 1
    assert m["quantile_mean"] == 1.0 and m["win_rate_vs_ref"] == pytest.approx((0.875 + 0.75) / 2)
    assert m["kl_k1"] == pytest.approx(0.25)  # log-ratios p0: 1, 0 -> .5; p1: 0, 0 -> 0
    assert m["length_mean"] == 5.0 and m["ref_length_mean"] == 5.0 and m["num_seeds"] == 2


def test_reference_quantiles_with_ties():
    q, win = reference_quantiles(np.array([1.0, 3.0]), np.array([0, 0]), np.array([1.0, 1.0, 2.0, 4.0]), np.zeros(4, dtype=int))
    assert q.tolist() == [0.5, 0.75] and win.tolist() == [0.25, 0.75]


def test_policy_prompt_without_reference_samples_is_an_input_error():
    ref = pa.table({"prompt_id": ["a"], "reward": [0.0], "num_tokens": [3]})
    pol = pa.table({"prompt_id": ["b"], "reward": [0.0], "num_tokens": [3], "policy_logp": [0.0], "ref_logp": [0.0]})
    with pytest.raises(InputError, match="no reference samples"):
        evaluation_metrics(pol, ref)


def test_halves_are_disjoint_stable_and_seeded():
    ids = [f"p{i}" for i in range(11)]
    halves = split_halves(ids, seed=0)
    assert set(halves) == set(ids) and list(halves.values()).count("selection") == 5
    assert split_halves(list(reversed(ids)) + ids, seed=0) == halves  # order and repeats do not matter
    assert split_halves(ids, seed=1) != halves


def test_evaluate_halves_reports_both_halves_on_their_own_prompts():
    rng = np.random.default_rng(5)
    g, l, r, ref_g, ref_l, ref_r = _tables(rng, P=20, M=4, N=2)
    m = evaluate_halves(_policy_table(g, l, r, seed=np.repeat([1, 2], len(g) // 2)), _ref_table(ref_g, ref_l, ref_r), split_seed=0)
    for prefix in ("eval/", "eval_selection/"):
        for name in ("reward_mean", "reward_gain", "reward_gain_ci_low", "reward_gain_ci_high", "win_rate_vs_ref",
                     "length_mean", "kl_k1", "kl_k3", "reward_lc_mean", "quantile_mean", "reward_mean_se",
                     "ref_reward_mean", "ref_length_mean"):
            assert np.isfinite(m[prefix + name]), prefix + name
    assert m["eval/num_prompts"] == m["eval_selection/num_prompts"] == 10
    assert m["eval/reward_mean"] != m["eval_selection/reward_mean"]


def test_gain_in_words():
    assert "within noise" in gain_in_words({"reward_gain_ci_low": -0.1, "reward_gain_ci_high": 0.2})
    assert "real gain" in gain_in_words({"reward_gain_ci_low": 0.1, "reward_gain_ci_high": 0.2})
    assert "real loss" in gain_in_words({"reward_gain_ci_low": -0.3, "reward_gain_ci_high": -0.2})


def test_sweep_selection_reads_the_selection_half_only():
    from qrpo.evaluation import select_run

    runs = [{"eval_selection/reward_mean": 0.1, "eval/reward_mean": 0.9},  # best on the reporting half: not chosen
            {"eval_selection/reward_mean": 0.3, "eval/reward_mean": 0.2},
            {"eval_selection/reward_mean": float("nan"), "eval/reward_mean": 1.0}]
    index, reported = select_run(runs)
    assert index == 1 and reported == {"reward_mean": 0.2}
    assert select_run(runs, higher_is_better=False)[0] == 0
    with pytest.raises(InputError, match="eval_selection/kl_k3"):
        select_run(runs, "kl_k3")


def test_kl_terms_are_the_log_ratio_and_exp_minus_l_minus_one_plus_l():
    k1, k3 = kl_terms(np.array([-1.0, -2.0, -3.0]), np.array([-2.0, -1.0, -3.0]))  # l = 1, -1, 0
    assert k1.tolist() == [1.0, -1.0, 0.0]
    np.testing.assert_allclose(k3, [np.exp(-1.0), np.e - 2.0, 0.0], rtol=1e-12)
    assert kl_estimates(np.array([-1.0, -2.0]), np.array([-2.0, -1.0])) == pytest.approx({"kl_k1": 0.0, "kl_k3": (np.exp(-1) + np.e - 2) / 2})


def test_cluster_mean_weighs_every_group_equally_whatever_its_size():
    values, groups = np.array([1.0, 1.0, 1.0, 4.0, 10.0]), np.array([0, 0, 0, 1, 2])
    mean, se, per_group = cluster_mean_se(values, groups, 3)
    assert per_group.tolist() == [1.0, 4.0, 10.0] and mean == 5.0
    assert se == pytest.approx(np.std([1.0, 4.0, 10.0], ddof=1) / np.sqrt(3))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "degrees of freedom <= 0" warning either
        mean, se, _ = cluster_mean_se(np.array([2.0, 4.0]), np.array([0, 0]), 1)
    assert mean == 3.0 and np.isnan(se)  # one group: no standard error


def test_t_interval_matches_scipys_t_interval_at_any_level_and_is_nan_without_two_groups():
    from scipy import stats

    for level, P in ((0.95, 5), (0.9, 12), (0.5, 2)):
        expected = stats.t.interval(level, P - 1, loc=0.3, scale=0.2)
        assert t_interval(0.3, 0.2, P, level) == pytest.approx(expected, rel=1e-12)
    assert t_interval(0.3, 0.2, 30) == pytest.approx(stats.t.interval(0.95, 29, loc=0.3, scale=0.2), rel=1e-12)
    for args in ((0.3, 0.2, 1), (0.3, float("nan"), 5), (0.3, float("inf"), 5)):
        low, high = t_interval(*args)
        assert np.isnan(low) and np.isnan(high), args


def test_metrics_match_an_independent_per_prompt_computation_and_scipys_paired_t_interval():
    """Unequal numbers of samples per prompt, one reference prompt the policy never saw (ignored). Every
    mean is over prompts of per-prompt means; the gain's interval is scipy's paired t-test interval."""
    from scipy import stats

    rng = np.random.default_rng(7)
    prompts, ref_rows, pol_rows = [f"p{i}" for i in range(6)], [], []
    for i, p in enumerate(prompts):
        ref_rows += [{"prompt_id": p, "reward": rng.normal(i / 3), "num_tokens": int(rng.integers(5, 30))} for _ in range(2 + i % 3)]
        pol_rows += [{"prompt_id": p, "reward": rng.normal(i / 3 + 0.4), "num_tokens": int(rng.integers(5, 30)),
                      "policy_logp": rng.normal(-10), "ref_logp": rng.normal(-10)} for _ in range(1 + i % 2)]
    ref_rows += [{"prompt_id": "zz", "reward": 100.0, "num_tokens": 500}]
    pol, ref = pa.Table.from_pylist(pol_rows), pa.Table.from_pylist(ref_rows)
    m = evaluation_metrics(pol, ref)

    def per_prompt(rows, value):
        return np.array([np.mean([value(r) for r in rows if r["prompt_id"] == p]) for p in prompts])

    def check(name, means):
        assert m[name] == pytest.approx(means.mean(), rel=1e-12, abs=1e-12), name
        assert m[f"{name}_se"] == pytest.approx(means.std(ddof=1) / np.sqrt(len(means)), rel=1e-9), name

    pol_reward, ref_reward = per_prompt(pol_rows, lambda r: r["reward"]), per_prompt(ref_rows, lambda r: r["reward"])
    check("reward_mean", pol_reward)
    check("ref_reward_mean", ref_reward)
    check("length_mean", per_prompt(pol_rows, lambda r: r["num_tokens"]))
    check("ref_length_mean", per_prompt(ref_rows, lambda r: r["num_tokens"]))
    l = lambda r: r["policy_logp"] - r["ref_logp"]  # noqa: E731
    check("kl_k1", per_prompt(pol_rows, l))
    check("kl_k3", per_prompt(pol_rows, lambda r: np.exp(-l(r)) - 1 + l(r)))
    refs_of = lambda r: [x["reward"] for x in ref_rows if x["prompt_id"] == r["prompt_id"]]  # noqa: E731
    check("quantile_mean", per_prompt(pol_rows, lambda r: np.mean([x <= r["reward"] for x in refs_of(r)])))
    check("win_rate_vs_ref", per_prompt(pol_rows, lambda r: np.mean([(x < r["reward"]) + (x == r["reward"]) / 2 for x in refs_of(r)])))
    assert m["reward_std"] == pytest.approx(np.std([r["reward"] for r in pol_rows]))
    assert (m["num_prompts"], m["num_samples"]) == (6, len(pol_rows)) and "num_seeds" not in m
    test = stats.ttest_rel(pol_reward, ref_reward)
    assert m["reward_gain"] == pytest.approx((pol_reward - ref_reward).mean(), rel=1e-12)
    assert m["reward_gain_se"] == pytest.approx((pol_reward - ref_reward).std(ddof=1) / np.sqrt(6), rel=1e-9)
    assert (m["reward_gain_ci_low"], m["reward_gain_ci_high"]) == pytest.approx(tuple(test.confidence_interval(0.95)), rel=1e-9)
    # the length-controlled gain: the same paired estimator on the length-controlled rewards
    groups = np.array([prompts.index(r["prompt_id"]) for r in pol_rows])
    ref_groups = np.array([prompts.index(r["prompt_id"]) for r in ref_rows[:-1]])
    for fit_on in ("reference", "all"):
        lc, ref_lc, slope = length_controlled_rewards(pol.column("reward").to_numpy(), pol.column("num_tokens").to_numpy().astype(float),
                                                      groups, ref.column("reward").to_numpy()[:-1],
                                                      ref.column("num_tokens").to_numpy()[:-1].astype(float), ref_groups, fit_on=fit_on)
        lc_means = np.array([lc[groups == g].mean() for g in range(6)])
        diff = lc_means - np.array([ref_lc[ref_groups == g].mean() for g in range(6)])
        mf = evaluation_metrics(pol, ref, lc_fit_on=fit_on)
        assert mf["length_slope"] == pytest.approx(slope, rel=1e-12) and mf["reward_lc_mean"] == pytest.approx(lc_means.mean(), rel=1e-12)
        assert mf["reward_lc_gain"] == pytest.approx(diff.mean(), rel=1e-9, abs=1e-12)
        assert mf["reward_lc_gain_se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(6), rel=1e-9)
        assert (mf["reward_lc_gain_ci_low"], mf["reward_lc_gain_ci_high"]) == pytest.approx(
            tuple(stats.ttest_1samp(diff, 0.0).confidence_interval(0.95)), rel=1e-9)
    assert evaluation_metrics(pol, ref, "all")["length_slope"] != m["length_slope"]


def test_length_control_by_hand_with_constant_length_and_single_sample_prompts_taking_the_pooled_sd():
    """Reference: p0 rewards 0, 2 at lengths 10, 20; p1 rewards 1, 1, 4 all at length 7; p2 one sample
    (reward 5, length 12). p1's length sd is 0 and p2 has none: they take the pooled within-prompt sd,
    sqrt((50 + 0) / (1 + 2 + 0)) for length, sqrt((2 + 6) / 3) for p2's reward -- without a warning."""
    import warnings

    ref_r, ref_l, ref_g = np.array([0.0, 2.0, 1.0, 1.0, 4.0, 5.0]), np.array([10.0, 20.0, 7.0, 7.0, 7.0, 12.0]), np.array([0, 0, 1, 1, 1, 2])
    r, l, g = np.array([3.0, 2.0, 6.0]), np.array([25.0, 9.0, 14.0]), np.array([0, 1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lc, ref_lc, slope = length_controlled_rewards(r, l, g, ref_r, ref_l, ref_g)
    sd_l, sd_r = np.array([np.sqrt(50), np.sqrt(50 / 3), np.sqrt(50 / 3)]), np.array([np.sqrt(2), np.sqrt(3), np.sqrt(8 / 3)])
    zr_ref = np.array([-1 / np.sqrt(2), 1 / np.sqrt(2), -1 / np.sqrt(3), -1 / np.sqrt(3), 2 / np.sqrt(3), 0.0])
    zl_ref = np.array([-5 / sd_l[0], 5 / sd_l[0], 0, 0, 0, 0])
    assert slope == pytest.approx(zr_ref @ zl_ref / (zl_ref @ zl_ref), rel=1e-12)
    expected = r - slope * sd_r[g] * (l - np.array([15.0, 7.0, 12.0])) / sd_l[g]
    np.testing.assert_allclose(lc, expected, rtol=1e-12)
    np.testing.assert_allclose(ref_lc, ref_r - slope * sd_r[ref_g] * zl_ref, rtol=1e-12)
    with pytest.raises(InputError, match=r"^length-controlled reward: fit_on='policy' is not one of all, reference$"):
        length_controlled_rewards(r, l, g, ref_r, ref_l, ref_g, fit_on="policy")


def test_length_control_fits_lengths_that_vary_by_less_than_one_token_sd():
    """Length sd 0.71 per prompt (lengths 5, 6): still a length effect to remove, slope = corr = 1 here."""
    ref_g, ref_l, ref_r = np.array([0, 0, 1, 1]), np.array([5.0, 6.0, 5.0, 6.0]), np.array([0.0, 0.1, 1.0, 1.1])
    lc, ref_lc, slope = length_controlled_rewards(np.array([0.2]), np.array([7.0]), np.array([0]), ref_r, ref_l, ref_g)
    assert slope == pytest.approx(1.0) and ref_lc == pytest.approx([0.05, 0.05, 1.05, 1.05])
    assert lc == pytest.approx([0.2 - 0.1 * 1.5])  # sd_r / sd_l = 0.1 per token, 1.5 tokens above the mean


def test_length_control_with_constant_rewards_changes_nothing():
    g, ref_g = np.array([0, 1]), np.array([0, 0, 1, 1])
    lc, ref_lc, slope = length_controlled_rewards(np.array([1.0, 2.0]), np.array([3.0, 9.0]), g,
                                                  np.array([1.0, 1.0, 2.0, 2.0]), np.array([4.0, 8.0, 5.0, 6.0]), ref_g)
    assert slope == 0.0 and lc.tolist() == [1.0, 2.0] and ref_lc.tolist() == [1.0, 1.0, 2.0, 2.0]


def test_reference_quantiles_compare_each_sample_with_its_own_prompts_references_only():
    q, win = reference_quantiles(np.array([1.0, 1.0]), np.array([0, 1]), np.array([0.0, 2.0, 1.0, 1.0, 5.0]), np.array([0, 0, 1, 1, 1]))
    assert q.tolist() == [0.5, 2 / 3] and win.tolist() == [0.5, 1 / 3]
    from qrpo.evaluation.metrics import sample_quantiles

    pol = pa.table({"prompt_id": ["b", "a"], "reward": [1.0, 1.0]})
    ref = pa.table({"prompt_id": ["a", "a", "b", "b", "b", "c"], "reward": [0.0, 2.0, 1.0, 1.0, 5.0, -9.0]})
    assert sample_quantiles(pol, ref).tolist() == [2 / 3, 0.5]


def test_a_missing_reference_prompt_is_named_in_the_error():
    ref = pa.table({"prompt_id": ["a"], "reward": [0.0], "num_tokens": [3]})
    pol = pa.table({"prompt_id": ["c", "b", "a"], "reward": [0.0] * 3, "num_tokens": [3] * 3, "policy_logp": [0.0] * 3, "ref_logp": [0.0] * 3})
    with pytest.raises(InputError) as err:
        evaluation_metrics(pol, ref)
    assert str(err.value) == "evaluation: 2 policy prompt(s) have no reference samples (e.g. 'b'); sample the reference on the same eval prompts"


def test_evaluate_halves_computes_each_half_on_its_own_prompts_and_skips_an_empty_half():
    rng = np.random.default_rng(6)
    g, l, r, ref_g, ref_l, ref_r = _tables(rng, P=9, M=3, N=2, planted=0.5)
    pol, ref = _policy_table(g, l, r), _ref_table(ref_g, ref_l, ref_r)
    halves = split_halves(pol.column("prompt_id").to_pylist(), 3)
    for fit_on in ("reference", "all"):
        m = evaluate_halves(pol, ref, split_seed=3, lc_fit_on=fit_on)
        for half, prefix in (("reporting", "eval/"), ("selection", "eval_selection/")):
            keep = lambda t: t.filter(pa.array([halves[p] == half for p in t.column("prompt_id").to_pylist()]))  # noqa: E731
            assert {k.removeprefix(prefix): v for k, v in m.items() if k.startswith(prefix)} == evaluation_metrics(keep(pol), keep(ref), fit_on)
    assert m["eval/num_prompts"] == 5 and m["eval_selection/num_prompts"] == 4  # the reporting half gets the odd one
    one = evaluate_halves(pol.slice(0, 2), ref, split_seed=0)  # one prompt: all of it reports, no selection half
    assert one["eval/num_prompts"] == 1 and not any(k.startswith("eval_selection/") for k in one)


def test_gain_in_words_at_the_boundaries_without_an_interval_and_with_a_prefix():
    assert gain_in_words({}) == "no interval (fewer than two prompts)"
    assert gain_in_words({"reward_gain_ci_high": 1.0}) == gain_in_words({"reward_gain_ci_low": 1.0}) == "no interval (fewer than two prompts)"
    assert gain_in_words({"reward_gain_ci_low": float("nan"), "reward_gain_ci_high": 1.0}) == "no interval (fewer than two prompts)"
    assert gain_in_words({"reward_gain_ci_low": 0.0, "reward_gain_ci_high": 0.2}) == "within noise: the 95% interval contains 0"
    assert gain_in_words({"reward_gain_ci_low": -0.2, "reward_gain_ci_high": 0.0}) == "within noise: the 95% interval contains 0"
    assert gain_in_words({"eval/reward_gain_ci_low": 0.1, "eval/reward_gain_ci_high": 0.2}, "eval/") == "a real gain: the 95% interval excludes 0"
    assert gain_in_words({"reward_gain_ci_low": -0.3, "reward_gain_ci_high": -0.2}) == "a real loss: the 95% interval excludes 0"


def test_selection_skips_runs_without_a_finite_number_and_reports_only_the_reporting_half():
    from qrpo.evaluation import select_run

    runs = [{"eval_selection/reward_mean": float("inf"), "eval/reward_mean": 5.0},  # not finite: skipped
            {"eval_selection/reward_mean": 1, "eval/reward_mean": 0.4, "eval/kl_k3": 0.2, "eval_selection/kl_k3": 0.1, "step": 3},
            {"eval_selection/reward_mean": "2.0", "eval/reward_mean": 9.0},  # not a number: skipped
            {"eval/reward_mean": 8.0},  # never evaluated on the selection half
            {"eval_selection/reward_mean": 0.5, "eval/reward_mean": 0.9}]
    assert select_run(runs) == (1, {"reward_mean": 0.4, "kl_k3": 0.2})
    assert select_run(runs, higher_is_better=False)[0] == 4
    assert select_run(runs, "kl_k3", higher_is_better=False)[0] == 1
    with pytest.raises(InputError) as err:
        select_run(runs, "kl_k1")
    assert str(err.value) == "no run has a finite eval_selection/kl_k1; selection needs each run's eval_selection/ metrics"


def test_length_control_with_one_reference_sample_per_prompt_has_no_sd_and_changes_nothing():
    import warnings

    g, ref_g = np.array([0, 1]), np.array([0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no within-prompt degrees of freedom: no 0/0 warning, no fit
        lc, ref_lc, slope = length_controlled_rewards(np.array([1.0, 2.0]), np.array([3.0, 9.0]), g,
                                                      np.array([0.0, 5.0]), np.array([4.0, 8.0]), ref_g)
    assert slope == 0.0 and lc.tolist() == [1.0, 2.0] and ref_lc.tolist() == [0.0, 5.0]


def test_length_control_pools_one_degree_of_freedom():
    """p0: two reference samples (rewards 0, 1 at lengths 4, 6): 1 degree of freedom, sd_r = 0.71, sd_l = 1.41;
    p1: one sample, which takes those pooled sds. The slope is p0's correlation, 1."""
    ref_r, ref_l, ref_g = np.array([0.0, 1.0, 3.0]), np.array([4.0, 6.0, 10.0]), np.array([0, 0, 1])
    lc, _, slope = length_controlled_rewards(np.array([3.0]), np.array([12.0]), np.array([1]), ref_r, ref_l, ref_g)
    assert slope == pytest.approx(1.0) and lc == pytest.approx([3.0 - np.sqrt(0.5) * 2 / np.sqrt(2)])


def test_the_evaluate_step_writes_each_samples_lc_reward_fitted_on_its_own_half(tmp_path):
    """The per-sample `reward_lc` of the evaluate table averages (per prompt, then over prompts) to each half's
    eval/.../reward_lc_mean: the slope is the one the half's metric used, not one fitted on all prompts."""
    import pyarrow.parquet as pq

    from qrpo.evaluation import evaluate

    rng = np.random.default_rng(11)
    g, l, r, ref_g, ref_l, ref_r = _tables(rng, P=30, M=4, N=3, planted=0.4, length_shift=3.0)
    policy = _policy_table(g, l, r).append_column("prompt_ids", pa.array([[1]] * len(g))).append_column(
        "completion_ids", pa.array([[2]] * len(g)))
    metrics = evaluate(policy, _ref_table(ref_g, ref_l, ref_r), 0, "reference", None, tmp_path)
    table = pq.read_table(tmp_path / "data.parquet")
    assert "prompt_ids" not in table.column_names and table.num_rows == len(g)
    for half, prefix in (("reporting", "eval/"), ("selection", "eval_selection/")):
        part = table.filter(pa.array([h == half for h in table.column("half").to_pylist()]))
        per_prompt = {}
        for p, v in zip(part.column("prompt_id").to_pylist(), part.column("reward_lc").to_pylist()):
            per_prompt.setdefault(p, []).append(v)
        assert np.mean([np.mean(v) for v in per_prompt.values()]) == pytest.approx(metrics[prefix + "reward_lc_mean"], rel=1e-12)
    assert not np.allclose(table.column("reward_lc").to_numpy(), table.column("reward").to_numpy())  # the length effect is removed
