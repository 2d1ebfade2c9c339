"""Empirical quantile rewards (QRPO, arXiv 2507.08068, §3).

For a prompt x, a completion y with raw reward r and M reference completions y'_1..M ~ pi_ref(.|x)
scored r'_1..M, the quantile reward is the fraction of reference rewards that r beats:

    q_hat(x, y) = (1/M) * #{j : r'_j <= r}          (ties="le", the paper's estimator)

Under y ~ pi_ref, q = P_{y'~pi_ref}[r(y') <= r(y)] is Uniform(0, 1) for a continuous reward; that is
what makes the partition function of exp(f(q)/beta) the same for every prompt (see transforms.py).

Discrete rewards (unit-test pass rates, say) tie. The tie policy is explicit:

    "le"   #{r' <= r} / M                 counts a tie as beaten (paper; q_hat = 1 when all tie)
    "lt"   #{r' <  r} / M                 counts a tie as not beaten (q_hat = 0 when all tie)
    "mid"  (#{r' < r} + #{r' = r}/2) / M  mid-rank: half a tie each way; for a discrete pi_ref it is
                                          unbiased for F(r-) + P(r)/2, the mean quantile under
                                          uniform tie-breaking, so ties keep E[q] = 1/2 under pi_ref

Two entry points: `quantile_rewards` for torch batches inside a loss, and `quantile_table` for a
whole dataset (NumPy / Arrow columns, ragged reference sets allowed) in one vectorised pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported by the functions on tensors: the config's check of `ties` needs none
    import torch

TIE_POLICIES = ("le", "lt", "mid")


def _check_ties(ties: str) -> None:
    if ties not in TIE_POLICIES:
        raise ValueError(f"unknown tie policy {ties!r}; choose one of {', '.join(TIE_POLICIES)}")


def _check_finite(name: str, values: np.ndarray | torch.Tensor) -> None:
    finite = values.isfinite() if hasattr(values, "isfinite") else np.isfinite(values)  # a tensor, else NumPy
    if not bool(finite.all()):
        bad = (~finite).reshape(len(values), -1).any(axis=1)  # [N] rows with any bad value (values are 1-D or 2-D)
        rows = np.flatnonzero(np.asarray(bad))
        raise ValueError(
            f"{name} has non-finite values (NaN or inf) in {len(rows)} row(s), first at row {rows[0]}; "
            "re-score those completions or drop them before building quantiles"
        )


def quantile_rewards(rewards: torch.Tensor, ref_rewards: torch.Tensor, ties: str = "le") -> torch.Tensor:
    """Empirical quantile of each reward among its own reference rewards.

    rewards: [B] raw rewards of the completions being scored.
    ref_rewards: [B, M] rewards of M reference completions of the same prompt (M >= 1).
    Returns a float tensor [B] in [0, 1] (dtype of `rewards` if floating, else float32). No gradient
    flows through it: quantiles are targets, not functions of the policy.
    """
    import torch

    _check_ties(ties)
    if rewards.ndim != 1 or ref_rewards.ndim != 2 or ref_rewards.shape[0] != rewards.shape[0]:
        raise ValueError(
            f"expected rewards [B] and ref_rewards [B, M]; got {tuple(rewards.shape)} and {tuple(ref_rewards.shape)}"
        )
    if ref_rewards.shape[1] == 0:
        raise ValueError("ref_rewards has no reference completions (M = 0); sample at least one per prompt")
    _check_finite("rewards", rewards)
    _check_finite("ref_rewards", ref_rewards)

    r = rewards.detach().unsqueeze(1)  # [B, 1]
    ref = ref_rewards.detach()  # [B, M]
    if ties == "le":
        beaten = (ref <= r).sum(1).double()
    elif ties == "lt":
        beaten = (ref < r).sum(1).double()
    else:  # mid
        beaten = (ref < r).sum(1).double() + 0.5 * (ref == r).sum(1).double()
    dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
    return (beaten / ref.shape[1]).to(dtype)  # [B]


def clamp_quantiles(
    quantiles: torch.Tensor, num_ref: int | torch.Tensor, low: bool = True, high: bool = True
) -> torch.Tensor:
    """Clamp empirical quantiles half a grid step inside (0, 1): q -> max(q, 1/(2M)) if `low`,
    min(q, 1 - 1/(2M)) if `high`.

    With M reference rewards q_hat lives on the grid {0, 1/M, ..., 1}; transforms such as log and
    the normal quantile function are infinite at 0 or 1. Moving only the end points where f is
    infinite, half a step inward, keeps every interior grid point (and so the ordering information)
    and every finite target exactly as it was: `log` is clamped at 0 only (f(1) = 0 is fine), Phi^-1
    at both ends (use `Transform.clamp`, which knows the ends). The narrower [1/M, (M-1)/M] would
    collapse every q to 1/2 at M = 2. With M = 1 and both ends clamped every quantile becomes 1/2:
    one reference sample carries no signal for these transforms.
    """
    import torch

    half_step = 0.5 / torch.as_tensor(num_ref, dtype=quantiles.dtype, device=quantiles.device)
    if low:
        quantiles = torch.maximum(quantiles, half_step)
    if high:
        quantiles = torch.minimum(quantiles, 1 - half_step)
    return quantiles


def _as_ragged(ref_rewards) -> tuple[np.ndarray, np.ndarray]:
    """Flat float values [sum M_i] (no copy where possible) and lengths [N], from [N, M] or Arrow."""
    if isinstance(ref_rewards, (np.ndarray, list)):
        arr = np.asarray(ref_rewards)
        if not np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float64)
        if arr.ndim != 2:
            raise ValueError(f"ref_rewards must be 2-D [N, M] or an Arrow list column; got shape {arr.shape}")
        return arr.reshape(-1), np.full(arr.shape[0], arr.shape[1], dtype=np.int64)
    import pyarrow as pa

    if isinstance(ref_rewards, pa.ChunkedArray):
        ref_rewards = ref_rewards.combine_chunks()
    if not pa.types.is_list(ref_rewards.type) and not pa.types.is_large_list(ref_rewards.type) and not (
        pa.types.is_fixed_size_list(ref_rewards.type)
    ):
        raise ValueError(f"ref_rewards Arrow column must be a list of floats; got type {ref_rewards.type}")
    if ref_rewards.null_count:
        raise ValueError(f"ref_rewards has {ref_rewards.null_count} null row(s); every row needs its reference rewards")
    lengths = ref_rewards.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    values = ref_rewards.flatten().to_numpy(zero_copy_only=False)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    return values, lengths


def _count_beaten(ref: np.ndarray, r: np.ndarray, ties: str) -> np.ndarray:
    """Per reference reward, 1 if r beats it, 0 if not, 1/2 for a tie under "mid" (broadcasts)."""
    if ties == "le":
        return (ref <= r).astype(np.float32)
    if ties == "lt":
        return (ref < r).astype(np.float32)
    return (ref < r) + np.float32(0.5) * (ref == r)


def quantile_table(rewards, ref_rewards, ties: str = "le", chunk_rows: int = 1 << 18) -> np.ndarray:
    """Quantile of every row's reward among that row's reference rewards, for a whole dataset.

    rewards: [N] NumPy array (or Arrow array) of raw rewards.
    ref_rewards: [N, M] NumPy array, or an Arrow list<float> column whose row i holds M_i >= 1
        reference rewards (ragged is fine).
    Returns float64 [N]. One vectorised pass, processed in chunks of `chunk_rows` to bound memory.
    """
    _check_ties(ties)
    r = np.asarray(rewards)
    r = r if np.issubdtype(r.dtype, np.floating) else r.astype(np.float64)
    if r.ndim != 1:
        raise ValueError(f"rewards must be 1-D [N]; got shape {r.shape}")
    values, lengths = _as_ragged(ref_rewards)
    if len(lengths) != len(r):
        raise ValueError(f"rewards has {len(r)} rows but ref_rewards has {len(lengths)}")
    if (lengths == 0).any():
        raise ValueError(
            f"{int((lengths == 0).sum())} row(s) have no reference rewards, first at row "
            f"{int(np.flatnonzero(lengths == 0)[0])}; sample at least one reference completion per prompt"
        )
    _check_finite("rewards", r)
    if not np.isfinite(values).all():
        row = int(np.searchsorted(np.cumsum(lengths), np.flatnonzero(~np.isfinite(values))[0], side="right"))
        raise ValueError(f"ref_rewards has non-finite values (NaN or inf), first in row {row}; re-score or drop them")

    out = np.empty(len(r), dtype=np.float64)
    if len(r) and (lengths == lengths[0]).all():  # rectangular [N, M]: broadcast row against its refs
        ref = values.reshape(len(r), int(lengths[0]))
        for start in range(0, len(r), chunk_rows):
            rows = slice(start, start + chunk_rows)
            out[rows] = _count_beaten(ref[rows], r[rows, None], ties).sum(1) / lengths[0]
        return out
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for start in range(0, len(r), chunk_rows):  # ragged: flat refs beside each row's repeated reward
        stop = min(start + chunk_rows, len(r))
        lo, hi = offsets[start], offsets[stop]
        hits = _count_beaten(values[lo:hi], np.repeat(r[start:stop], lengths[start:stop]), ties)
        out[start:stop] = np.add.reduceat(hits, offsets[start:stop] - lo) / lengths[start:stop]
    return out
