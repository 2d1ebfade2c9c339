import pyarrow as pa
import pytest

from qrpo.sampling import _generation_config, _trim, sample_completions

PROMPTS = pa.table({"prompt_id": [f"p{i}" for i in range(5)], "prompt": [f"Say something nice number {i}." for i in range(5)]})


def test_reference_sampling_is_exact_sampling_whatever_the_model_defaults(tiny_policy):
    model, tokenizer = tiny_policy
    model.generation_config.top_k, model.generation_config.repetition_penalty = 50, 1.3  # must be ignored
    gen = _generation_config(tokenizer, 8, 1.0, 1.0)
    assert (gen.do_sample, gen.temperature, gen.top_p, gen.top_k, gen.repetition_penalty) == (True, 1.0, 1.0, 0, 1.0)


def test_trim_keeps_tokens_up_to_and_including_the_first_eos():
    assert _trim([5, 6, 1, 0, 0], eos_id=1) == ([5, 6, 1], True)
    assert _trim([5, 6, 7], eos_id=1) == ([5, 6, 7], False)


def test_samples_have_one_row_per_completion_with_ids_text_and_lengths(tiny_policy):
    model, tokenizer = tiny_policy
    table = sample_completions(model, tokenizer, PROMPTS, 3, max_new_tokens=6, batch_size=4, shard_prompts=2, seed=1)
    assert table.num_rows == 15
    rows = table.to_pylist()
    assert sorted((r["prompt_id"], r["sample_index"]) for r in rows) == [(f"p{i}", s) for i in range(5) for s in range(3)]
    for r in rows:
        assert 1 <= r["num_tokens"] == len(r["completion_ids"]) <= 6
        assert r["finished"] == (r["completion_ids"][-1] == tokenizer.eos_token_id)
        assert r["completion"] == tokenizer.decode(r["completion_ids"], skip_special_tokens=True)


def test_an_interrupted_run_resumes_from_its_shards_with_identical_rows(tiny_policy, tmp_path, monkeypatch):
    model, tokenizer = tiny_policy
    kwargs = dict(max_new_tokens=6, batch_size=4, shard_prompts=2, seed=7)
    reference = sample_completions(model, tokenizer, PROMPTS, 2, **kwargs)

    import qrpo.sampling as sampling

    real_generate, calls = sampling._generate, []

    def crash_on_third_batch(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("power cut")
        return real_generate(*args)

    monkeypatch.setattr(sampling, "_generate", crash_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        sample_completions(model, tokenizer, PROMPTS, 2, checkpoint_dir=tmp_path, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00000.parquet", "shard-00001.parquet"]
    monkeypatch.setattr(sampling, "_generate", real_generate)
    resumed = sample_completions(model, tokenizer, PROMPTS, 2, checkpoint_dir=tmp_path, **kwargs)
    assert resumed.to_pylist() == reference.to_pylist()
