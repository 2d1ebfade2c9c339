"""The hf backend: exact, batch-invariant sampling; the samples table; shards; the prefix property."""

import pyarrow as pa
import pyarrow.compute as pc
import torch
from transformers import GenerationConfig

from qrpo.sampling import HFSampler, SamplingParams, encode_prompts, row_seed, sample_completions, sample_table
from qrpo.sampling.base import SAMPLES_SCHEMA, finish
from qrpo.sampling.gumbel import GumbelNoise, exact_generation_config, gumbel, row_generators

PROMPTS = pa.table({"prompt_id": [f"p{i}" for i in range(5)],
                    "prompt": [f"Say something nice number {i}." + " Please." * (i % 3) for i in range(5)]})


def _sorted(table):
    return table.sort_by([("prompt_id", "ascending"), ("sample_index", "ascending")]).to_pylist()


def test_row_seeds_are_stable_hashes_of_seed_prompt_and_index():
    assert row_seed(0, "p1", 3) == row_seed(0, "p1", 3) == 3149825858961049026  # pinned: a change re-keys every sample
    assert len({row_seed(s, p, i) for s in (0, 1) for p in ("p1", "p2") for i in range(3)}) == 12


def test_finish_cuts_after_the_first_eos_and_says_why():
    assert finish([5, 6, 1, 0, 0], {1}, 5).token_ids == [5, 6, 1] and finish([5, 6, 1, 0], {1}, 5).finish_reason == "stop"
    assert finish([5, 6, 7], {1}, 3).finish_reason == "length"


def test_samples_have_one_row_per_completion_with_ids_text_lengths_and_finish_reason(tiny_policy):
    model, tokenizer = tiny_policy
    table = sample_completions(model, tokenizer, PROMPTS, 3, max_new_tokens=6, batch_size=4, shard_prompts=2, seed=1)
    assert table.schema == SAMPLES_SCHEMA and table.num_rows == 15
    rows = table.to_pylist()
    assert [(r["prompt_id"], r["sample_index"]) for r in rows] == [(f"p{i}", s) for i in range(5) for s in range(3)]
    for r in rows:
        assert 1 <= r["num_tokens"] == len(r["completion_ids"]) <= 6
        assert r["finished"] == (r["finish_reason"] == "stop") == (r["completion_ids"][-1] == tokenizer.eos_token_id)
        assert r["finish_reason"] == "stop" or r["num_tokens"] == 6
        assert r["completion"] == tokenizer.decode(r["completion_ids"], skip_special_tokens=True)
    assert len({tuple(r["completion_ids"]) for r in rows}) == 15, "samples of one prompt must differ"


def test_a_completion_depends_on_its_seed_only_not_on_batch_shard_or_count(tiny_policy):
    """Batch size, shard size and N change; every (prompt, index) keeps its completion: prefix property."""
    model, tokenizer = tiny_policy
    four = sample_completions(model, tokenizer, PROMPTS, 4, max_new_tokens=10, batch_size=16, shard_prompts=5, seed=3)
    six = sample_completions(model, tokenizer, PROMPTS, 6, max_new_tokens=10, batch_size=3, shard_prompts=2, seed=3)
    assert _sorted(six.filter(pc.less(six.column("sample_index"), 4))) == _sorted(four)
    other_seed = sample_completions(model, tokenizer, PROMPTS, 4, max_new_tokens=10, seed=4)
    assert _sorted(other_seed) != _sorted(four)


