"""Sequence log-probabilities log pi(y|x), summed over the completion tokens.

One function, `sequence_logps`, serves training (with gradient) and the precomputed reference
log-probs (without), so both see exactly the same token ids, padding and arithmetic: a precomputed
log pi_ref(y|x) equals what the trainer would compute live for the same weights.

Prompt and completion token ids are concatenated and right-padded. The logits at position t score
token t+1, so completion token j of row i is scored at position len(prompt_i) - 1 + j. Only those
positions go through the output projection (`logits_to_keep` with per-row positions [B, C]): the
[B, T, V] logits of the whole sequence are never formed, which for short completions after long
prompts saves most of the vocabulary projection and its memory. Models whose forward does not take
`logits_to_keep` return full logits, which are gathered at the same positions. Computing log pi on
the exact sampled token ids (not on re-tokenised text) keeps pi_ref(y|x) the probability of what
was actually sampled.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


def model_device(model) -> torch.device:
    """The device of the model's parameters (works for wrapped models: DDP, PEFT)."""
    return next(model.parameters()).device


def sequence_logps(model, prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int):
    """(summed completion log-probs [B] float32, completion lengths [B] int64), both on the model's device,
    with gradient if enabled. Every index tensor is built on the host from the Python lists and moved once."""
    device = model_device(model)
    prompt_lens = [len(p) for p in prompt_ids]
    completion_lens = [len(c) for c in completion_ids]
    if min(prompt_lens) < 1:
        raise ValueError("every sequence needs at least one prompt token (the first completion token is scored from it)")
    batch, width = len(prompt_ids), max(p + c for p, c in zip(prompt_lens, completion_lens))
    span = max(1, max(completion_lens))

    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)  # [B, T]
    attention = torch.zeros((batch, width), dtype=torch.long)  # [B, T]
    targets = torch.zeros((batch, span), dtype=torch.long)  # [B, C] completion tokens (0 where none)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        input_ids[i, : len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long)
        attention[i, : len(p) + len(c)] = 1
        targets[i, : len(c)] = torch.tensor(c, dtype=torch.long)
    offsets = torch.arange(span)  # [C]
    valid = offsets[None, :] < torch.tensor(completion_lens)[:, None]  # [B, C]
    # position scoring completion token j of row i; clipped inside the row for j past its completion
    positions = (torch.tensor(prompt_lens)[:, None] - 1 + offsets[None, :]).clamp(max=width - 1)  # [B, C]

    input_ids, attention, targets, valid, positions = (t.to(device) for t in (input_ids, attention, targets, valid, positions))
    logits = model(input_ids=input_ids, attention_mask=attention, logits_to_keep=positions, use_cache=False).logits
    if logits.shape[:2] != positions.shape:  # the model ignored logits_to_keep: [B, T, V] -> [B, C, V]
        logits = logits[torch.arange(batch, device=device)[:, None], positions]
    token_logps = -F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # [B, C]
    lengths = torch.tensor(completion_lens, dtype=torch.long).to(device)
    return (token_logps * valid).sum(1), lengths


def inference_context(device: torch.device, mixed_precision: str = "no"):
    """The autocast the trainer uses on this device (bf16 on GPU when asked), for log-prob passes without gradient."""
    if mixed_precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def batched_sequence_logps(
    model, prompt_ids, completion_ids, pad_id: int, batch_size: int = 16, desc: str = "log-probs",
    mixed_precision: str = "no",
) -> np.ndarray:
    """log pi(y|x) for many sequences, without gradient, as float64 [N] (similar lengths batched together)."""
    model.eval()
    out = []
    order = np.argsort([len(p) + len(c) for p, c in zip(prompt_ids, completion_ids)], kind="stable")
    with inference_context(model_device(model), mixed_precision):
        for b in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", dynamic_ncols=True):
            idx = order[b : b + batch_size]
            logps, _ = sequence_logps(model, [prompt_ids[i] for i in idx], [completion_ids[i] for i in idx], pad_id)
            out.append((idx, logps.double().cpu().numpy()))
    result = np.empty(len(order))
    for idx, values in out:
        result[idx] = values
    return result
