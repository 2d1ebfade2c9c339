"""Held-out metrics of a trained policy against the reference policy, with their uncertainty: every metric a
mean over prompts of a per-prompt average, with its standard error over prompts; the paired gain and its
95% interval; KL (k1, k3); reference quantiles and win rate; the length-controlled reward; the selection
and reporting halves. The estimators and why: docs/evaluation.md, "Metrics"."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from qrpo.errors import InputError

HALVES = ("selection", "reporting")


# --- small pieces -----------------------------------------------------------------------------------

def kl_estimates(policy_logps: np.ndarray, ref_logps: np.ndarray) -> dict[str, float]:
    """k1 and k3 estimates of KL(pi || pi_ref) from samples of pi (plain means over samples)."""
    k1, k3 = kl_terms(policy_logps, ref_logps)
    return {"kl_k1": float(k1.mean()), "kl_k3": float(k3.mean())}


def kl_terms(policy_logps: np.ndarray, ref_logps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample k1 and k3 terms [N] of KL(pi || pi_ref), for samples y ~ pi."""
    log_ratio = np.asarray(policy_logps, dtype=np.float64) - np.asarray(ref_logps, dtype=np.float64)  # [N]
    return log_ratio, np.expm1(-log_ratio) + log_ratio


def cluster_mean_se(values: np.ndarray, groups: np.ndarray, num_groups: int) -> tuple[float, float, np.ndarray]:
    """(mean over groups of the per-group mean, its standard error, the per-group means [P]).

    `groups` [N] holds each value's group index in 0..num_groups-1; every group must be non-empty.
    With fewer than two groups the standard error is nan.
    """
    counts = np.bincount(groups, minlength=num_groups)  # [P]
    per_group = np.bincount(groups, weights=np.asarray(values, dtype=np.float64), minlength=num_groups) / counts  # [P]
    return float(per_group.mean()), _se(per_group), per_group


def _se(per_group: np.ndarray) -> float:
    return float(per_group.std(ddof=1) / np.sqrt(len(per_group))) if len(per_group) > 1 else float("nan")


