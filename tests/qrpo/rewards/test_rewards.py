import json
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from qrpo.config.sections import REWARD_KINDS, RewardConfig, build_section
from qrpo.errors import InputError
from qrpo.rewards import RewardModel, SequenceClassifierReward, build_reward, score_samples
from qrpo.rewards.code import extract_code, program_from_completion
from qrpo.rewards.judge import JudgeReward, parse_score

ROOT = Path(__file__).resolve().parents[3]
TINY_ARCH = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}


def test_vader_scores_warm_answers_above_cold_ones_within_minus_one_to_one():
    reward = build_reward(RewardConfig(name="v", kind="vader", _target_="qrpo.rewards.vader.VaderReward.from_config"))
    scores = reward.score(["q"] * 3, ["I'd be glad to help, what a wonderful idea!", "The file is 3 MB.", "That is awful and stupid."])
    assert scores[0] > scores[1] > scores[2]
    assert scores[1] == 0.0 and np.all(np.abs(scores) <= 1)


def test_tiny_classifier_is_deterministic_continuous_and_batch_invariant():
    texts = ["short", "a somewhat longer answer", "zzz", "another one entirely", "x"]
    a = SequenceClassifierReward.from_config(TINY_ARCH, seed=3, batch_size=2).score(["q"] * 5, texts)
    b = SequenceClassifierReward.from_config(TINY_ARCH, seed=3, batch_size=5).score(["q"] * 5, texts)
    c = SequenceClassifierReward.from_config(TINY_ARCH, seed=3, batch_size=2, length_grouped=False).score(["q"] * 5, texts)
    np.testing.assert_allclose(a, b, atol=1e-5)  # padding must not change a score
    np.testing.assert_allclose(a, c, atol=1e-5)  # nor the length grouping, and scores come back in input order
    assert len(set(np.round(a, 6))) == 5


def test_classifier_uses_its_own_chat_template_and_the_whole_conversation():
    reward = SequenceClassifierReward.from_config(TINY_ARCH, seed=0)
    reward.tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    ids = reward.encode(chat, "hello")
    assert reward.tokenizer.decode(ids) == "<system>be brief<user>hi<assistant>hello"
    row = {"prompt": "hi", "messages": json.dumps(chat)}
    assert reward.score_rows([row], ["hello"])[0] == pytest.approx(reward.score_ids([ids])[0])
    assert reward.score_rows([row], ["hello"])[0] != pytest.approx(reward.score(["hi"], ["hello"])[0])


def test_truncation_policy_keeps_the_start_or_the_end_of_the_answer_and_the_request():
    answer = "".join(chr(ord("a") + i % 26) for i in range(300))
    for side, kept in (("right", answer[:20]), ("left", answer[-20:])):
        reward = SequenceClassifierReward.from_config(TINY_ARCH, max_length=96, truncation=side)
        reward.tokenizer.chat_template = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}[end]"
        text = reward.tokenizer.decode(reward.encode([{"role": "user", "content": "q?"}], answer))
        assert len(reward.encode([{"role": "user", "content": "q?"}], answer)) <= 96
        assert text.startswith("[user]q?[assistant]") and text.endswith("[end]") and kept in text
        long_prompt = "old context " * 40 + "THE REQUEST"
        text = reward.tokenizer.decode(reward.encode([{"role": "user", "content": long_prompt}], answer))
        assert "THE REQUEST[assistant]" in text and text.endswith("[end]") and len(text) <= 96
    with pytest.raises(InputError, match="truncation"):
        build_section(RewardConfig, {"name": "x", "kind": "tiny_classifier", "truncation": "middle"})


def test_unknown_reward_kind_lists_the_families():
    with pytest.raises(InputError, match=", ".join(REWARD_KINDS)):
        build_section(RewardConfig, {"name": "x", "kind": "telepathy", "_target_": "qrpo.rewards.vader.VaderReward.from_config"})


def test_score_samples_pairs_each_completion_with_its_own_prompt_row():
    class PromptLength(RewardModel):
        def score(self, prompts, completions):
            return np.array([len(p) * 100 + len(c) for p, c in zip(prompts, completions)], dtype=np.float64)

    class UsesRow(RewardModel):
        def score(self, prompts, completions):
            raise AssertionError("score_rows must be used")

        def score_rows(self, rows, completions):
            return np.array([row["bonus"] + len(c) for row, c in zip(rows, completions)], dtype=np.float64)

    prompts = pa.table({"prompt_id": ["a", "b"], "prompt": ["x", "yyy"], "bonus": [10, 20]})
    samples = pa.table({"prompt_id": ["b", "a", "b"], "completion": ["1", "22", "333"]})
    assert score_samples(PromptLength(), samples, prompts).tolist() == [301, 102, 303]
    assert score_samples(UsesRow(), samples, prompts).tolist() == [21, 12, 23]


# -- code extraction and the code_tests reward ------------------------------------------------------

