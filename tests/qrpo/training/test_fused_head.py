"""The chunked LM head (qrpo.training.fused_head) against the logits path: same values, same gradients, and
never a [tokens, vocab] tensor."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import LlamaConfig, LlamaForCausalLM

import qrpo.training.logprobs
from qrpo.training.fused_head import output_head, token_logps
from qrpo.training.logprobs import batched_sequence_logps, sequence_logps, shared_prompt_logps

# rows of different lengths (padding), two rows sharing a prompt (the shared-prompt pass has work)
PROMPTS = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10], [4, 5], [11]]
COMPLETIONS = [[12, 13], [14, 15, 16, 17, 18], [19], [20, 21, 22], [23, 24, 25, 26, 27, 28, 29]]
WEIGHTS = torch.tensor([1.0, -2.0, 0.5, 3.0, -0.7])  # a different upstream gradient for every row


def _llama(tie: bool, vocab: int = 300, hidden: int = 32, seed: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         tie_word_embeddings=tie)
    model = LlamaForCausalLM(config)
    if tie:  # tied explicitly (a model built while another thread loads one was left untied: qrpo.models.BUILDING)
        model.lm_head.weight = model.model.embed_tokens.weight
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tie
    return model


def _logps_and_grads(model, fn, fused, **kwargs):
    model.zero_grad(set_to_none=True)
    logps, _ = fn(model, PROMPTS, COMPLETIONS, 0, fused=fused, **kwargs)
    (logps * WEIGHTS).sum().backward()
    return logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture
def calls(monkeypatch):
    """Counts the calls that reach the chunked head (so a test knows the fused path really ran)."""
    seen = []

    def counting(*args, **kwargs):
        seen.append(args[0].shape)
        return token_logps(*args, **kwargs)

    monkeypatch.setattr(qrpo.training.logprobs, "token_logps", counting)
    return seen


def _assert_same(fused, unfused):
    (logps, grads), (ref_logps, ref_grads) = fused, unfused
    torch.testing.assert_close(logps, ref_logps, atol=1e-5, rtol=0)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        scale = ref_grads[name].abs().max()
        assert scale > 0, name
        assert (g - ref_grads[name]).abs().max() <= 1e-5 * scale, (name, float((g - ref_grads[name]).abs().max() / scale))


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("fn", [sequence_logps, shared_prompt_logps])
def test_fused_head_gives_the_logits_paths_values_and_gradients(tie, fn, calls):
    model = _llama(tie)
    n_tokens = sum(map(len, COMPLETIONS))
    fused = _logps_and_grads(model, fn, True, chunk_rows=4)  # 18 tokens: 5 chunks, the last one short
    assert calls == [torch.Size([n_tokens, 32])]
    _assert_same(fused, _logps_and_grads(model, fn, False))


def test_fused_head_under_lora_trains_the_adapters_as_the_logits_path_does(calls):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_llama(tie=False), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():  # B starts at zero: give it values so every gradient is non-zero
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    assert output_head(model) is not None  # LoRA leaves the output layer a plain Linear
    fused = _logps_and_grads(model, sequence_logps, True, chunk_rows=5)
    assert len(calls) == 1 and all("lora" in n for n in fused[1])
    _assert_same(fused, _logps_and_grads(model, sequence_logps, False))


def test_token_logps_gradients_with_a_bias_pass_a_float64_gradient_check():
    torch.manual_seed(0)
    hidden = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(11, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 3, 10, 3, 5, 1, 9])
    expected = torch.log_softmax(hidden @ weight.T + bias, -1).gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(token_logps(hidden, weight, bias, targets, chunk_rows=3), expected)
    assert torch.autograd.gradcheck(lambda h, w, b: token_logps(h, w, b, targets, chunk_rows=3), (hidden, weight, bias))


def test_token_logps_runs_on_meta_tensors():
    hidden = torch.empty(9, 4, device="meta", requires_grad=True)
    weight = torch.empty(13, 4, device="meta", requires_grad=True)
    out = token_logps(hidden, weight, None, torch.zeros(9, dtype=torch.long, device="meta"), chunk_rows=4)
    assert out.shape == (9,) and out.device.type == "meta"
    out.sum().backward()
    assert hidden.grad.shape == hidden.shape and weight.grad.device.type == "meta"


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation creates (forward or backward) while active."""

    def __init__(self):
        super().__init__()
        self.numel, self.shape = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() > self.numel:
                self.numel, self.shape = t.numel(), tuple(t.shape)
        return out


