"""Sequence log-probabilities log pi(y|x), summed over the completion tokens.

One function, `sequence_logps`, serves training (with gradient) and the precomputed reference
log-probs (without), so both see exactly the same token ids, padding and arithmetic: a precomputed
log pi_ref(y|x) equals what the trainer would compute live for the same weights.

Prompt and completion token ids are concatenated and right-padded. The hidden state at position t
scores token t+1, so completion token j of row i is scored at position len(prompt_i) - 1 + j. Only
those positions go through the output projection, and (by default, `fused=True`) through
`qrpo.training.fused_head.token_logps`: the final hidden states at the real completion positions [N, H] are
projected onto the vocabulary a chunk of rows at a time, so neither the [B, T, V] logits of the
whole sequence nor the [N, V] logits of the completions are ever formed, in the forward or the
backward pass (`tests/qrpo/training/test_fused_head.py::test_fused_head_never_creates_a_tokens_by_vocab_tensor`
checks that no tensor of N x V elements is allocated). The hidden states come
from the model's ordinary forward call (a hook on its LM head), so wrappers such as DDP see the
forward they expect.

Models that `qrpo.training.fused_head.output_head` turns down (no plain Linear head, logits softcapped or
scaled after the head, sharded parameters, weights on `meta`) and `fused=False` take the logits
path: the model projects only the scoring positions (`logits_to_keep` with per-row positions
[B, C]; models that ignore it return full logits, gathered at the same positions), and a
cross-entropy over contiguous rows gives the log-probs. Both paths compute the same function (equal
to float rounding, values and gradients: `test_fused_head_gives_the_logits_paths_values_and_gradients`
in tests/qrpo/training/test_fused_head.py).

Computing log pi on the exact sampled token ids (not on re-tokenised text) keeps pi_ref(y|x) the
probability of what was actually sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from qrpo.training.fused_head import head_inputs, head_matches, output_head, token_logps
from qrpo.precision import autocast

if TYPE_CHECKING:  # annotations only: the shard folder and the executor are imported where a step runs
    from qrpo.config.sections import ExecutorConfig
    from qrpo.store.shards import ArtifactRef, ShardFolder


def model_device(model) -> torch.device:
    """The device of the model's parameters (works for wrapped models: DDP, PEFT)."""
    return next(model.parameters()).device


def sequence_logps(model, prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int,
                   fused: bool = True, chunk_rows: int | None = None):
    """(summed completion log-probs [B] float32, completion lengths [B] int64), both on the model's device,
    with gradient if enabled. Every index tensor is built on the host from the Python lists and moved once.
    `fused`: through `qrpo.training.fused_head` when the model allows (`chunk_rows` rows of logits at a time)."""
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
    lengths = torch.tensor(completion_lens, dtype=torch.long).to(device)
    rows, cols = valid.nonzero(as_tuple=True)  # [N] each: the real completion tokens, row by row

    input_ids, attention = input_ids.to(device), attention.to(device)
    head = output_head(model) if fused else None
    if head is not None:
        with head_inputs(head) as seen:
            out = model(input_ids=input_ids, attention_mask=attention, use_cache=False)
        if head_matches(head, seen, out.logits):
            hidden = seen["hidden"][rows.to(device), positions[rows, cols].to(device)]  # [N, H]
            logps = token_logps(hidden, head.weight, head.bias, targets[rows, cols].to(device), seen["dtype"], chunk_rows)
            return _row_sums(logps, rows, cols, batch, span, device), lengths

    targets, valid, positions = (t.to(device) for t in (targets, valid, positions))
    logits = model(input_ids=input_ids, attention_mask=attention, logits_to_keep=positions, use_cache=False).logits
    if logits.shape[:2] != positions.shape:  # the model ignored logits_to_keep: [B, T, V] -> [B, C, V]
        logits = logits[torch.arange(batch, device=device)[:, None], positions]
    per_token = _token_logps(logits, targets)  # [B, C]
    return (per_token * valid).sum(1), lengths


def _row_sums(logps: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, batch: int, span: int, device) -> torch.Tensor:
    """[N] token log-probs at (rows, cols) -> [B] sums over each row (a [B, C] table summed: deterministic)."""
    return logps.new_zeros(batch, span).index_put((rows.to(device), cols.to(device)), logps).sum(1)


