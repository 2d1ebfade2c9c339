"""The training loop: batches of preference pairs -> "the loss" -> AdamW with warm-up + cosine decay.

The loop does not know which method it trains: it computes log pi_theta of both completions of
every pair in one forward pass and calls the `Algorithm`. Gradients are accumulated over micro-
batches so that `batch_size` pairs make one optimiser step whatever fits in memory.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from qrpo.algorithms import Algorithm, PreferenceBatch
from qrpo.config import TrainConfig
from qrpo.errors import InputError
from qrpo.logprobs import sequence_logps


def cosine_schedule(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """Learning-rate multiplier: linear warm-up to 1, then cosine decay to 0."""
    warmup = int(round(warmup_ratio * total_steps))

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return multiplier


def _batch(columns: dict, rows: np.ndarray, policy_logps: torch.Tensor, lengths: torch.Tensor) -> PreferenceBatch:
    b = len(rows)
    take = lambda name: torch.tensor([columns[name][i] for i in rows], dtype=torch.float32)  # noqa: E731
    return PreferenceBatch(
        policy_chosen_logps=policy_logps[:b],
        policy_rejected_logps=policy_logps[b:],
        ref_chosen_logps=take("chosen_ref_logp"),
        ref_rejected_logps=take("rejected_ref_logp"),
        chosen_lengths=lengths[:b].float(),
        rejected_lengths=lengths[b:].float(),
        chosen_rewards=take("chosen_reward"),
        rejected_rewards=take("rejected_reward"),
        chosen_quantiles=take("chosen_quantile"),
        rejected_quantiles=take("rejected_quantile"),
        num_ref=take("num_ref"),
    )


def train_policy(
    model,
    pairs: pa.Table,
    algorithm: Algorithm,
    cfg: TrainConfig,
    pad_id: int,
    on_step: Callable[[int, dict], None] | None = None,
) -> list[dict]:
    """Train `model` in place on `pairs` (training table with reference log-probs); return the history."""
    columns = pairs.to_pydict()
    n = pairs.num_rows
    if n == 0:
        raise InputError(
            "the training table is empty: every prompt's candidates tied on reward; raise "
            "sampler.num_train_samples or dataset.max_train_prompts, or use a finer-grained reward"
        )
    steps_per_epoch = max(1, n // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(total_steps, cfg.warmup_ratio))
    model.train()

    history, step, tokens, start = [], 0, 0, time.perf_counter()
    bar = tqdm(total=total_steps, desc=f"train {algorithm.name}", unit="step", dynamic_ncols=True)
    for epoch in range(cfg.epochs):
        order = rng.permutation(n)
        for s in range(steps_per_epoch):
            step_rows = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            metrics: dict[str, float] = {}
            loss_sum = 0.0
            for m in range(0, len(step_rows), cfg.micro_batch_size):
                rows = step_rows[m : m + cfg.micro_batch_size]
                prompts = [columns["prompt_ids"][i] for i in rows] * 2
                completions = [columns["chosen_ids"][i] for i in rows] + [columns["rejected_ids"][i] for i in rows]
                logps, lengths = sequence_logps(model, prompts, completions, pad_id)  # [2b] chosen then rejected
                losses, diagnostics = algorithm(_batch(columns, rows, logps, lengths.cpu()))
                (losses.sum() / len(step_rows)).backward()
                loss_sum += float(losses.detach().sum())
                tokens += int(sum(map(len, prompts)) + sum(map(len, completions)))
                for k, v in diagnostics.items():
                    metrics[k] = metrics.get(k, 0.0) + v * len(rows) / len(step_rows)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
            )
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            elapsed = time.perf_counter() - start
            record = {
                "step": step,
                "epoch": epoch,
                "loss": loss_sum / len(step_rows),
                "learning_rate": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                "tokens_per_s": tokens / elapsed,
                **metrics,
            }
            history.append(record)
            if on_step is not None:
                on_step(step, record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4g}", tok_per_s=f"{record['tokens_per_s']:.0f}")
            step += 1
    bar.close()
    model.eval()
    return history
