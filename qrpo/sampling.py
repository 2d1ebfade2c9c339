"""Sampling completions with transformers `generate`, checkpointed per shard.

Reference sampling must be exact sampling from pi_ref: temperature 1, top-p 1, no top-k and no
repetition penalty, whatever the model's own generation defaults say. Each shard of prompts is
seeded from (seed, shard index) and written as soon as it is done, so an interrupted run resumes
at the first missing shard and produces exactly the rows an uninterrupted run would have.

vLLM and OpenAI-compatible servers are GPU-worker concerns that plug in beside this sampler.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from qrpo.artifacts import write_table
from qrpo.models import prompt_token_ids


def _generation_config(tokenizer, max_new_tokens: int, temperature: float, top_p: float) -> GenerationConfig:
    return GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_p=top_p,
        top_k=0,  # 0 disables top-k: sample from the full distribution
        repetition_penalty=1.0,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def _trim(tokens: list[int], eos_id: int) -> tuple[list[int], bool]:
    """Completion tokens up to and including the first EOS; whether it finished."""
    if eos_id in tokens:
        return tokens[: tokens.index(eos_id) + 1], True
    return tokens, False


@torch.no_grad()
def _generate(model, tokenizer, prompt_ids: list[list[int]], gen: GenerationConfig) -> list[list[int]]:
    width = max(map(len, prompt_ids))
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids], device=model.device)  # [b, T]
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=model.device)
    out = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=gen)  # [b, T + new]
    return out[:, width:].tolist()


def sample_completions(
    model,
    tokenizer,
    prompts: pa.Table,  # prompt_id, prompt
    num_samples: int,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    shard_prompts: int = 16,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    desc: str = "sampling",
) -> pa.Table:
    """`num_samples` completions per prompt.

    Returns a table with one row per completion: prompt_id, sample_index, prompt_ids, completion_ids
    (the sampled tokens, EOS included when generated), completion (decoded text), num_tokens, finished.
    """
    model.eval()
    gen = _generation_config(tokenizer, max_new_tokens, temperature, top_p)
    ids, texts = prompts.column("prompt_id").to_pylist(), prompts.column("prompt").to_pylist()
    shards = [range(i, min(i + shard_prompts, len(ids))) for i in range(0, len(ids), shard_prompts)]
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tables = []
    bar = tqdm(total=len(ids) * num_samples, desc=desc, unit="seq", dynamic_ncols=True)
    tokens_done, start = 0, time.perf_counter()
    for shard_index, shard in enumerate(shards):
        shard_file = checkpoint_dir / f"shard-{shard_index:05d}.parquet" if checkpoint_dir else None
        if shard_file is not None and shard_file.exists():
            tables.append(pq.read_table(shard_file))
            bar.update(len(shard) * num_samples)
            continue
        torch.manual_seed(seed * 1_000_003 + shard_index)  # the shard's draws do not depend on resumption
        rows = [(ids[i], s, prompt_token_ids(tokenizer, texts[i])) for i in shard for s in range(num_samples)]
        columns = {k: [] for k in ("prompt_id", "sample_index", "prompt_ids", "completion_ids", "completion", "num_tokens", "finished")}
        for b in range(0, len(rows), batch_size):
            batch = rows[b : b + batch_size]
            for (prompt_id, sample_index, p_ids), raw in zip(batch, _generate(model, tokenizer, [r[2] for r in batch], gen)):
                c_ids, finished = _trim(raw, tokenizer.eos_token_id)
                for name, value in zip(columns, (prompt_id, sample_index, p_ids, c_ids,
                                                 tokenizer.decode(c_ids, skip_special_tokens=True), len(c_ids), finished)):
                    columns[name].append(value)
                tokens_done += len(c_ids)
            bar.update(len(batch))
            bar.set_postfix(tok_per_s=f"{tokens_done / (time.perf_counter() - start):.0f}")
        table = pa.table(columns)
        if shard_file is not None:
            write_table(table, shard_file)
        tables.append(table)
    bar.close()
    return pa.concat_tables(tables)
