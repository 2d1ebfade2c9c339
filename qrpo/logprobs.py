"""Sequence log-probabilities log pi(y|x), summed over the completion tokens.

Prompt and completion token ids are concatenated and right-padded; the logits at position t score
token t+1, and only completion positions count. Computing log pi on the exact sampled token ids
(not on re-tokenised text) keeps pi_ref(y|x) the probability of what was actually sampled.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


def sequence_logps(model, prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int):
    """(summed log-probs [B], completion lengths [B]) with gradient if enabled."""
    seqs = [p + c for p, c in zip(prompt_ids, completion_ids)]
    width = max(map(len, seqs))
    device = model.device
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=device)  # [B, T]
    attention = torch.zeros((len(seqs), width), dtype=torch.long, device=device)  # [B, T]
    completion_mask = torch.zeros((len(seqs), width), dtype=torch.bool, device=device)  # [B, T]
    for i, (p, s) in enumerate(zip(prompt_ids, seqs)):
        input_ids[i, : len(s)] = torch.tensor(s, device=device)
        attention[i, : len(s)] = 1
        completion_mask[i, len(p) : len(s)] = True
    logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()  # [B, T-1, V]
    targets = input_ids[:, 1:]  # [B, T-1]
    token_logps = -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # [B, T-1]
    mask = completion_mask[:, 1:]  # [B, T-1]
    return (token_logps * mask).sum(1), mask.sum(1)


@torch.no_grad()
def batched_sequence_logps(model, prompt_ids, completion_ids, pad_id: int, batch_size: int = 16, desc: str = "log-probs") -> np.ndarray:
    """log pi(y|x) for many sequences, without gradient, as float64 [N]."""
    model.eval()
    out = []
    order = np.argsort([len(p) + len(c) for p, c in zip(prompt_ids, completion_ids)])  # similar lengths together
    for b in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", dynamic_ncols=True):
        idx = order[b : b + batch_size]
        logps, _ = sequence_logps(model, [prompt_ids[i] for i in idx], [completion_ids[i] for i in idx], pad_id)
        out.append((idx, logps.double().cpu().numpy()))
    result = np.empty(len(order))
    for idx, values in out:
        result[idx] = values
    return result
