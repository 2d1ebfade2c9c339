import pytest


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real local Prefect API (Prefect's test harness: a temporary server and database)."""
    import os

    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def judge(tmp_path_factory, transformers_server):
    """(base_url, model name) of an AlpacaEval judge: `transformers serve` on 127.0.0.1 with a tiny random
    Llama whose output layer can only say "m" or "M" (every other row of lm_head is zero, the two rows are
    +v and -v, so greedy decoding picks one of them). Its preferences are meaningless but valid, and they
    depend on the instruction and both outputs (whose order the library randomises)."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    import torch
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

    from qrpo.models import TINY_CHAT_TEMPLATE

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
    with transformers_server(folder, log_path=folder / "serve.log") as url:
        yield url, str(folder)
