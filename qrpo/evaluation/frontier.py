"""Reward at equal KL: each method read at one common KL along its own sweep frontier.

Arms differ in how far they move from pi_ref as much as in reward, and a method that spends more KL
usually gains more reward; comparing them at their own betas mixes the two. For each method with runs
at several betas, its points (mean k3 KL, mean reward) over the shared reporting-half prompts are
joined by straight lines (in KL order) and read at one KL that every such method reaches without
extrapolating: by default the middle of the KL range all of them cover. The 95% interval is a paired
bootstrap over prompts: the same resampled prompts for every run, means recomputed, the frontiers
interpolated again; the 2.5% and 97.5% points of the resampled readings.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from qrpo.errors import InputError

Run = tuple[Mapping, Mapping]  # ({prompt_id: mean reward}, {prompt_id: mean k3 KL}) of one run


def common_kl(methods: Mapping[str, list[Run]]) -> float | None:
    """The middle of the KL range every method's frontier covers (None when the ranges do not overlap)."""
    ranges = []
    for runs in methods.values():
        kls = [float(np.mean(list(kl.values()))) for _, kl in runs]
        ranges.append((min(kls), max(kls)))
    low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
    return 0.5 * (low + high) if low <= high else None


def _reading(rewards: np.ndarray, kls: np.ndarray, target: float) -> float:
    """One method's reward at `target` KL: rewards/kls [runs] of its points, joined in KL order."""
    order = np.argsort(kls, kind="stable")
    return float(np.interp(target, kls[order], rewards[order]))


def reward_at_kl(methods: Mapping[str, list[Run]], target: float | None = None, num_bootstrap: int = 1000,
                 seed: int = 0) -> dict:
    """{"kl": target, "methods": {method: {"reward_at_kl", "ci_low", "ci_high", "num_runs"}}} for every
    method with at least two runs, on the prompts all those runs share (None target: `common_kl`). Empty
    "methods" when fewer than one such method or no common KL."""
    methods = {m: runs for m, runs in methods.items() if len(runs) >= 2}
    if not methods:
        return {"kl": None, "methods": {}}
    shared = sorted(set.intersection(*(set(r) & set(k) for runs in methods.values() for r, k in runs)))
    if len(shared) < 2:
        raise InputError("reward at equal KL: the runs share fewer than two prompts; evaluate them on the same prompts")
    target = common_kl(methods) if target is None else float(target)
    if target is None:
        return {"kl": None, "methods": {}}
    arrays = {m: (np.array([[r[p] for p in shared] for r, _ in runs]), np.array([[k[p] for p in shared] for _, k in runs]))
              for m, runs in methods.items()}  # [runs, P] each
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(shared), size=(num_bootstrap, len(shared)))  # the same prompts for every run
    out = {}
    for method, (rewards, kls) in arrays.items():
        point = _reading(rewards.mean(1), kls.mean(1), target)
        boot = [_reading(rewards[:, d].mean(1), kls[:, d].mean(1), target) for d in draws]
        low, high = np.percentile(boot, [2.5, 97.5])
        out[method] = {"reward_at_kl": point, "ci_low": float(low), "ci_high": float(high), "num_runs": len(rewards)}
    return {"kl": target, "num_prompts": len(shared), "methods": out}


def reward_at_kl_lines(result: dict) -> str:
    """The readings as lines under a comparison table (empty when there is none)."""
    if not result["methods"]:
        return ""
    head = (f"reward at equal KL (k3 = {result['kl']:.4g} nats, each method's frontier interpolated; "
            f"95% paired bootstrap over {result['num_prompts']} prompts):")
    rows = [f"  {m}: {r['reward_at_kl']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] ({r['num_runs']} runs)"
            for m, r in sorted(result["methods"].items())]
    return "\n".join([head, *rows])