def t_interval(mean: float, se: float, num_groups: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided interval mean ± t_{P-1} · se (nan with fewer than two groups)."""
    if num_groups < 2 or not np.isfinite(se):
        return float("nan"), float("nan")
    from scipy import stats  # imported where an interval is computed (~0.5 s: a cached re-run computes none)

    half = stats.t.ppf(0.5 + level / 2, num_groups - 1) * se
    return mean - half, mean + half


def split_halves(prompt_ids, seed: int) -> dict[str, str]:
    """prompt_id -> "selection" | "reporting": a seeded permutation of the sorted distinct ids, cut in
    two (the reporting half gets the odd one). The same ids and seed always give the same halves."""
    ids = sorted(set(prompt_ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    n_selection = len(ids) // 2
    return {ids[i]: HALVES[0] if rank < n_selection else HALVES[1] for rank, i in enumerate(order)}


def reference_quantiles(rewards: np.ndarray, groups: np.ndarray, ref_rewards: np.ndarray, ref_groups: np.ndarray):
    """(q [N], win [N]) per policy sample: q = share of its prompt's reference rewards <= its reward;
    win = share it beats, ties counting one half."""
    q, win = np.empty(len(rewards)), np.empty(len(rewards))
    for g in np.unique(groups):
        ref = np.sort(ref_rewards[ref_groups == g])  # [M]
        mine = groups == g
        le = np.searchsorted(ref, rewards[mine], side="right")  # #{ref <= r}
        lt = np.searchsorted(ref, rewards[mine], side="left")  # #{ref < r}
        q[mine], win[mine] = le / len(ref), (lt + le) / (2 * len(ref))
    return q, win


def length_controlled_rewards(
    rewards: np.ndarray, lengths: np.ndarray, groups: np.ndarray,
    ref_rewards: np.ndarray, ref_lengths: np.ndarray, ref_groups: np.ndarray, fit_on: str = "reference",
) -> tuple[np.ndarray, np.ndarray, float]:
    """(policy lc rewards [N], reference lc rewards [M_total], slope): rewards with the length effect removed.

    Per prompt p, reward and length are standardised by the reference samples' mean and standard
    deviation: z_r = (r - mu_r(p)) / sd_r(p), z_l = (l - mu_l(p)) / sd_l(p). One slope b, pooled over
    prompts, is fitted by least squares of z_r on z_l (no intercept: both are centred per prompt).
    `fit_on="reference"` (the default) fits it on the reference samples: the reward's own length
    preference under pi_ref, which cannot absorb a gain the policy made while also changing its
    length. `fit_on="all"` pools policy and reference samples, as the paper pools the outputs of many
    evaluated models; with a single policy against its reference that slope also takes up any real
    gain that came with longer answers (the tests show both). The length effect is then removed in
    reward units:

        r_lc = r - b · sd_r(p) · z_l

    so a reference sample of average length keeps its reward, and the reference's own mean is unchanged.
    A prompt whose reference samples all have one length (or one reward) has sd 0: it takes the pooled
    within-prompt sd of all prompts instead; if that is 0 too, nothing varies and b = 0.
    """
    num_groups = int(max(groups.max(initial=-1), ref_groups.max(initial=-1)) + 1)
    mu_r, sd_r = _group_moments(ref_rewards, ref_groups, num_groups)
    mu_l, sd_l = _group_moments(ref_lengths, ref_groups, num_groups)
    z = lambda v, g, mu, sd: (v - mu[g]) / sd[g]  # noqa: E731
    if not (np.all(sd_l > 0) and np.all(sd_r > 0)):  # nothing varies anywhere
        return rewards.astype(np.float64), ref_rewards.astype(np.float64), 0.0
    zr = [z(ref_rewards, ref_groups, mu_r, sd_r)]
    zl = [z(ref_lengths, ref_groups, mu_l, sd_l)]
    if fit_on == "all":
        zr.append(z(rewards, groups, mu_r, sd_r))
        zl.append(z(lengths, groups, mu_l, sd_l))
    elif fit_on != "reference":
        raise InputError(f"length-controlled reward: fit_on={fit_on!r} is not one of all, reference")
    zr, zl = np.concatenate(zr), np.concatenate(zl)
    slope = float(zr @ zl / (zl @ zl)) if zl @ zl > 0 else 0.0
    adjust = lambda v, l, g: v - slope * sd_r[g] * z(l, g, mu_l, sd_l)  # noqa: E731
    return adjust(rewards, lengths, groups), adjust(ref_rewards, ref_lengths, ref_groups), slope


def _group_moments(values: np.ndarray, groups: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-group mean [P] and sd [P] (ddof=1); a group with sd 0 or one value takes the pooled within-group sd."""
    values = np.asarray(values, dtype=np.float64)
    counts = np.bincount(groups, minlength=num_groups)
    mean = np.bincount(groups, weights=values, minlength=num_groups) / np.maximum(counts, 1)
    squares = np.bincount(groups, weights=(values - mean[groups]) ** 2, minlength=num_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(squares / (counts - 1))
    dof = np.maximum(counts - 1, 0).sum()
    pooled = np.sqrt(squares.sum() / dof) if dof > 0 else 0.0
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, pooled)
    return mean, sd


# --- the metrics --------------------------------------------------------------------------------------

def evaluation_metrics(policy: pa.Table, reference: pa.Table, lc_fit_on: str = "reference") -> dict[str, float]:
    """Every metric of the policy samples against the reference samples on the same prompts (names
    without prefix; `_se` = standard error over prompts, see the module docstring)."""
    policy_ids = policy.column("prompt_id").to_pylist()
    ref_ids = reference.column("prompt_id").to_pylist()
    missing = sorted(set(policy_ids) - set(ref_ids))
    if missing:
        raise InputError(f"evaluation: {len(missing)} policy prompt(s) have no reference samples (e.g. {missing[0]!r}); "
                         "sample the reference on the same eval prompts")
    index = {p: i for i, p in enumerate(sorted(set(policy_ids)))}
    reference = reference.filter(pa.array([p in index for p in ref_ids]))
    groups = np.array([index[p] for p in policy_ids], dtype=np.int64)  # [N]
    ref_groups = np.array([index[p] for p in reference.column("prompt_id").to_pylist()], dtype=np.int64)  # [M_total]
    P = len(index)
    col = lambda t, name: np.asarray(t.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)  # noqa: E731
    reward, length, ref_reward, ref_length = col(policy, "reward"), col(policy, "num_tokens"), col(reference, "reward"), col(reference, "num_tokens")

    out: dict[str, float] = {"num_prompts": P, "num_samples": len(reward)}
    if "seed" in policy.column_names:
        out["num_seeds"] = len(set(policy.column("seed").to_pylist()))

    def add(name, values, g=groups):
        mean, se, per_prompt = cluster_mean_se(values, g, P)
        out[name], out[f"{name}_se"] = mean, se
        return per_prompt

    policy_means = add("reward_mean", reward)
    ref_means = add("ref_reward_mean", ref_reward, ref_groups)
    out["reward_std"] = float(reward.std())
    _paired(out, "reward_gain", policy_means - ref_means)
    add("length_mean", length)
    add("ref_length_mean", ref_length, ref_groups)
    q, win = reference_quantiles(reward, groups, ref_reward, ref_groups)
    add("quantile_mean", q)
    add("win_rate_vs_ref", win)
    k1, k3 = kl_terms(col(policy, "policy_logp"), col(policy, "ref_logp"))
    add("kl_k1", k1)
    add("kl_k3", k3)
    lc, ref_lc, slope = length_controlled_rewards(reward, length, groups, ref_reward, ref_length, ref_groups, lc_fit_on)
    lc_means = add("reward_lc_mean", lc)
    _paired(out, "reward_lc_gain", lc_means - cluster_mean_se(ref_lc, ref_groups, P)[2])
    out["length_slope"] = slope
    return out


def sample_quantiles(policy: pa.Table, reference: pa.Table) -> np.ndarray:
    """Each policy sample's quantile [N] among its prompt's reference rewards (as in `reference_quantiles`)."""
    ids = sorted(set(policy.column("prompt_id").to_pylist()) | set(reference.column("prompt_id").to_pylist()))
    index = {p: i for i, p in enumerate(ids)}
    groups = np.array([index[p] for p in policy.column("prompt_id").to_pylist()])
    ref_groups = np.array([index[p] for p in reference.column("prompt_id").to_pylist()])
    col = lambda t: np.asarray(t.column("reward").to_numpy(zero_copy_only=False), dtype=np.float64)  # noqa: E731
    return reference_quantiles(col(policy), groups, col(reference), ref_groups)[0]


def _paired(out: dict, name: str, per_prompt_differences: np.ndarray) -> None:
    mean, se = float(per_prompt_differences.mean()), _se(per_prompt_differences)
    low, high = t_interval(mean, se, len(per_prompt_differences))
    out.update({name: mean, f"{name}_se": se, f"{name}_ci_low": low, f"{name}_ci_high": high})


def evaluate_halves(policy: pa.Table, reference: pa.Table, split_seed: int, lc_fit_on: str = "reference") -> dict[str, float]:
    """`evaluation_metrics` on the reporting half (names `eval/...`) and the selection half (`eval_selection/...`)."""
    halves = split_halves(policy.column("prompt_id").to_pylist(), split_seed)
    out: dict[str, float] = {}
    for half, prefix in (("reporting", "eval/"), ("selection", "eval_selection/")):
        keep = lambda t: t.filter(pa.array([halves.get(p) == half for p in t.column("prompt_id").to_pylist()]))  # noqa: E731
        part = keep(policy)
        if part.num_rows == 0:
            continue
        out.update({f"{prefix}{k}": v for k, v in evaluation_metrics(part, keep(reference), lc_fit_on).items()})
    return out


def gain_in_words(metrics: dict[str, float], prefix: str = "") -> str:
    """"within noise" when the 95% interval of the reward gain contains 0, else the direction."""
    low, high = metrics.get(f"{prefix}reward_gain_ci_low"), metrics.get(f"{prefix}reward_gain_ci_high")
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return "no interval (fewer than two prompts)"
    if low <= 0 <= high:
        return "within noise: the 95% interval contains 0"
    return "a real gain: the 95% interval excludes 0" if low > 0 else "a real loss: the 95% interval excludes 0"