@pytest.mark.parametrize("fn", [sequence_logps, shared_prompt_logps])
def test_fused_head_never_creates_a_tokens_by_vocab_tensor(fn):
    """Vocabulary 4,096, hidden 32, 110 completion tokens, chunks of 8 rows: tokens x vocab (450,560)
    is far above anything else the pass needs (vocab x hidden = 131,072 for the weights and their
    gradient, chunk x vocab = 32,768); the logits path, the control, does create it."""
    vocab, hidden, chunk = 4096, 32, 8
    model = _llama(tie=True, vocab=vocab, hidden=hidden)
    prompts = [[1, 2, 3], [4, 5, 6, 7], [1, 2, 3], [8]]
    completions = [list(range(10, 40)), list(range(40, 60)), list(range(60, 100)), list(range(100, 120))]
    tokens = sum(map(len, completions))
    assert tokens * vocab > max(vocab * hidden, chunk * vocab) * 3

    def largest(fused):
        model.zero_grad(set_to_none=True)
        with _LargestTensor() as forward:
            logps, _ = fn(model, prompts, completions, 0, fused=fused, chunk_rows=chunk)
        with _LargestTensor() as backward:
            logps.sum().backward()
        return forward, backward

    forward, backward = largest(fused=False)
    assert forward.numel >= tokens * vocab and backward.numel >= tokens * vocab  # the detector sees both passes
    forward, backward = largest(fused=True)
    assert forward.numel < tokens * vocab, forward.shape
    assert backward.numel < tokens * vocab, backward.shape
    assert backward.shape == (vocab, hidden)  # the backward pass was recorded: the weight's gradient


def test_models_that_change_their_logits_after_the_head_take_the_logits_path(calls):
    """A softcapping config is turned down up front; a model that scales its logits without saying so
    in its config is caught by the first call's check, which then answers through the logits path."""
    model = _llama(tie=False)
    model.config.final_logit_softcapping = 30.0
    assert output_head(model) is None
    model.config.final_logit_softcapping = None

    class Scaled(LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 0.5
            return out

    scaled = Scaled(model.config)
    scaled.load_state_dict(model.state_dict())
    with torch.no_grad():
        first, _ = sequence_logps(scaled, PROMPTS, COMPLETIONS, 0)
        expected, _ = sequence_logps(scaled, PROMPTS, COMPLETIONS, 0, fused=False)
    torch.testing.assert_close(first, expected, atol=1e-6, rtol=0)
    assert output_head(scaled) is None and calls == []  # remembered: later calls go straight to the logits


def test_batched_reference_logps_go_through_the_fused_head(calls):
    model = _llama(tie=True)
    fused = batched_sequence_logps(model, PROMPTS, COMPLETIONS, 0, batch_size=2)
    assert len(calls) == 3
    plain = batched_sequence_logps(model, PROMPTS, COMPLETIONS, 0, batch_size=2, fused=False)
    assert abs(fused - plain).max() < 1e-5


def test_under_bf16_autocast_the_head_matmul_runs_in_bf16_as_the_models_own_head_would(calls):
    """The log-probs equal the logits path's (whose head runs under autocast in bf16, logsumexp in
    float32) to 1e-4; with the head matmul in fp32 instead they differ by ~7e-4 on this model."""
    model = _llama(tie=True)
    results = []
    for fused in (True, False):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logps, _ = sequence_logps(model, PROMPTS, COMPLETIONS, 0, fused=fused, chunk_rows=4)
        (logps * WEIGHTS).sum().backward()
        results.append((logps.detach(), model.lm_head.weight.grad.clone()))
    assert len(calls) == 1 and results[0][0].dtype == torch.float32 and results[0][1].dtype == torch.float32
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-4, rtol=0)
    assert (results[0][1] - results[1][1]).abs().max() <= 2e-2 * results[1][1].abs().max()  # bf16 gradients