def test_code_extraction_rule():
    two = "Draft:\n```python\ndef f(): return 1\n```\nFinal:\n```python\ndef f(): return 2\n```\nDone."
    assert extract_code(two) == "def f(): return 2\n" and extract_code(two, "first") == "def f(): return 1\n"
    assert extract_code("```\nx = 1\n```\n```py\ny = 2\n```\n```text\nz\n```") == "y = 2\n"  # python blocks win
    assert extract_code("```\nx = 1\n```") == "x = 1\n"  # no python block: any fenced block
    assert extract_code("Here:\n```Python\ndef f():\n    return 3") == "def f():\n    return 3"  # cut by max_new_tokens
    assert extract_code("def f():\n    return 4\n") == "def f():\n    return 4\n"  # no fence: the whole text
    assert extract_code("inline ```python x``` is not a fence") == "inline ```python x``` is not a fence"
    program = program_from_completion("```python\ndef f(x: List[int]) -> Optional[int]:\n    return heappop(x)\n```")
    assert program.startswith("import bisect") and "from typing import *" in program and program.endswith("return heappop(x)\n")
    with pytest.raises(InputError, match="code_block"):
        extract_code("x", "middle")


def _code_prompts(n=3):
    rows = [json.loads(line) for line in (ROOT / "data/code/problems.jsonl").read_text().splitlines()[:n]]
    return pa.table({"prompt_id": [r["task_id"] for r in rows], "prompt": [r["query"] for r in rows],
                     "entry_point": [r["entry_point"] for r in rows],
                     # one column as LeetCodeDataset's list of structs, to show both forms are read
                     "input_output": [r["input_output"] for r in rows]}), rows


def test_code_tests_reward_is_the_fraction_of_tests_passed_per_sample():
    prompts, rows = _code_prompts()
    # a generous limit: a busy machine must not time out a correct answer (the endless loop costs this long)
    reward = build_reward(build_section(RewardConfig, {"name": "c", "kind": "code_tests", "_target_": "qrpo.rewards.code.CodeTestsReward.from_config", "wall_seconds": 8.0, "max_workers": 6}))
    evens = rows[0]
    partial = evens["completion"].replace("x % 2 == 0", "x % 2 == 0 and x > 0")  # wrong only when a negative even is present
    samples = pa.table({"prompt_id": [evens["task_id"]] * 4 + [rows[1]["task_id"]],
                        "completion": [f"Sure!\n```python\n{evens['completion']}```\nThis works.", "I don't know.",
                                       f"```python\n{partial}```", "```python\nclass Solution:\n    def sumOfEvens(self, nums):\n        while True: pass\n```",
                                       rows[1]["completion"]]})
    scores = score_samples(reward, samples, prompts)
    passed_partial = sum(sum(x for x in json.loads("[" + c["input"].split("=", 1)[1] + "]")[0] if x % 2 == 0 and x > 0)
                         == int(c["output"]) for c in evens["input_output"])
    assert scores.tolist() == pytest.approx([1.0, 0.0, passed_partial / len(evens["input_output"]), 0.0, 1.0])
    assert 0 < passed_partial < len(evens["input_output"])
    json_form = prompts.set_column(3, "input_output", pa.array([json.dumps(r["input_output"]) for r in rows]))
    assert score_samples(reward, samples.slice(0, 1), json_form).tolist() == [1.0]


def test_code_tests_reward_names_the_missing_columns():
    reward = build_reward(RewardConfig(name="c", kind="code_tests", _target_="qrpo.rewards.code.CodeTestsReward.from_config"))
    prompts = pa.table({"prompt_id": ["p"], "prompt": ["write f"]})
    with pytest.raises(InputError, match="keep_columns"):
        score_samples(reward, pa.table({"prompt_id": ["p"], "completion": ["def f(): pass"]}), prompts)


# -- callable -------------------------------------------------------------------------------------

