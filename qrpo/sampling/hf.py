"""The `hf` backend: transformers `generate` on a loaded model, exact and batch-invariant.

Each completion is an exact sample by the Gumbel-max trick, its noise drawn from its own seed
(qrpo/sampling/gumbel.py: why that is exact, and how no generation default of the model can alter the
logits). So a completion depends only on (model, prompt, seed, sample index), whatever its batch: bitwise in
fp32; in bf16 up to rare near-ties, where the matrix kernels' blocking for another number of rows changes a
rounding and so a token (1 completion of 512 between batches of 64 and 128 rows on SmolLM2; benchmarks/README.md).

A prompt's samples share one tokenisation and one prefill: the prompt (but its last token) runs once and
its KV cache is repeated for its n rows, which `generate` then continues from the last prompt token;
each prompt is left-padded to a width that depends on its own length only (`padded_width`), and prompts of
one width are batched together: under bf16 a row's tokens would otherwise depend on its batch's padding.
The forward passes run in the run's precision (`params.precision`, qrpo/precision.py): fp32 weights, bf16
autocast where chosen. transformers is imported when sampling starts (`complete`), not with this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pyarrow as pa
import torch

from qrpo.precision import autocast
from qrpo.sampling.base import (
    Completion, Prompt, Sampler, SamplingParams, encode_prompts, eos_ids, finish, row_seed, sample_table,
)

PAD_MULTIPLE = 16


def padded_width(length: int) -> int:
    """The width a prompt of `length` tokens is left-padded to: the next multiple of PAD_MULTIPLE. It depends
    on the prompt alone, so a row's input (its padding, hence every kernel's blocking of its keys) is the same
    whatever prompts share its batch: bf16 rounding amplifies the last-bit differences that another padding
    makes in attention (fp32 does not), and then a completion would depend on its batch."""
    return -(-length // PAD_MULTIPLE) * PAD_MULTIPLE


class HFSampler(Sampler):
    """`generate` on a loaded model; `batch_size` bounds the sequences per call."""

    backend = "hf"

    def __init__(self, model, tokenizer, params: SamplingParams, batch_size: int = 16):
        super().__init__(tokenizer, params)
        self.model, self.batch_size = model.eval(), batch_size

    @classmethod
    def from_config(cls, cfg, model_path: Path, params: SamplingParams, tokenizer) -> "HFSampler":
        """sampler.backend=hf: the prepared model loaded with transformers."""
        from qrpo.models import load_policy

        model, _ = load_policy(model_path)  # fp32 weights; params.precision is the autocast
        return cls(model, tokenizer, params, cfg.batch_size)

    def _batches(self, prompts: Sequence[Prompt], n: int) -> list[list[int]]:
        """Prompt positions grouped by padded width (`padded_width`), in order of it, max(1, batch_size // n)
        prompts a batch: a batch never mixes widths."""
        per_batch = max(1, self.batch_size // n)
        by_width: dict[int, list[int]] = {}
        for i in sorted(range(len(prompts)), key=lambda i: (len(prompts[i].prompt_ids), i)):
            by_width.setdefault(padded_width(len(prompts[i].prompt_ids)), []).append(i)
        return [group[i : i + per_batch] for _, group in sorted(by_width.items()) for i in range(0, len(group), per_batch)]

    def _shared_prefix_cache(self, input_ids: torch.Tensor, attention: torch.Tensor, n: int):
        """The KV cache of each prompt but its last token, computed once per prompt and repeated for its n rows
        ([b, T - 1] -> a cache of b * n rows); `generate` then runs the last prompt token of every row. Positions
        as `generate` numbers them (left padding: first real token at 0, padding at 1). None for 1-token prompts."""
        if input_ids.shape[1] < 2:
            return None
        prefix, mask = input_ids[:, :-1], attention[:, :-1]
        positions = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 1)
        cache = self.model(input_ids=prefix, attention_mask=mask, position_ids=positions, use_cache=True,
                           logits_to_keep=1).past_key_values
        cache.batch_repeat_interleave(n)
        return cache

    @torch.no_grad()
    def complete(self, prompts: Sequence[Prompt], indices: range) -> list[list[Completion]]:
        from transformers import LogitsProcessorList

        from qrpo.sampling.gumbel import GumbelNoise, exact_generation_config, installed

        n, device, pad = len(indices), self.model.device, self.tokenizer.pad_token_id
        gen = exact_generation_config(self.tokenizer, self.params.max_new_tokens)
        eos = eos_ids(self.tokenizer)
        out: list[list[Completion]] = [[] for _ in prompts]
        for batch in self._batches(prompts, n):
            width = padded_width(len(prompts[batch[0]].prompt_ids))  # the same for every prompt of the batch
            input_ids = torch.tensor([[pad] * (width - len(prompts[i].prompt_ids)) + list(prompts[i].prompt_ids)
                                      for i in batch], device=device)  # [b, T]
            attention = (torch.arange(width, device=device)[None, :]
                         >= torch.tensor([width - len(prompts[i].prompt_ids) for i in batch], device=device)[:, None]).long()
            # rows are (prompt, sample index), index fastest
            seeds = [row_seed(self.params.seed, prompts[i].prompt_id, k) for i in batch for k in indices]
            noise = GumbelNoise(seeds, device, self.params.temperature, self.params.top_p)
            with installed(self.model, gen), autocast(self.params.precision, device):
                cache = self._shared_prefix_cache(input_ids, attention, n)
                generated = self.model.generate(input_ids=input_ids.repeat_interleave(n, 0),
                                                attention_mask=attention.repeat_interleave(n, 0), past_key_values=cache,
                                                generation_config=gen, logits_processor=LogitsProcessorList([noise]))
            # generated: [b * n, T + new]
            new = generated[:, width:].tolist()
            for row, tokens in enumerate(new):
                out[batch[row // n]].append(finish(tokens, eos, self.params.max_new_tokens))
        return out


def sample_completions(
    model,
    tokenizer,
    prompts: pa.Table,  # prompt_id, prompt (and messages, when present)
    num_samples: int,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    shard_prompts: int = 16,
    seed: int = 0,
    precision: str = "fp32",
    checkpoint_dir=None,
    desc: str = "sampling",
) -> pa.Table:
    """`num_samples` completions per prompt from a loaded model (the samples table of qrpo.sampling.base)."""
    params = SamplingParams(max_new_tokens=max_new_tokens, seed=seed, temperature=temperature, top_p=top_p, precision=precision)
    sampler = HFSampler(model, tokenizer, params, batch_size)
    return sample_table(sampler, encode_prompts(tokenizer, prompts), range(num_samples), shard_prompts=shard_prompts,
                        checkpoint_dir=checkpoint_dir, desc=desc)
