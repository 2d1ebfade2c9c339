"""The training table as examples: pairs or single completions, their sequences, the batch the algorithm gets,
and the order of an epoch's global batches (length-grouped, a pure function of (seed, epoch))."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import torch

from qrpo.errors import InputError
from qrpo.objective.algorithms import Algorithm, PairBatch, PointwiseBatch
from qrpo.training.logprobs import sequence_logps, shared_prompt_logps


class _Examples:
    """Columns of a training table as host arrays; builds the sequences and batches of some rows."""

    numeric: tuple[str, ...] = ()

    def __init__(self, table: pa.Table, with_reference: bool):
        self.num_rows = table.num_rows
        self.prompt_ids = table.column("prompt_ids").to_pylist()
        self.with_reference = with_reference
        names = self.numeric + (self.reference if with_reference else ())
        missing = [n for n in names if n not in table.column_names]
        if missing:
            raise InputError(f"the training table lacks column(s) {', '.join(missing)}; rebuild it with the training_data step")
        self.columns = {n: table.column(n).to_numpy().astype(np.float32) for n in names}

    def __len__(self):
        return self.num_rows

    def _take(self, name: str, rows: np.ndarray, device) -> torch.Tensor:
        return torch.from_numpy(self.columns[name][rows]).to(device)


class PairExamples(_Examples):
    numeric = ("chosen_reward", "rejected_reward", "chosen_quantile", "rejected_quantile", "num_ref")
    reference = ("chosen_ref_logp", "rejected_ref_logp")

    def __init__(self, table, with_reference):
        super().__init__(table, with_reference)
        self.chosen_ids = table.column("chosen_ids").to_pylist()
        self.rejected_ids = table.column("rejected_ids").to_pylist()

    def tokens(self) -> np.ndarray:
        """Tokens processed per example: the prompt twice and both completions."""
        return np.array([2 * len(p) + len(c) + len(r) for p, c, r in zip(self.prompt_ids, self.chosen_ids, self.rejected_ids)])

    def sequences(self, rows):
        """2b (prompt, completion) sequences: the b chosen completions, then the b rejected ones."""
        prompts = [self.prompt_ids[i] for i in rows]
        return prompts * 2, [self.chosen_ids[i] for i in rows] + [self.rejected_ids[i] for i in rows]

    def batch(self, rows, logps: torch.Tensor, lengths: torch.Tensor) -> PairBatch:
        b, device = len(rows), logps.device
        take = lambda name: self._take(name, rows, device)  # noqa: E731
        return PairBatch(
            policy_chosen_logps=logps[:b],
            policy_rejected_logps=logps[b:],
            ref_chosen_logps=take("chosen_ref_logp") if self.with_reference else None,
            ref_rejected_logps=take("rejected_ref_logp") if self.with_reference else None,
            chosen_lengths=lengths[:b].float(),
            rejected_lengths=lengths[b:].float(),
            chosen_rewards=take("chosen_reward"),
            rejected_rewards=take("rejected_reward"),
            chosen_quantiles=take("chosen_quantile"),
            rejected_quantiles=take("rejected_quantile"),
            num_ref=take("num_ref"),
        )


class PointwiseExamples(_Examples):
    numeric = ("reward", "quantile", "num_ref")
    reference = ("ref_logp",)

    def __init__(self, table, with_reference):
        super().__init__(table, with_reference)
        self.completion_ids = table.column("completion_ids").to_pylist()

    def tokens(self) -> np.ndarray:
        return np.array([len(p) + len(c) for p, c in zip(self.prompt_ids, self.completion_ids)])

    def sequences(self, rows):
        return [self.prompt_ids[i] for i in rows], [self.completion_ids[i] for i in rows]

    def batch(self, rows, logps, lengths) -> PointwiseBatch:
        device = logps.device
        return PointwiseBatch(
            policy_logps=logps,
            ref_logps=self._take("ref_logp", rows, device) if self.with_reference else None,
            lengths=lengths.float(),
            rewards=self._take("reward", rows, device),
            quantiles=self._take("quantile", rows, device),
            num_ref=self._take("num_ref", rows, device),
        )


def make_examples(table: pa.Table, algorithm: Algorithm) -> _Examples:
    """Pair or pointwise examples, by the table's columns; a pair-only method on single completions is an error."""
    if "chosen_ids" in table.column_names:
        return PairExamples(table, algorithm.needs_reference)
    if algorithm.needs_pairs:
        raise InputError(
            f"algorithm {algorithm.name} needs preference pairs but the training table holds single completions "
            "(regime=pointwise); use regime=best_worst or regime=random_pairs, or algorithm=qrpo"
        )
    return PointwiseExamples(table, algorithm.needs_reference)


def micro_batch(model, examples: _Examples, rows: np.ndarray, algorithm: Algorithm, pad_id: int, share_prompts: bool = False,
                fused_lm_head: bool = True):
    """Per-example losses [b] (with gradient) and detached diagnostics {name: [b]} of some rows.

    Every tensor handed to the algorithm is on the policy's device (checked by a test on `meta`).
    With `share_prompts` a prompt shared by several completions (a pair's two sides) runs once;
    with `fused_lm_head` log-probs go through the chunked LM head (see `qrpo.training.logprobs`)."""
    prompts, completions = examples.sequences(rows)
    logps_of = shared_prompt_logps if share_prompts else sequence_logps
    logps, lengths = logps_of(model, prompts, completions, pad_id, fused_lm_head)  # [n], [n]
    batch = examples.batch(rows, logps, lengths)
    losses, diagnostics = algorithm(batch)
    return losses, {k: v.detach().float() for k, v in diagnostics.items()}, batch


def epoch_order(num_rows: int, batch_size: int, seed: int, epoch: int, tokens: np.ndarray | None) -> list[np.ndarray]:
    """The global batches of one epoch (full batches only), a pure function of (seed, epoch).

    With `tokens` given, batches are length-grouped: shuffle, sort by length inside windows of 64
    batches, cut into batches, shuffle the batches: little padding, and still a random order."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(num_rows)
    if tokens is not None:
        window = 64 * batch_size
        order = np.concatenate([w[np.argsort(tokens[w], kind="stable")] for w in np.array_split(order, max(1, math.ceil(num_rows / window)))])
    batches = [order[i : i + batch_size] for i in range(0, num_rows - batch_size + 1, batch_size)]
    if tokens is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
