"""The sampler contract: the samples table, per-completion seeds, and sharded, resumable sampling.

Every completion row (prompt_id, sample_index) has its own seed,

    row_seed = sha256(sampler seed, prompt_id, sample_index)[:8 bytes]

and a backend draws that row from its seed alone. A completion therefore depends only on (model,
prompt, seed, sample_index, max_new_tokens, temperature, top_p): not on the batch, the shard, the
number of workers, or how many samples per prompt were asked for. Hence sample counts are a prefix
property (the first N of N' >= N samples are the N samples) and N can be extended to N' by drawing
indices N..N'-1 only.

Shards are groups of consecutive prompts; `sample_table` writes each finished shard atomically into a
checkpoint folder (file name = the prompt and index range it holds) and, when run again, reads the
shards that exist instead of redrawing them, so an interrupted run resumes with exactly the rows an
uninterrupted run would have produced.

The samples table, one row per completion (SAMPLES_SCHEMA):
    prompt_id, sample_index (0..N-1 per prompt), prompt_ids (the chat-templated prompt with the
    generation prompt), completion_ids (EOS included when generated), completion (decoded text),
    num_tokens, finish_reason ("stop" | "length"), finished (finish_reason == "stop").
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from qrpo.store.artifacts import write_table

SAMPLES_SCHEMA = pa.schema([
    ("prompt_id", pa.string()),
    ("sample_index", pa.int64()),
    ("prompt_ids", pa.list_(pa.int64())),
    ("completion_ids", pa.list_(pa.int64())),
    ("completion", pa.string()),
    ("num_tokens", pa.int64()),
    ("finish_reason", pa.string()),
    ("finished", pa.bool_()),
])


def row_seed(seed: int, prompt_id: str, sample_index: int) -> int:
    """The seed of one completion: a stable hash (not Python's salted `hash`), in [0, 2**63)."""
    digest = hashlib.sha256(json.dumps([int(seed), str(prompt_id), int(sample_index)]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class SamplingParams:
    """What determines a completion besides the model, the prompt and its index (backend-independent)."""

    max_new_tokens: int
    seed: int = 0
    temperature: float = 1.0  # 1 and 1: exact samples of the model's distribution
    top_p: float = 1.0
    precision: str = "fp32"  # the arithmetic of the forward passes, resolved (qrpo.precision): "fp32" or "bf16"


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    prompt_ids: tuple[int, ...]  # chat-templated, ending with the generation prompt


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]  # EOS included when generated
    finish_reason: str  # "stop" | "length"


class Sampler(ABC):
    """Draws completions (prompt, sample index) -> tokens, each from its own `row_seed` only."""

    backend: str | None = None  # the family of sampler.* keys it reads (conf: sampler.backend), declared by each built-in

    def __init__(self, tokenizer, params: SamplingParams):
        self.tokenizer, self.params = tokenizer, params

    @abstractmethod
    def complete(self, prompts: Sequence[Prompt], indices: range) -> list[list[Completion]]:
        """For each prompt, the completions of sample indices `indices` (in order)."""

    def close(self) -> None:
        """Release workers, connections, GPU memory."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def encode_prompts(tokenizer, prompts: pa.Table) -> list[Prompt]:
    """Prompt-table rows -> token ids: the policy's chat template over the whole conversation
    (`messages` column when present, else the `prompt` as one user turn) with the generation prompt."""
    ids = prompts.column("prompt_id").to_pylist()
    if "messages" in prompts.column_names:
        conversations = [json.loads(m) for m in prompts.column("messages").to_pylist()]
    else:
        conversations = [[{"role": "user", "content": p}] for p in prompts.column("prompt").to_pylist()]
    out = []
    for prompt_id, messages in zip(ids, conversations):
        token_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(token_ids, "keys"):
            token_ids = token_ids["input_ids"]
        out.append(Prompt(str(prompt_id), tuple(int(t) for t in token_ids)))
    return out


def eos_ids(tokenizer) -> set[int]:
    ids = tokenizer.eos_token_id
    return set(ids) if isinstance(ids, (list, tuple)) else {ids}


def finish(token_ids: list[int], eos: set[int], max_new_tokens: int) -> Completion:
    """Cut after the first EOS; "stop" if one was generated, else "length" (hit max_new_tokens)."""
    for i, token in enumerate(token_ids):
        if token in eos:
            return Completion(list(token_ids[: i + 1]), "stop")
    return Completion(list(token_ids[:max_new_tokens]), "length")


def _table(tokenizer, prompts: Sequence[Prompt], indices: range, completions: list[list[Completion]]) -> pa.Table:
    rows = []
    for prompt, per_prompt in zip(prompts, completions):
        if len(per_prompt) != len(indices):
            raise RuntimeError(f"sampler returned {len(per_prompt)} completions for {prompt.prompt_id}, expected {len(indices)}")
        for index, c in zip(indices, per_prompt):
            rows.append({
                "prompt_id": prompt.prompt_id, "sample_index": index, "prompt_ids": list(prompt.prompt_ids),
                "completion_ids": c.token_ids, "completion": tokenizer.decode(c.token_ids, skip_special_tokens=True),
                "num_tokens": len(c.token_ids), "finish_reason": c.finish_reason, "finished": c.finish_reason == "stop",
            })
    return pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA)


def shard_ranges(num_prompts: int, shard_prompts: int) -> list[range]:
    return [range(i, min(i + shard_prompts, num_prompts)) for i in range(0, num_prompts, shard_prompts)]


def shard_file(folder: Path, shard: range, indices: range) -> Path:
    """A shard's file name says which prompts and sample indices it holds, so a shard written under
    another `shard_prompts` is never mistaken for this one."""
    return folder / f"shard-p{shard.start:07d}-{shard.stop:07d}-s{indices.start:05d}-{indices.stop:05d}.parquet"


def sample_table(
    sampler: Sampler | Callable[[], Sampler],
    prompts: Sequence[Prompt],
    indices: range,
    *,
    shard_prompts: int,
    checkpoint_dir: Path | None = None,
    shards: Sequence[int] | None = None,
    desc: str = "sampling",
) -> pa.Table:
    """Samples `indices` of every prompt, shard by shard; finished shards in `checkpoint_dir` are
    read back, not redrawn. `shards`: only these shard numbers (a mapped worker's share).
    `sampler` may be a factory: it is then called (a model loaded) only if a shard is missing, and
    the sampler it made is closed at the end.

    Returns the samples table (SAMPLES_SCHEMA) ordered by prompt, then sample index.
    """
    plan = shard_ranges(len(prompts), shard_prompts)
    chosen = range(len(plan)) if shards is None else shards
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tables = []
    bar = tqdm(total=sum(len(plan[s]) for s in chosen) * len(indices), desc=desc, unit="seq", dynamic_ncols=True)
    tokens, start = 0, time.perf_counter()
    made = None
    try:
        for s in chosen:
            shard = plan[s]
            path = shard_file(checkpoint_dir, shard, indices) if checkpoint_dir is not None else None
            if path is not None and path.exists():
                table = pq.read_table(path, schema=SAMPLES_SCHEMA)
            else:
                if not isinstance(sampler, Sampler):
                    sampler = made = sampler()
                batch = [prompts[i] for i in shard]
                table = _table(sampler.tokenizer, batch, indices, sampler.complete(batch, indices))
                tokens += sum(table.column("num_tokens").to_pylist())
                if path is not None:
                    write_table(table, path)
            tables.append(table)
            bar.update(len(shard) * len(indices))
            bar.set_postfix(tok_per_s=f"{tokens / max(time.perf_counter() - start, 1e-9):.0f}")
    finally:
        bar.close()
        if made is not None:
            made.close()
    return pa.concat_tables(tables) if tables else SAMPLES_SCHEMA.empty_table()
