"""Reuse of sampled pools: prefixes, extension (never redrawing), sampling the largest need once, truncation."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qrpo.store.artifacts import ArtifactStore
from qrpo.sampling import HFSampler, SamplingParams, encode_prompts, sample_table
from qrpo.sampling.pool import available, pool_key, sample_with_reuse

PROMPTS = pa.table({"prompt_id": [f"p{i}" for i in range(4)], "prompt": [f"Tell me about thing {i}." for i in range(4)]})
SOURCE = {"step": "model", "key": "tiny", "subdir": ""}


class Recorder:
    """sample_range for the pool, recording which sample indices it was asked to draw."""

    def __init__(self, model, tokenizer, params):
        self.sampler, self.prompts, self.calls = HFSampler(model, tokenizer, params, 8), encode_prompts(tokenizer, PROMPTS), []

    def __call__(self, indices, partial):
        self.calls.append((indices.start, indices.stop))
        return sample_table(self.sampler, self.prompts, indices, shard_prompts=2, checkpoint_dir=partial)


def _request(store, recorder, params, n, **kw):
    pool = pool_key(SOURCE, "data", "train", params, kw.get("drop_truncated", False))
    return sample_with_reuse(store, pool, n, PROMPTS.column("prompt_id").to_pylist(), recorder, **kw)


def test_four_then_six_extends_by_two_and_equals_six_at_once(tiny_policy, tmp_path):
    model, tokenizer = tiny_policy
    params = SamplingParams(max_new_tokens=8, seed=11)
    store, rec = ArtifactStore(tmp_path / "a"), Recorder(model, tokenizer, params)
    four, sampled4 = _request(store, rec, params, 4)
    six, sampled6 = _request(store, rec, params, 6)
    assert sampled4 and sampled6 and rec.calls == [(0, 4), (4, 6)], "N=6 must draw indices 4 and 5 only"
    assert six.manifest["extended_from"] == four.key and six.key.endswith("-n00006")

    fresh, once = ArtifactStore(tmp_path / "b"), Recorder(model, tokenizer, params)
    at_once, _ = _request(fresh, once, params, 6)
    assert once.calls == [(0, 6)]
    assert six.table().to_pylist() == at_once.table().to_pylist()
    rows = six.table().to_pylist()
    assert [(r["prompt_id"], r["sample_index"]) for r in rows] == [(f"p{i}", s) for i in range(4) for s in range(6)]


def test_a_smaller_request_takes_the_prefix_of_a_larger_pool_without_sampling(tiny_policy, tmp_path):
    model, tokenizer = tiny_policy
    params = SamplingParams(max_new_tokens=8, seed=12)
    store, rec = ArtifactStore(tmp_path), Recorder(model, tokenizer, params)
    six, _ = _request(store, rec, params, 6)
    two, sampled = _request(store, rec, params, 2)
    assert not sampled and rec.calls == [(0, 6)]
    assert two.manifest["derived_from"] == six.key
    assert two.table().to_pylist() == [r for r in six.table().to_pylist() if r["sample_index"] < 2]
    again, sampled = _request(store, rec, params, 2)
    assert not sampled and again.key == two.key
    other_seed = SamplingParams(max_new_tokens=8, seed=13)
    _, sampled = _request(store, Recorder(model, tokenizer, other_seed), other_seed, 2)
    assert sampled, "a different seed is a different pool"


def test_min_samples_per_prompt_samples_the_largest_need_once(tiny_policy, tmp_path):
    model, tokenizer = tiny_policy
    params = SamplingParams(max_new_tokens=8, seed=14)
    store, rec = ArtifactStore(tmp_path), Recorder(model, tokenizer, params)
    three, sampled = _request(store, rec, params, 3, at_least=7)
    assert sampled and sorted(available(store, three.manifest["pool"])) == [3, 7]
    assert three.table().num_rows == 12
    for n in (5, 7, 4):
        _, sampled = _request(store, rec, params, n, at_least=7)
        assert not sampled
    assert rec.calls == [(0, 7)]


def test_truncated_samples_are_counted_and_dropped_on_request(tiny_policy, tmp_path):
    model, tokenizer = tiny_policy
    params = SamplingParams(max_new_tokens=3, seed=15)  # a random tiny model rarely says EOS within 3 tokens
    store, rec = ArtifactStore(tmp_path), Recorder(model, tokenizer, params)
    kept, _ = _request(store, rec, params, 5)
    dropped, _ = _request(store, rec, params, 5, drop_truncated=True)
    truncated = sum(not r["finished"] for r in kept.table().to_pylist())
    assert truncated > 0
    assert kept.manifest["metrics"]["truncated"] == truncated and kept.manifest["metrics"]["dropped"] == 0
    assert dropped.manifest["metrics"]["dropped"] == truncated == dropped.manifest["metrics"]["truncated"]
    assert dropped.table().num_rows == 20 - truncated and all(r["finished"] for r in dropped.table().to_pylist())


SCRIPT = textwrap.dedent("""
    import sys, time, pyarrow as pa, torch
    from pathlib import Path
    from qrpo.store.artifacts import ArtifactStore
    from qrpo.models import load_policy
    from qrpo.sampling import HFSampler, SamplingParams, encode_prompts, sample_table
    from qrpo.sampling.pool import pool_key, sample_with_reuse

    model_dir, root, log, delay = sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])
    model, tokenizer = load_policy(Path(model_dir), torch.device("cpu"))
    prompts = pa.table({"prompt_id": [f"p{i}" for i in range(10)], "prompt": [f"Prompt number {i}" for i in range(10)]})
    params = SamplingParams(max_new_tokens=12, seed=21)

    class Slow(HFSampler):
        def complete(self, batch, indices):
            with log.open("a") as f:
                f.write(",".join(p.prompt_id for p in batch) + "\\n")
            time.sleep(delay)
            return super().complete(batch, indices)

    encoded = encode_prompts(tokenizer, prompts)
    sample_range = lambda idx, partial: sample_table(Slow(model, tokenizer, params, 8), encoded, idx, shard_prompts=2,
                                                     checkpoint_dir=partial)
    pool = pool_key({"step": "model", "key": "tiny"}, "d", "train", params, False)
    artifact, _ = sample_with_reuse(ArtifactStore(root), pool, 3, prompts.column("prompt_id").to_pylist(), sample_range)
    print(artifact.path)