def test_hostile_generation_defaults_are_ignored_every_token_is_argmax_of_logits_plus_its_noise(tiny_policy):
    """A model shipped with top-k 2, temperature 0.1, repetition penalty 3, no repeated 1-grams, suppressed
    and banned tokens and a minimum length: every sampled token must still be argmax(logits + the row's
    Gumbel noise) under the model's own logits, i.e. an exact sample of pi_ref at temperature 1."""
    model, tokenizer = tiny_policy
    model.generation_config = GenerationConfig(
        do_sample=True, top_k=2, temperature=0.1, top_p=0.5, repetition_penalty=3.0, no_repeat_ngram_size=1,
        suppress_tokens=list(range(100, 140)), begin_suppress_tokens=[200], bad_words_ids=[[150], [151]],
        min_new_tokens=12, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    hostile = model.generation_config
    params = SamplingParams(max_new_tokens=12, seed=5)
    prompts = encode_prompts(tokenizer, PROMPTS)[:3]
    completions = HFSampler(model, tokenizer, params, batch_size=8).complete(prompts, range(4))
    assert model.generation_config is hostile, "the model's own config is restored after sampling"

    repeated = suppressed = 0
    for prompt, per_prompt in zip(prompts, completions):
        for index, completion in enumerate(per_prompt):
            tokens = completion.token_ids
            ids = torch.tensor([list(prompt.prompt_ids) + tokens])
            with torch.no_grad():
                logits = model(ids).logits[0, len(prompt.prompt_ids) - 1 : -1].float()  # [len(tokens), V]
            generator = row_generators([row_seed(5, prompt.prompt_id, index)], "cpu")[0]
            for t, token in enumerate(tokens):
                assert int((logits[t] + gumbel(generator, logits.shape[-1])).argmax()) == token
            repeated += len(set(tokens)) < len(tokens)
            suppressed += any(100 <= tok < 140 or tok in (150, 151) for tok in tokens)
    assert repeated, "no_repeat_ngram_size=1 leaked in: no completion repeats a token"
    assert suppressed, "suppress_tokens / bad_words_ids leaked in: no completion uses them"


def test_exact_generation_config_sets_every_logit_altering_option_neutral():
    class Tok:
        pad_token_id, eos_token_id = 0, 1

    gen = exact_generation_config(Tok(), 8)
    assert (gen.do_sample, gen.num_beams, gen.repetition_penalty, gen.no_repeat_ngram_size, gen.min_new_tokens) == (False, 1, 1.0, 0, 0)
    assert gen.use_cache and gen.max_new_tokens == 8 and gen.suppress_tokens is None and gen.bad_words_ids is None


def test_top_p_and_temperature_change_the_distribution_only_when_asked(tiny_policy):
    model, tokenizer = tiny_policy
    exact = sample_completions(model, tokenizer, PROMPTS, 4, max_new_tokens=8, seed=2)
    nucleus = sample_completions(model, tokenizer, PROMPTS, 4, max_new_tokens=8, seed=2, temperature=0.5, top_p=1e-6)
    distinct = lambda t: len({tuple(r["completion_ids"]) for r in t.to_pylist()})  # noqa: E731
    assert distinct(exact) == 20
    per_prompt = {}
    for r in nucleus.to_pylist():
        per_prompt.setdefault(r["prompt_id"], set()).add(tuple(r["completion_ids"]))
    assert all(len(c) == 1 for c in per_prompt.values()), "top_p=1e-6 keeps only the most likely token: greedy"


def test_an_interrupted_run_resumes_from_its_shards_with_identical_rows(tiny_policy, tmp_path):
    model, tokenizer = tiny_policy
    params = SamplingParams(max_new_tokens=6, seed=7)
    prompts = encode_prompts(tokenizer, PROMPTS)
    reference = sample_table(HFSampler(model, tokenizer, params, 4), prompts, range(2), shard_prompts=2)

    class PowerCut(HFSampler):
        calls = 0

        def complete(self, batch, indices):
            PowerCut.calls += 1
            if PowerCut.calls == 3:
                raise KeyboardInterrupt("power cut")
            return super().complete(batch, indices)

    try:
        sample_table(PowerCut(model, tokenizer, params, 4), prompts, range(2), shard_prompts=2, checkpoint_dir=tmp_path)
    except KeyboardInterrupt:
        pass
    assert len(list(tmp_path.glob("shard-*.parquet"))) == 2
    PowerCut.calls = -100  # no more cuts; count the shards redone
    resumed = sample_table(PowerCut(model, tokenizer, params, 4), prompts, range(2), shard_prompts=2, checkpoint_dir=tmp_path)
    assert PowerCut.calls == -99, "finished shards were redone"
    assert resumed.to_pylist() == reference.to_pylist()


def test_gumbel_noise_is_standard_gumbel_in_float32_whatever_the_default_dtype():
    draws = gumbel(torch.Generator().manual_seed(0), 400_000).double()
    # Gumbel(0, 1): mean = Euler's gamma, variance = pi^2 / 6 (standard errors ~0.002 and ~0.006 here)
    assert abs(draws.mean().item() - 0.5772156649) < 0.01 and abs(draws.var().item() - torch.pi**2 / 6) < 0.03
    first = gumbel(torch.Generator().manual_seed(3), 50)
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:  # a user's float64 default must not re-key every sample
        again = gumbel(torch.Generator().manual_seed(3), 50)
    finally:
        torch.set_default_dtype(saved)
    assert first.dtype == again.dtype == torch.float32 and torch.equal(first, again)


def _noise(seeds, vocab, steps=1):
    """The rows' noise for `steps` steps, drawn independently of GumbelNoise: [steps, rows, V]."""
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return torch.stack([torch.stack([gumbel(g, vocab) for g in generators]) for _ in range(steps)])


def _nucleus(row: torch.Tensor, top_p: float) -> set[int]:
    """The smallest set of most likely tokens whose probability reaches top_p, by a plain loop."""
    probs = row.double().softmax(-1).tolist()
    kept, mass = set(), 0.0
    for token in sorted(range(len(probs)), key=lambda i: -probs[i]):
        kept.add(token)
        mass += probs[token]
        if mass >= top_p:
            return kept
    return kept


def test_gumbel_noise_adds_each_rows_own_noise_to_the_tempered_logits():
    seeds, scores = [11, 12, 13], torch.randn(3, 40, generator=torch.Generator().manual_seed(1)) * 3
    ids = torch.zeros(3, 1, dtype=torch.long)
    exact = GumbelNoise(seeds, "cpu")
    out = torch.stack([exact(ids, scores) for _ in range(2)])  # two steps: each row's generator moves on
    assert torch.equal(out, scores + _noise(seeds, 40, steps=2)), "defaults: temperature 1, no nucleus"
    for temperature in (0.5, 2.0):
        assert torch.allclose(GumbelNoise(seeds, "cpu", temperature=temperature)(ids, scores),
                              scores / temperature + _noise(seeds, 40)[0], atol=1e-6)


def test_top_p_one_keeps_every_token_even_where_the_tail_underflows_the_cumulative_sum():
    scores = torch.tensor([[30.0, 0.0, -5.0, -40.0, -80.0, -80.0]])  # float32 cumsum reaches 1.0 after the first token
    out = GumbelNoise([4], "cpu", top_p=1.0)(torch.zeros(1, 1, dtype=torch.long), scores)
    assert torch.isfinite(out).all() and torch.equal(out, scores + _noise([4], 6)[0])


def test_top_p_keeps_exactly_the_nucleus_of_each_row():
    generator = torch.Generator().manual_seed(2)
    scores = torch.randn(4, 30, generator=generator) * torch.tensor([[0.5], [2.0], [4.0], [1.0]])  # rows of different spread
    ids = torch.zeros(4, 1, dtype=torch.long)
    for top_p in (0.3, 0.6, 0.9):
        out = GumbelNoise([1, 2, 3, 4], "cpu", top_p=top_p)(ids, scores)
        noise = _noise([1, 2, 3, 4], 30)[0]
        for r in range(4):
            kept = _nucleus(scores[r], top_p)
            assert {i for i in range(30) if torch.isfinite(out[r, i])} == kept, (top_p, r)
            assert torch.equal(out[r, sorted(kept)], (scores[r] + noise[r])[sorted(kept)])
    # the boundary: a token whose higher-ranked tokens hold exactly top_p is dropped (probabilities 1/2, 1/4, 1/8, 1/8)
    exact = torch.tensor([[3.0, 2.0, 1.0, 1.0]]) * torch.log(torch.tensor(2.0))
    probs = exact.softmax(-1)
    assert probs.tolist() == [[0.5, 0.25, 0.125, 0.125]]
    out = GumbelNoise([5], "cpu", top_p=0.75)(torch.zeros(1, 1, dtype=torch.long), exact)
    assert torch.isfinite(out[0]).tolist() == [True, True, False, False]
