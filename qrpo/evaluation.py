"""Held-out evaluation: reward, length and KL to the reference of the trained policy's samples.

KL(pi || pi_ref) is estimated from policy samples y ~ pi with the per-sequence log-ratio
l = log pi(y|x) - log pi_ref(y|x) (Schulman, "Approximating KL Divergence", 2020):
    k1 = mean(l)                      unbiased, can be negative on few samples
    k3 = mean(exp(-l) - 1 + l)        unbiased and always >= 0, lower variance near pi = pi_ref
The "before" numbers are the reference policy's own samples on the same prompts.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def kl_estimates(policy_logps: np.ndarray, ref_logps: np.ndarray) -> dict[str, float]:
    """k1 and k3 estimates of KL(pi || pi_ref) from samples of pi."""
    log_ratio = np.asarray(policy_logps, dtype=np.float64) - np.asarray(ref_logps, dtype=np.float64)  # [N]
    return {"kl_k1": float(log_ratio.mean()), "kl_k3": float(np.mean(np.expm1(-log_ratio) + log_ratio))}


def summarize(policy: pa.Table, reference: pa.Table) -> dict[str, float]:
    """Metrics of policy samples (reward, num_tokens, policy_logp, ref_logp) against reference samples
    (reward, num_tokens) on the same prompts."""
    reward = policy.column("reward").to_numpy()
    ref_reward = reference.column("reward").to_numpy()
    ref_mean_by_prompt = dict(
        zip(*[c.to_pylist() for c in reference.group_by("prompt_id").aggregate([("reward", "mean")]).columns])
    )
    baseline = np.array([ref_mean_by_prompt[p] for p in policy.column("prompt_id").to_pylist()])
    return {
        "reward_mean": float(reward.mean()),
        "reward_std": float(reward.std()),
        "length_mean": float(policy.column("num_tokens").to_numpy().mean()),
        "ref_reward_mean": float(ref_reward.mean()),
        "ref_length_mean": float(reference.column("num_tokens").to_numpy().mean()),
        "reward_gain": float(reward.mean() - ref_reward.mean()),
        "win_rate_vs_ref": float(np.mean((reward > baseline) + 0.5 * (reward == baseline))),
        **kl_estimates(policy.column("policy_logp").to_numpy(), policy.column("ref_logp").to_numpy()),
    }
