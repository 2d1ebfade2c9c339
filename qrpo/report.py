"""Plots and a summary table of one pipeline run, written as files (logged to MLflow by the flow)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402


def plot_training(history: pa.Table, path: Path, title: str) -> None:
    """Loss, learning rate and the implicit rewards of chosen vs rejected over optimiser steps."""
    h = history.to_pydict()
    panels = [("loss", ["loss"]), ("learning rate", ["learning_rate"])]
    implicit = [k for k in ("chosen_implicit_reward", "rejected_implicit_reward", "chosen_target", "rejected_target") if k in h]
    if implicit:
        panels.append(("implicit reward  beta log(pi/pi_ref)", implicit))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, (name, keys) in zip(np.atleast_1d(axes), panels):
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


def summary_markdown(facts: dict[str, str], metrics: dict[str, float]) -> str:
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in facts.items()]
    lines += ["", "| metric | value |", "|---|---|"] + [f"| {k} | {v:.4g} |" for k, v in metrics.items()]
    return "\n".join(lines) + "\n"


def plot_training_quantiles(stats: dict, path: Path, regime: str) -> None:
    """The training examples' quantiles among their references, from the training_data step's stats
    (quantile_hist_00 .. quantile_hist_09: counts in ten bins of [0, 1])."""
    counts = [stats.get(f"quantile_hist_{i:02d}", 0) for i in range(10)]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.bar(np.arange(10) / 10 + 0.05, counts, width=0.09)
    ax.set_xlim(0, 1)
    ax.set_xlabel("quantile of the training completion among its references")
    ax.set_ylabel("examples")
    ax.set_title(f"training data ({regime}): {int(sum(counts))} quantiles")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
