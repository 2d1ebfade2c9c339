"""Plots and a summary table of one pipeline run, written as files (logged to MLflow by the flow).

- training curves (loss, learning rate, implicit rewards), with the held-out reward before (step 0,
  the reference) and after training (last step), mean ± standard error;
- reward vs KL(pi || pi_ref) (k3), one point with error bars per run (a list of points across a sweep
  shows the frontier), the reference at KL 0;
- reward vs length, policy vs reference samples, with each side's mean ± standard error;
- the histogram of the policy samples' quantiles among their prompt's reference rewards (flat = no
  change; mass near 1 = the policy beats most reference samples).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa


def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported by the first plot drawn (~0.6 s on 2 cores that an
    identical re-run, whose report is cached, never spends)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training(history: pa.Table, path: Path, title: str, eval_points: dict[str, float] | None = None) -> None:
    """Loss, learning rate and the implicit rewards of chosen vs rejected over optimiser steps; with
    `eval_points` (reward_mean, reward_mean_se, ref_reward_mean, ref_reward_mean_se) a panel of the
    held-out reward at step 0 (the reference) and at the last step (the trained policy)."""
    h = history.to_pydict()
    panels = [("loss", ["loss"]), ("learning rate", ["learning_rate"])]
    implicit = [k for k in ("chosen_implicit_reward", "rejected_implicit_reward", "chosen_target", "rejected_target") if k in h]
    if implicit:
        panels.append(("implicit reward  beta log(pi/pi_ref)", implicit))
    if eval_points:
        panels.append(("held-out reward (eval points)", []))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, (name, keys) in zip(np.atleast_1d(axes), panels):
        if not keys:
            steps = [0, h["step"][-1]]
            means = [eval_points["ref_reward_mean"], eval_points["reward_mean"]]
            errors = [eval_points.get("ref_reward_mean_se", 0.0), eval_points.get("reward_mean_se", 0.0)]
            ax.errorbar(steps, means, yerr=np.nan_to_num(errors), fmt="o-", capsize=4)
            ax.set_title(name)
            ax.set_xlabel("optimiser step")
            ax.set_xticks(steps, ["reference", f"step {steps[1]}"])
            continue
        for key in keys:
            ax.plot(h["step"], h[key], label=key, linestyle="--" if key.endswith("target") else "-")
        ax.set_title(name)
        ax.set_xlabel("optimiser step")
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rewards(policy_rewards: np.ndarray, ref_rewards: np.ndarray, path: Path, title: str) -> None:
    """Held-out reward distribution of the reference policy (before) and the trained policy (after)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.linspace(min(policy_rewards.min(), ref_rewards.min()), max(policy_rewards.max(), ref_rewards.max()) + 1e-9, 21)
    ax.hist(ref_rewards, bins=bins, alpha=0.55, label=f"reference (mean {ref_rewards.mean():.3f})")
    ax.hist(policy_rewards, bins=bins, alpha=0.55, label=f"trained (mean {policy_rewards.mean():.3f})")
    ax.set_xlabel("reward")
    ax.set_ylabel("completions")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reward_vs_kl(points: list[dict[str, float]], path: Path, title: str) -> None:
    """Held-out reward against KL(pi || pi_ref) (k3), mean ± standard error, one point per run (each a
    metrics dict with a "label"); the reference sits at KL 0. Several points draw the sweep's frontier."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ref = points[0]
    ax.errorbar([0.0], [ref["ref_reward_mean"]], yerr=[_finite(ref.get("ref_reward_mean_se"))], fmt="s", color="gray",
                capsize=4, label="reference")
    for p in points:
        ax.errorbar([p["kl_k3"]], [p["reward_mean"]], xerr=[_finite(p.get("kl_k3_se"))], yerr=[_finite(p.get("reward_mean_se"))],
                    fmt="o", capsize=4, label=p.get("label", "policy"))
    if len(points) > 1:
        frontier = sorted(points, key=lambda p: p["kl_k3"])
        best, xs, ys = -np.inf, [], []
        for p in frontier:
            if p["reward_mean"] > best:
                best = p["reward_mean"]
                xs.append(p["kl_k3"]), ys.append(p["reward_mean"])
        ax.plot(xs, ys, "--", color="black", linewidth=1, label="frontier")
    ax.set_xlabel("KL(pi || pi_ref)  k3  (nats per completion)")
    ax.set_ylabel("held-out reward")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reward_vs_length(policy: pa.Table, reference: pa.Table, path: Path, title: str) -> None:
    """Each sample's (length, reward), policy vs reference, with each side's mean ± standard error of the mean."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for table, label, color in ((reference, "reference", "tab:gray"), (policy, "trained", "tab:blue")):
        length = np.asarray(table.column("num_tokens").to_numpy(), dtype=float)
        reward = np.asarray(table.column("reward").to_numpy(), dtype=float)
        ax.scatter(length, reward, s=8, alpha=0.35, color=color, label=f"{label} samples")
        sem = lambda v: v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0  # noqa: E731
        ax.errorbar([length.mean()], [reward.mean()], xerr=[sem(length)], yerr=[sem(reward)], fmt="D", color=color,
                    markeredgecolor="black", capsize=4, label=f"{label} mean")
    ax.set_xlabel("completion length (tokens)")
    ax.set_ylabel("reward")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_quantile_histogram(quantiles: np.ndarray, path: Path, title: str) -> None:
    """Histogram of the policy samples' quantiles among their prompt's reference rewards (0.5 = no change)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(quantiles, bins=np.linspace(0, 1, 11), color="tab:blue", alpha=0.8, edgecolor="white")
    ax.axvline(0.5, color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel(f"reference quantile of the policy's samples (mean {np.mean(quantiles):.3f}; 0.5 = no change)")
    ax.set_ylabel("completions")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _finite(value) -> float:
    return float(value) if value is not None and np.isfinite(value) else 0.0


def summary_markdown(facts: dict[str, str], metrics: dict[str, float]) -> str:
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in facts.items()]
    lines += ["", "| metric | value |", "|---|---|"] + [f"| {k} | {v:.4g} |" for k, v in metrics.items()]
    return "\n".join(lines) + "\n"


def plot_training_quantiles(stats: dict, path: Path, regime: str) -> None:
    """The training examples' quantiles among their references, from the training_data step's stats
    (quantile_hist_00 .. quantile_hist_09: counts in ten bins of [0, 1])."""
    counts = [stats.get(f"quantile_hist_{i:02d}", 0) for i in range(10)]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.bar(np.arange(10) / 10 + 0.05, counts, width=0.09)
    ax.set_xlim(0, 1)
    ax.set_xlabel("quantile of the training completion among its references")
    ax.set_ylabel("examples")
    ax.set_title(f"training data ({regime}): {int(sum(counts))} quantiles")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(label: str, facts: dict[str, str], metrics: dict[str, float], history: pa.Table, evaluated: pa.Table,
           reference: pa.Table, out: Path) -> None:
    """The `report` step: into `out`, the run's plots (training curves with the eval points, held-out rewards,
    reward vs KL, reward vs length, the reference-quantile histogram), `summary.md` (`facts` and `metrics`)
    and `per_prompt.csv` (each reporting-half prompt's means, for arm-vs-arm comparisons). `label` names the
    method ("QRPO (β=0.1, identity)"), `facts["model"]` the model; `evaluated` is the `evaluate` table."""
    from qrpo.evaluation import paired

    reporting = {k.removeprefix("eval/"): v for k, v in metrics.items() if k.startswith("eval/")}
    title = f"{label} on {facts['model']}"
    reporting_ids = set(evaluated.filter(pa.array([h == "reporting" for h in evaluated.column("half").to_pylist()]))
                        .column("prompt_id").to_pylist())
    on_reporting = lambda t: t.filter(pa.array([p in reporting_ids for p in t.column("prompt_id").to_pylist()]))  # noqa: E731
    plot_training(history, out / "training_curves.png", title, eval_points=reporting)
    plot_rewards(evaluated.column("reward").to_numpy(), reference.column("reward").to_numpy(), out / "eval_rewards.png",
                 f"held-out reward: {title}")
    plot_reward_vs_kl([{**reporting, "label": label}], out / "reward_vs_kl.png", f"reward vs KL (reporting half): {title}")
    plot_reward_vs_length(on_reporting(evaluated), on_reporting(reference), out / "reward_vs_length.png",
                          f"reward vs length (reporting half): {title}")
    plot_quantile_histogram(evaluated.column("ref_quantile").to_numpy(), out / "quantile_histogram.png",
                            f"policy samples' reference quantiles: {title}")
    (out / "summary.md").write_text(summary_markdown({**facts, "algorithm": title}, metrics))
    paired.write_per_prompt(paired.per_prompt_table(evaluated), out / "per_prompt.csv")