def test_callable_reward_calls_a_user_function_with_the_prompt_row(tmp_path, monkeypatch):
    (tmp_path / "my_callable_rewards.py").write_text(
        "def exact(prompt, completion, answer, prompt_id, **row):\n    return float(completion.strip() == answer) + len(prompt) / 100\n"
        "def broken(prompt, completion, **row):\n    return 'high'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "my_callable_rewards", None)  # restored afterwards: the module never outlives this test
    del sys.modules["my_callable_rewards"]
    prompts = pa.table({"prompt_id": ["a", "b"], "prompt": ["2+2?", "3+3?"], "answer": ["4", "6"]})
    samples = pa.table({"prompt_id": ["a", "b", "b"], "completion": ["4", "7", " 6 "]})
    for path in ("my_callable_rewards:exact", "my_callable_rewards.exact"):
        reward = build_reward(RewardConfig(name="c", kind="callable", _target_="qrpo.rewards.callable.CallableReward.from_config", function=path))
        assert score_samples(reward, samples, prompts).tolist() == pytest.approx([1.04, 0.04, 1.04])
    with pytest.raises(InputError, match="not a number"):
        score_samples(build_reward(RewardConfig(name="c", kind="callable", _target_="qrpo.rewards.callable.CallableReward.from_config", function="my_callable_rewards:broken")), samples, prompts)
    with pytest.raises(InputError, match=r"reward.function='no_such_module:f': no module 'no_such_module' .*; install it or put it on PYTHONPATH"):
        build_reward(RewardConfig(name="c", kind="callable", _target_="qrpo.rewards.callable.CallableReward.from_config", function="no_such_module:f"))
    with pytest.raises(InputError, match="reward.function='my_callable_rewards:missing': my_callable_rewards has no attribute 'missing'; check the name"):
        build_reward(RewardConfig(name="c", kind="callable", _target_="qrpo.rewards.callable.CallableReward.from_config", function="my_callable_rewards:missing"))


def test_shipped_callable_checks_the_final_number():
    reward = build_reward(build_section(RewardConfig, {"name": "c", "kind": "callable", "_target_": "qrpo.rewards.callable.CallableReward.from_config", "function": "qrpo.rewards.callable:final_number_matches"}))
    prompts = pa.table({"prompt_id": ["a"], "prompt": ["q"], "answer": ["1,234"]})
    samples = pa.table({"prompt_id": ["a"] * 3, "completion": ["12 then 1234", "1,234 or 5", "none"]})
    assert score_samples(reward, samples, prompts).tolist() == [1.0, 0.0, 0.0]


# -- judge ----------------------------------------------------------------------------------------

def test_judge_score_parsing():
    assert parse_score("Score: 8/10", 0, 10) == 8.0
    assert parse_score("I'd say 7.5 out of 10.", 0, 10) == 7.5
    assert parse_score("11, no wait, 9", 0, 10) == 9.0
    assert parse_score("excellent", 0, 10) is None and parse_score("", 0, 10) is None
    assert parse_score("-3", -5, 5) == -3.0


def test_judge_names_the_server_when_it_cannot_get_a_score():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    reward = JudgeReward(f"http://127.0.0.1:{port}/v1", "some-model", timeout=2, max_retries=1)
    with pytest.raises(InputError, match=f"judge 'some-model' at http://127.0.0.1:{port}/v1 gave no score after 2 tries"):
        reward.score(["q"], ["a"])
    with pytest.raises(InputError, match="api_key_env"):
        build_reward(RewardConfig(name="j", kind="judge", _target_="qrpo.rewards.judge.JudgeReward.from_config", base_url="http://x/v1", model="m", api_key_env="QRPO_NO_SUCH_KEY_SET"))


def _digit_model(folder: Path):
    """A tiny random Llama whose vocabulary is the ten digits: whatever it says is a number."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{str(d): 4 + d for d in range(10)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, bos_token_id=1, eos_token_id=2, pad_token_id=0, max_position_embeddings=4096)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.mark.slow
def test_judge_against_a_real_transformers_serve(tmp_path, transformers_server):
    model_dir = tmp_path / "digits"
    _digit_model(model_dir)
    with transformers_server(model_dir, env={"HF_HOME": str(tmp_path / "hf")}) as url:
        reward = build_reward(build_section(RewardConfig, {
            "name": "j", "kind": "judge", "_target_": "qrpo.rewards.judge.JudgeReward.from_config", "base_url": url, "model": str(model_dir),
            "max_tokens": 1, "score_min": 0, "score_max": 9, "max_concurrency": 2, "timeout": 60, "max_retries": 2}))
        scores = reward.score(["Is 2+2=4?", "Write a poem.", "Sort [3, 1]."], ["Yes.", "Roses.", "[1, 3]"])
        assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 9)) and np.all(scores == np.round(scores))


def test_judge_retries_replies_without_a_score_and_bounds_its_concurrency():
    """A small OpenAI-compatible endpoint on 127.0.0.1 that answers 'hmm' to each prompt's first request."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    state = {"active": 0, "peak": 0, "seen": set(), "requests": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt = body["messages"][0]["content"]
            with lock:
                state["active"] += 1
                state["peak"] = max(state["peak"], state["active"])
                state["requests"] += 1
                first = prompt not in state["seen"]
                state["seen"].add(prompt)
            time.sleep(0.05)
            reply = "hmm" if first else f"Score: {len(prompt) % 10}/10"
            data = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                               "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": reply}}]}).encode()
            with lock:
                state["active"] -= 1
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        reward = JudgeReward(f"http://127.0.0.1:{server.server_address[1]}/v1", "m", template="{prompt}|{completion}",
                             max_concurrency=3, timeout=10, max_retries=1)
        prompts = [f"question {i}" for i in range(12)]
        scores = reward.score(prompts, ["answer"] * 12)
        assert scores.tolist() == [len(f"{p}|answer") % 10 for p in prompts]
        assert state["requests"] == 24 and 1 < state["peak"] <= 3
    finally:
        server.shutdown()
