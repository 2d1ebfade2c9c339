"""The `hf` backend: transformers `generate`, batch-invariant exact sampling by the Gumbel-max trick.

Sampling a token from softmax(l) is the same as taking argmax(l + g) with g i.i.d. Gumbel(0, 1)
(Gumbel 1954; e.g. Maddison et al. 2014, "A* Sampling", §2). So we decode greedily over perturbed
logits: `GumbelNoise`, a LogitsProcessor, adds to each row the noise drawn from that row's own
torch.Generator, seeded with the row's `row_seed` (one draw of V uniforms per row per step). Each
completion is then an exact sample of the model at temperature 1 that depends only on (model,
prompt, seed, sample index), whatever the batch it was generated in.

Exactness also needs nothing else to touch the logits. `generate` merges the model's own
`generation_config` into unset fields, so a model shipped with top_k=50, repetition_penalty=1.2 or
suppress_tokens would silently change the distribution: `exact_generation_config` sets every
logit-altering option to its neutral value and `generate` runs with it installed as the model's
generation config for the call. tests/qrpo/sampling/test_sampling.py proves it on a hostile model
(`test_hostile_generation_defaults_are_ignored_every_token_is_argmax_of_logits_plus_its_noise`: every
token is the argmax of the model's own logits plus its row's noise) and checks the config itself
(`test_exact_generation_config_sets_every_logit_altering_option_neutral`).

A prompt's samples share one tokenisation and one prefill: the prompt (but its last token) runs once and
its KV cache is repeated for its n rows, which `generate` then continues from the last prompt token;
each prompt is left-padded to a width that depends on its own length only (`padded_width`), and prompts of
one width are batched together: under bf16 a row's tokens would otherwise depend on its batch's padding.
The forward passes run in the run's precision (`params.precision`, qrpo/precision.py): fp32 weights, bf16
autocast where chosen.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from qrpo.precision import autocast
from qrpo.sampling.base import (
    Completion, Prompt, Sampler, SamplingParams, encode_prompts, eos_ids, finish, row_seed, sample_table,
)


def exact_generation_config(tokenizer, max_new_tokens: int) -> GenerationConfig:
    """Greedy decoding with every option that alters logits neutral (the noise does the sampling)."""
    eos = sorted(eos_ids(tokenizer))
    return GenerationConfig(
        do_sample=False, num_beams=1, num_return_sequences=1, use_cache=True,
        max_new_tokens=max_new_tokens, min_new_tokens=0,
        temperature=1.0, top_k=None, top_p=1.0, min_p=None, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0,
        repetition_penalty=1.0, encoder_repetition_penalty=1.0, length_penalty=1.0, no_repeat_ngram_size=0,
        encoder_no_repeat_ngram_size=0, bad_words_ids=None, suppress_tokens=None, begin_suppress_tokens=None,
        forced_bos_token_id=None, forced_eos_token_id=None, sequence_bias=None, guidance_scale=None,
        renormalize_logits=False, remove_invalid_values=False, exponential_decay_length_penalty=None,
        watermarking_config=None, stop_strings=None,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=eos[0] if len(eos) == 1 else eos,
    )


@contextlib.contextmanager
def _installed(model, config: GenerationConfig):
    """Make `config` the model's generation config for the call, so that no default leaks in."""
    saved = model.generation_config
    model.generation_config = config
    try:
        yield
    finally:
        model.generation_config = saved


def to_gumbel_(u: torch.Tensor) -> torch.Tensor:
    """Uniforms in [0, 1) -> standard Gumbel draws, in place: -log(-log(u)), u clamped to 1e-20."""
    return u.clamp_(min=1e-20).log_().neg_().log_().neg_()


def gumbel(generator: torch.Generator, vocab: int) -> torch.Tensor:
    """One step of a row's noise: V standard Gumbel draws [V] (float32, on the generator's device)."""
    return to_gumbel_(torch.rand(vocab, generator=generator, device=generator.device, dtype=torch.float32))


def row_generators(seeds: Sequence[int], device) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(s) for s in seeds]


class GumbelNoise(LogitsProcessor):
    """Temperature, top-p, then per-row Gumbel noise: argmax of the result is a sample of the
    (tempered, nucleus-restricted) distribution."""

    def __init__(self, seeds: Sequence[int], device, temperature: float = 1.0, top_p: float = 1.0):
        self.generators = row_generators(seeds, device)
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float()  # [rows, V]: dim 1 is the vocabulary
        if self.temperature != 1.0:
            scores = scores / self.temperature
        if self.top_p < 1.0:
            sorted_scores, order = scores.sort(descending=True)
            probs = sorted_scores.softmax(1)
            drop = probs.cumsum(1) - probs >= self.top_p  # the tokens ranked above it already reach top_p
            scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
        noise = torch.empty_like(scores)  # [rows, V]: each row's uniforms from its own generator, the logs at once
        for row, generator in enumerate(self.generators):
            torch.rand(scores.shape[1], generator=generator, out=noise[row])
        return scores + to_gumbel_(noise)


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
            with _installed(self.model, gen), autocast(self.params.precision, device):
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