""")


def _run(script, tiny_model_dir, root, log, delay):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    return subprocess.Popen([sys.executable, str(script), str(tiny_model_dir), str(root), str(log), str(delay)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_gives_exactly_the_uninterrupted_rows(tiny_model_dir, tmp_path):
    """A real SIGKILL after the first shard lands; the re-run redoes no finished shard, loses and
    duplicates no row, and equals a run that was never interrupted."""
    script = tmp_path / "sample.py"
    script.write_text(SCRIPT)
    killed_root, clean_root = tmp_path / "killed", tmp_path / "clean"
    log = tmp_path / "killed.log"
    proc = _run(script, tiny_model_dir, killed_root, log, 0.5)
    clean = _run(script, tiny_model_dir, clean_root, tmp_path / "clean.log", 0.0)  # meanwhile, the uninterrupted run
    deadline = time.time() + 120
    while not list(killed_root.glob(".partial/*/shard-*.parquet")):
        assert proc.poll() is None and time.time() < deadline, "the sampling run ended before its first shard landed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    landed = {p.name: p.stat().st_mtime_ns for p in killed_root.glob(".partial/*/shard-*.parquet")}
    assert 1 <= len(landed) < 5 and not ArtifactStore(killed_root).keys("samples")

    done_before = len(log.read_text().splitlines())
    resumed = _run(script, tiny_model_dir, killed_root, log, 0.0)
    assert resumed.wait(timeout=300) == 0
    redone = log.read_text().splitlines()[done_before:]
    finished_prompts = {f"p{i}" for name in landed for i in range(int(name[7:14]), int(name[15:22]))}
    assert redone and not finished_prompts & {p for line in redone for p in line.split(",")}, "a finished shard was redone"

    assert clean.wait(timeout=300) == 0
    got = pq.read_table(Path(resumed.stdout.read().strip()) / "data.parquet").to_pylist()
    want = pq.read_table(Path(clean.stdout.read().strip()) / "data.parquet").to_pylist()
    assert len(got) == 30 and len({(r["prompt_id"], r["sample_index"]) for r in got}) == 30
    assert got == want
