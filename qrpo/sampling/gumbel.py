"""Exact sampling through transformers `generate`: the Gumbel-max trick, batch-invariant.

Sampling a token from softmax(l) is the same as taking argmax(l + g) with g i.i.d. Gumbel(0, 1)
(Gumbel 1954; e.g. Maddison et al. 2014, "A* Sampling", §2). So we decode greedily over perturbed
logits: `GumbelNoise`, a LogitsProcessor, adds to each row the noise drawn from that row's own
torch.Generator, seeded with the row's `row_seed` (one draw of V uniforms per row per step). Each
completion is then an exact sample of the model at temperature 1 that depends only on (model,
prompt, seed, sample index), whatever the batch it was generated in (the noise exactly; the model's logits
exactly in fp32, and in bf16 up to rare near-ties: qrpo/sampling/hf.py).

Exactness also needs nothing else to touch the logits. `generate` merges the model's own
`generation_config` into unset fields, so a model shipped with top_k=50, repetition_penalty=1.2 or
suppress_tokens would silently change the distribution: `exact_generation_config` sets every
logit-altering option to its neutral value and `installed` makes it the model's generation config for
the call. tests/qrpo/sampling/test_sampling.py proves it on a hostile model
(`test_hostile_generation_defaults_are_ignored_every_token_is_argmax_of_logits_plus_its_noise`: every
token is the argmax of the model's own logits plus its row's noise) and checks the config itself
(`test_exact_generation_config_sets_every_logit_altering_option_neutral`).

This module imports transformers; `qrpo.sampling.hf` imports it only when it samples, so validating a
config (which locates `HFSampler`) and a fully cached re-run never pay for that import.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor

from qrpo.sampling.base import eos_ids


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
def installed(model, config: GenerationConfig):
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
