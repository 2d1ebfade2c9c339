"""Models built and loaded at once in threads (mapped sample shards load a policy each) leave transformers as they
found it: it swaps PreTrainedModel.tie_weights for a no-op while it loads, and two loads interleaved put the no-op
back for good, so every later model of the process was untied (the full suite's GGUF test then failed on a meta
LM head). qrpo.models.BUILDING serialises them."""

import threading

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

from qrpo.models import load_policy


def test_loading_policies_in_threads_leaves_weight_tying_intact(tiny_model_dir):
    original = PreTrainedModel.tie_weights
    start = threading.Barrier(8)
    errors = []

    def load():
        try:
            start.wait()
            for _ in range(4):
                load_policy(tiny_model_dir, torch.device("cpu"))
        except Exception as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert PreTrainedModel.tie_weights is original, "a load left tie_weights patched out"
    tied = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True))
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