def _token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] for [N, C, V] logits and [N, C] targets, over contiguous rows of V
    (the class dimension last: a [N, V, C] transpose makes log-softmax and its backward stride through
    memory, which on a CPU costs more than the rest of the loss)."""
    n, c, v = logits.shape
    flat = -F.cross_entropy(logits.float().reshape(n * c, v), targets.reshape(n * c), reduction="none")
    return flat.view(n, c)


def shared_prompt_logps(model, prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int,
                        fused: bool = True, chunk_rows: int | None = None):
    """`sequence_logps` with each distinct prompt run through the model once.

    A pair's two completions (or a pointwise batch's several completions of one prompt) share their
    prompt: the prompts go through the model once (left-padded, `use_cache=True`), their key/value
    cache is repeated for each completion (`batch_select_indices`), and the completions run on top of
    it. The first completion token is scored from the prompt pass's last position, the others from
    the completion pass, through the fused head or the logits as in `sequence_logps`. Gradients flow
    through the cache into the prompt pass, so this is the same function of the weights as the flat
    pass (values and gradients equal to float rounding, fused head and logits path:
    `tests/qrpo/training/test_logprobs.py::test_shared_prompt_pass_gives_the_flat_pass_values_and_gradients`),
    with prompt tokens computed once instead of once per completion. Falls back to the flat pass when
    no prompt repeats.
    """
    index_of: dict[tuple[int, ...], int] = {}
    for p in prompt_ids:
        index_of.setdefault(tuple(p), len(index_of))
    if len(index_of) == len(prompt_ids):
        return sequence_logps(model, prompt_ids, completion_ids, pad_id, fused, chunk_rows)
    device = model_device(model)
    unique = [list(p) for p in index_of]
    group = torch.tensor([index_of[tuple(p)] for p in prompt_ids])  # [N] prompt of each completion
    prompt_lens = torch.tensor([len(p) for p in unique])  # [P]
    completion_lens = [len(c) for c in completion_ids]
    width, span = int(prompt_lens.max()), max(1, max(completion_lens))

    prompt_input = torch.full((len(unique), width), pad_id, dtype=torch.long)  # [P, Lp] left-padded
    prompt_mask = torch.zeros((len(unique), width), dtype=torch.long)
    for i, p in enumerate(unique):
        prompt_input[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        prompt_mask[i, width - len(p) :] = 1
    prompt_positions = (prompt_mask.cumsum(1) - 1).clamp(min=0)  # real tokens at 0..len-1, as in the flat pass
    completion_input = torch.full((len(completion_ids), span), pad_id, dtype=torch.long)  # [N, C] right-padded
    completion_mask = torch.zeros((len(completion_ids), span), dtype=torch.long)
    for i, c in enumerate(completion_ids):
        completion_input[i, : len(c)] = torch.tensor(c, dtype=torch.long)
        completion_mask[i, : len(c)] = 1
    valid = completion_mask.bool()  # [N, C]
    completion_positions = prompt_lens[group][:, None] + torch.arange(span)[None, :]  # [N, C]
    full_mask = torch.cat([prompt_mask[group], completion_mask], dim=1)  # [N, Lp + C]
    lengths = torch.tensor(completion_lens, dtype=torch.long).to(device)

    to = lambda t: t.to(device)  # noqa: E731
    prompt_pass = {"input_ids": to(prompt_input), "attention_mask": to(prompt_mask), "position_ids": to(prompt_positions),
                   "use_cache": True, "logits_to_keep": 1}
    completion_pass = {"input_ids": to(completion_input), "attention_mask": to(full_mask),
                       "position_ids": to(completion_positions), "use_cache": True}
    head = output_head(model) if fused else None
    if head is not None:
        with head_inputs(head) as seen:
            out = model(**prompt_pass)
        if head_matches(head, seen, out.logits):
            group = to(group)
            hidden = seen["hidden"][:, -1][group][:, None]  # [N, 1, H] scores completion token 0
            if span > 1:
                out.past_key_values.batch_select_indices(group)  # each prompt's keys/values, once per completion
                with head_inputs(head) as rest:
                    model(**completion_pass, past_key_values=out.past_key_values)
                hidden = torch.cat([hidden, rest["hidden"][:, : span - 1]], dim=1)  # [N, C, H]
            rows, cols = valid.nonzero(as_tuple=True)
            hidden = hidden[to(rows), to(cols)]  # [N_tokens, H]
            logps = token_logps(hidden, head.weight, head.bias, to(completion_input[rows, cols]), seen["dtype"], chunk_rows)
            return _row_sums(logps, rows, cols, len(completion_ids), span, device), lengths

    out = model(**prompt_pass)
    group = to(group)
    logits = out.logits[:, -1][group][:, None]  # [N, 1, V] scores completion token 0
    if span > 1:
        cache = out.past_key_values
        cache.batch_select_indices(group)  # each prompt's keys/values, once per completion
        rest = model(**completion_pass, past_key_values=cache, logits_to_keep=to(torch.arange(span - 1))).logits  # [N, C-1, V]
        logits = torch.cat([logits, rest], dim=1)  # [N, C, V]
    per_token = _token_logps(logits, to(completion_input))  # [N, C]
    return (per_token * to(valid)).sum(1), lengths


@torch.no_grad()
def batched_sequence_logps(
    model, prompt_ids, completion_ids, pad_id: int, batch_size: int = 16, desc: str = "log-probs",
    precision: str = "fp32", fused: bool = True,
) -> np.ndarray:
    """log pi(y|x) for many sequences, without gradient, as float64 [N] (similar lengths batched together)."""
    model.eval()
    out = []
    order = np.argsort([len(p) + len(c) for p, c in zip(prompt_ids, completion_ids)], kind="stable")
    with autocast(precision, model_device(model)):  # the run's arithmetic (qrpo.precision), as in training
        for b in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", dynamic_ncols=True):
            idx = order[b : b + batch_size]
            logps, _ = sequence_logps(model, [prompt_ids[i] for i in idx], [completion_ids[i] for i in idx], pad_id, fused)
            out.append((idx, logps.double().cpu().numpy()))
    result = np.empty(len(order))
    for idx, values in out:
        result[idx] = values
    return result


@dataclass
class LogpShard:
    """log pi(y|x) under one model of the completions in `columns` (completion column -> output column)."""

    model: ArtifactRef
    table: pa.Table  # prompt_ids and the completion columns
    columns: dict[str, str]
    precision: str
    batch_size: int = 16
    desc: str = "log-probs"

    def __call__(self, rows: range) -> pa.Table:
        from qrpo import models
        from qrpo.executor import cache

        part = self.table.slice(rows.start, len(rows))
        prompts = part.column("prompt_ids").to_pylist()
        out = {}
        with cache.hold(f"policy:{self.model.root}/{self.model.step}/{self.model.key}/{self.model.subdir}",
                        lambda: models.load_policy(self.model.path)) as (model, tokenizer):
            for source, column in self.columns.items():
                out[column] = pa.array(batched_sequence_logps(
                    model, prompts, part.column(source).to_pylist(), tokenizer.pad_token_id, self.batch_size,
                    f"{self.desc} {column}", precision=self.precision), pa.float64())
        return pa.table(out)


def logps_by_shard(executor: ExecutorConfig | None, step: str, model: ArtifactRef, table: pa.Table, columns: dict[str, str],
                   precision: str, folder: ShardFolder, batch_size: int = 16, prefix: str = "shard") -> pa.Table:
    """The log-prob columns (`columns`: completion column -> output column) of every row of `table`, shard by shard,
    one column after the other (a pair table: the chosen side, then the rejected side).

    The shards are cut from the rows in length order (stable, as `batched_sequence_logps` orders them), so
    with `shard_rows` a multiple of `batch_size` every shard's batches are the batches the whole column would
    have had: a row's value (which the padding and the other rows of its batch move in the last bits) is the
    same for any such shard size, and the same as computed in one piece."""
    import pyarrow.compute as pc

    from qrpo.config.sections import ExecutorConfig
    from qrpo.executor.base import run_table_shards
    from qrpo.executor.choice import executor_for

    shard_rows = executor.shard_rows if executor is not None else ExecutorConfig().shard_rows
    prompt_lengths = pc.list_value_length(table.column("prompt_ids")).to_numpy()
    out = {}
    for source, column in columns.items():
        order = np.argsort(prompt_lengths + pc.list_value_length(table.column(source)).to_numpy(), kind="stable")
        needed = table.select(["prompt_ids", source]).take(order)
        shard_prefix = prefix if len(columns) == 1 else f"{prefix}-{column}"
        ordered = run_table_shards(table.num_rows, shard_rows, LogpShard(model, needed, {source: column}, precision, batch_size, step),
                                   folder, executor_for(executor, step), prefix=shard_prefix, name=step)
        out[column] = ordered.column(column).take(np.argsort(order))  # back to the table's row order
    return pa.table(out)


def ref_logps(model: "ArtifactRef", table: pa.Table, precision: str, out: Path, shards: "ShardFolder",
              executor: "ExecutorConfig | None" = None) -> dict:
    """The `ref_logps` step: log pi_ref (the prepared `model`) of every completion of the training table (both
    sides of a pair table: chosen_ref_logp, rejected_ref_logp; a pointwise table: ref_logp), added as columns,
    into `out/data.parquet`, in `precision` (the trainer's own arithmetic); computed shard by shard into
    `shards` wherever `executor` runs them. Returns the columns' means."""
    from qrpo.store.artifacts import write_table

    sides = ("chosen_", "rejected_") if "chosen_ids" in table.column_names else ("",)
    columns = {f"{side}ids" if side else "completion_ids": f"{side}ref_logp" for side in sides}
    values = logps_by_shard(executor, "ref_logps", model, table, columns, precision, shards)
    metrics = {}
    for column in columns.values():
        table = table.append_column(column, values.column(column).combine_chunks())
        metrics[f"{column}_mean"] = float(np.mean(values.column(column).to_numpy()))
    write_table(table, out / "data.parquet")
    return metrics
