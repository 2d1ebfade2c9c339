"""Arm against arm: paired differences on the same prompts, Holm-adjusted p-values, and power.

Every arm of a comparison is evaluated on the same reporting-half prompts, so "is arm A better than arm
B?" is a paired question. Per prompt, each arm's values are averaged over its seeds and samples first
(a_i, b_i); the differences d_i = a_i - b_i over the P prompts both arms have are then tested as one
sample (paired t-test, P - 1 degrees of freedom):

    diff = mean(d)      se = sd(d) / sqrt(P)      95% interval diff ± t_{0.975, P-1} se
    p = 2 P(T_{P-1} > |diff / se|)

The prompt-to-prompt spread that two independent intervals carry cancels in d, which is why a paired
difference can be clear where both arms' own intervals overlap.

Several comparisons in one table are corrected together by Holm's step-down method (it controls the
family-wise error at 5% without assuming independence, and is never less powerful than Bonferroni).

Power: the minimum detectable difference at 80% power and a two-sided 5% level, from the observed spread
of the paired differences, is

    mde = (t_{0.975, P-1} + t_{0.80, P-1}) * sd(d) / sqrt(P)

(the usual normal-approximation formula with t quantiles; at P = 24 its exact power, from the noncentral
t distribution, is 0.79-0.80). `prompts_needed` inverts it: the eval prompts needed to detect a given
difference with the same spread.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from qrpo.errors import InputError

POWER, ALPHA = 0.80, 0.05


def per_prompt_means(prompt_ids: Iterable, values: Iterable[float]) -> dict:
    """prompt_id -> the mean of its values (one arm's samples over all its seeds)."""
    ids, vals = list(prompt_ids), np.asarray(list(values), dtype=np.float64)
    if len(ids) != len(vals):
        raise InputError(f"per_prompt_means: {len(ids)} prompt ids but {len(vals)} values")
    keys = sorted(set(ids))
    index = {p: i for i, p in enumerate(keys)}
    groups = np.array([index[p] for p in ids], dtype=np.int64)
    means = np.bincount(groups, weights=vals, minlength=len(keys)) / np.bincount(groups, minlength=len(keys))
    return dict(zip(keys, means.tolist()))


PER_PROMPT_COLUMNS = ("reward", "reward_lc", "ref_quantile", "kl_k3")  # what each run leaves per prompt for comparisons


def per_prompt_table(evaluated) -> list[dict]:
    """One row per reporting-half prompt of an `evaluate` table (columns prompt_id, half, reward, reward_lc,
    ref_quantile, policy_logp, ref_logp): the prompt's mean reward, length-controlled reward, reference
    quantile and k3 KL estimate over all its samples and seeds. Every run logs it (report/per_prompt.csv), so that any two runs on the same prompts
    can be paired (and a method's reward read at a common KL, qrpo.evaluation.frontier)."""
    from qrpo.evaluation.metrics import kl_terms

    reporting = evaluated.filter(pa.array([h == "reporting" for h in evaluated.column("half").to_pylist()]))
    ids = reporting.column("prompt_id").to_pylist()
    col = lambda name: np.asarray(reporting.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)  # noqa: E731
    values = {"reward": col("reward"), "ref_quantile": col("ref_quantile"), "kl_k3": kl_terms(col("policy_logp"), col("ref_logp"))[1]}
    if "reward_lc" in reporting.column_names:
        values["reward_lc"] = col("reward_lc")
    means = {c: per_prompt_means(ids, values[c]) for c in PER_PROMPT_COLUMNS if c in values}
    return [{"prompt_id": p, **{c: means[c][p] for c in means}} for p in sorted(set(ids))]  # a column it lacks: blank in the CSV


def write_per_prompt(rows: list[dict], path) -> None:
    """`per_prompt_table` rows as CSV (prompt_id, reward, ref_quantile, kl_k3)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt_id", *PER_PROMPT_COLUMNS])
        writer.writeheader()
        writer.writerows(rows)


def read_per_prompt_columns(path) -> dict[str, dict]:
    """{column: {prompt_id: per-prompt mean}} of a run's per_prompt.csv, in one read; a column left blank
    (a file written before that column existed) is absent."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in (rows[0] if rows else {}) if c != "prompt_id"]
    return {c: {row["prompt_id"]: float(row[c]) for row in rows} for c in columns if all(row[c] != "" for row in rows)}


def read_per_prompt(path, column: str = "reward") -> dict:
    """{prompt_id: per-prompt mean of `column`} from a run's per_prompt.csv."""
    return read_per_prompt_columns(path)[column]


def minimum_detectable_difference(sd: float, num_prompts: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest true mean difference a paired t-test on `num_prompts` prompts with this spread of
    differences detects with probability `power` at two-sided level `alpha` (nan below two prompts)."""
    if num_prompts < 2 or not math.isfinite(sd):
        return float("nan")
    from scipy import stats  # (~0.5 s to import: only where a test is computed)

    df = num_prompts - 1
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * sd / math.sqrt(num_prompts))


def prompts_needed(sd: float, difference: float, power: float = POWER, alpha: float = ALPHA) -> int:
    """The fewest prompts whose minimum detectable difference is <= `difference` (same spread)."""
    if not (difference > 0 and math.isfinite(sd) and sd >= 0):
        raise InputError(f"prompts_needed needs a positive difference and a finite spread; got {difference!r}, {sd!r}")
    if sd == 0:
        return 2
    from scipy import stats

    guess = max(2, math.ceil(((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * sd / difference) ** 2))
    n = guess  # the normal approximation undershoots: step up until the t version holds
    while minimum_detectable_difference(sd, n, power, alpha) > difference:
        n += 1
    while n > 2 and minimum_detectable_difference(sd, n - 1, power, alpha) <= difference:
        n -= 1
    return n


@dataclass(frozen=True)
class PairedDifference:
    diff: float  # mean over shared prompts of (arm - baseline)
    ci_low: float
    ci_high: float
    p_value: float  # two-sided paired t-test, not adjusted
    se: float
    sd: float  # spread of the per-prompt differences
    num_prompts: int
    mde: float  # minimum detectable difference at 80% power, 5% level


def paired_difference(arm: Mapping, baseline: Mapping, level: float = 0.95) -> PairedDifference:
    """Paired difference arm - baseline over the prompts both have ({prompt_id: per-prompt mean} each)."""
    shared = sorted(set(arm) & set(baseline))
    if not shared:
        raise InputError("paired_difference: the two arms share no prompt; evaluate them on the same prompts")
    d = np.array([arm[p] - baseline[p] for p in shared], dtype=np.float64)
    n, diff = len(d), float(d.mean())
    if n < 2:
        nan = float("nan")
        return PairedDifference(diff, nan, nan, nan, nan, nan, n, nan)
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    if se == 0:  # every prompt moved by exactly the same amount
        p = 1.0 if diff == 0 else 0.0
        return PairedDifference(diff, diff, diff, p, 0.0, 0.0, n, 0.0)
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(diff) / se, n - 1))
    return PairedDifference(diff, diff - half, diff + half, p, se, sd, n, minimum_detectable_difference(sd, n))


def holm(p_values: Iterable[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order (nan stays nan and counts in no family)."""
    p = list(p_values)
    finite = sorted((value, i) for i, value in enumerate(p) if not math.isnan(value))
    m, out, running = len(finite), [float("nan")] * len(p), 0.0
    for rank, (value, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * value))
        out[i] = running
    return out


def compare_arms(arms: Mapping[str, Mapping], baseline: str | None = None) -> list[dict]:
    """Every arm against `baseline` (or every pair when `baseline` is None), Holm-adjusted across the
    table. `arms`: {arm name: {prompt_id: per-prompt mean}}. Rows carry the contract columns
    diff_vs_baseline, diff_ci_low, diff_ci_high, diff_p_holm and mde."""
    if baseline is not None and baseline not in arms:
        raise InputError(f"compare.baseline={baseline!r} is not one of the arms: {', '.join(arms)}")
    names = list(arms)
    pairs = ([(name, baseline) for name in names if name != baseline] if baseline is not None
             else [(a, b) for i, a in enumerate(names) for b in names[i + 1:]])
    results = [paired_difference(arms[a], arms[b]) for a, b in pairs]
    adjusted = holm([r.p_value for r in results])
    return [{"arm": a, "baseline": b, "diff_vs_baseline": r.diff, "diff_ci_low": r.ci_low, "diff_ci_high": r.ci_high,
             "diff_p": r.p_value, "diff_p_holm": p_holm, "diff_sd": r.sd, "mde": r.mde, "num_prompts": r.num_prompts}
            for (a, b), r, p_holm in zip(pairs, results, adjusted)]


def power_line(rows: list[dict], target: float | None = None) -> str:
    """One line: the smallest difference every comparison of the table detects (its largest mde), and how many
    eval prompts it would need to detect `target` (a smaller difference; None: the largest difference the table
    observed but could not resolve, |diff| below its own mde, at that comparison's spread)."""
    finite = [r for r in rows if math.isfinite(r["mde"])]
    if not finite:
        return "power: fewer than two shared prompts, no difference can be detected"
    worst = max(finite, key=lambda r: r["mde"])
    line = (f"power: this comparison detects differences >= {worst['mde']:.4g} "
            f"(80% power, 5% level, {worst['num_prompts']} prompts)")
    if target is not None and 0 < target < worst["mde"]:
        line += f"; to detect {target:.4g} it needs {prompts_needed(worst['diff_sd'], target)} eval prompts"
    elif target is None:
        unresolved = [r for r in finite if 0 < abs(r["diff_vs_baseline"]) < r["mde"]]
        if unresolved:
            row = max(unresolved, key=lambda r: abs(r["diff_vs_baseline"]))
            seen = abs(row["diff_vs_baseline"])
            line += (f"; to detect {seen:.4g} (the largest difference seen and not resolved) it needs "
                     f"{prompts_needed(row['diff_sd'], seen)} eval prompts")
    return line
