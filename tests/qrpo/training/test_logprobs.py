import pytest
import torch

from qrpo.training.logprobs import batched_sequence_logps, sequence_logps, shared_prompt_logps


def _by_hand(model, prompt, completion):
    """log pi(completion | prompt) from one unpadded forward pass, token by token."""
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0].log_softmax(-1)  # [T, V]
    return sum(float(logits[len(prompt) - 1 + t, tok]) for t, tok in enumerate(completion))


def test_padded_batch_matches_unpadded_token_by_token_sum(tiny_policy):
    model, tokenizer = tiny_policy
    prompts = [[10, 11, 12], [20, 21], [30, 31, 32, 33, 34]]
    completions = [[40, 41], [50, 51, 52, 53], [60]]
    with torch.no_grad():
        logps, lengths = sequence_logps(model, prompts, completions, tokenizer.pad_token_id)
        expected = [_by_hand(model, p, c) for p, c in zip(prompts, completions)]
    assert lengths.tolist() == [2, 4, 1]
    torch.testing.assert_close(logps, torch.tensor(expected), atol=1e-4, rtol=1e-5)
    batched = batched_sequence_logps(model, prompts, completions, tokenizer.pad_token_id, batch_size=2)
    torch.testing.assert_close(torch.tensor(batched, dtype=torch.float32), torch.tensor(expected), atol=1e-4, rtol=1e-5)


def test_gradient_flows_to_the_policy(tiny_policy):
    model, tokenizer = tiny_policy
    logps, _ = sequence_logps(model, [[10, 11]], [[12, 13]], tokenizer.pad_token_id)
    logps.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


# 3 prompts of different lengths with 3, 2 and 4 completions of different lengths (the first of one
# token: scored from the prompt pass alone), interleaved as a micro-batch holds them
SHARED_PROMPTS = [[10, 11, 12], [20, 21], [30, 31, 32, 33, 34]]
SHARED_ROWS = [(0, [40, 41]), (1, [50, 51, 52, 53, 54, 55]), (2, [60]), (0, [42]), (2, [61, 62, 63]), (1, [56, 57, 58]),
               (0, [43, 44, 45, 46, 47]), (2, [64, 65]), (2, [66, 67, 68, 69, 70, 71, 72])]


@pytest.mark.parametrize("fused", [True, False], ids=["fused-head", "logits"])
def test_shared_prompt_pass_gives_the_flat_pass_values_and_gradients(tiny_policy, fused):
    """`shared_prompt_logps` (each distinct prompt run once, left-padded, its KV cache repeated for its
    completions) against `sequence_logps` (every prompt + completion right-padded in one flat batch):
    the same log-probs to 1e-5 nats and the same gradient of sum_i w_i logp_i to 1e-5 of each parameter's
    largest entry (float32; measured here: equal values, gradients within 1e-6). A completion pass
    one position off moves the values by ~3e-4; a prompt pass cut off from the gradient moves it by ~0.9."""
    model, tokenizer = tiny_policy
    prompts = [SHARED_PROMPTS[g] for g, _ in SHARED_ROWS]
    completions = [c for _, c in SHARED_ROWS]
    weights = torch.linspace(-1.0, 2.0, len(SHARED_ROWS))  # a different upstream gradient for every row
    forward_calls = []
    model.register_forward_pre_hook(lambda module, args: forward_calls.append(1))

    def logps_and_grads(fn):
        model.zero_grad(set_to_none=True)
        forward_calls.clear()
        logps, lengths = fn(model, prompts, completions, tokenizer.pad_token_id, fused=fused)
        (logps * weights).sum().backward()
        return logps.detach(), lengths, len(forward_calls), {n: p.grad.clone() for n, p in model.named_parameters()}

    shared, shared_lengths, shared_calls, shared_grads = logps_and_grads(shared_prompt_logps)
    flat, flat_lengths, flat_calls, flat_grads = logps_and_grads(sequence_logps)
    assert (shared_calls, flat_calls) == (2, 1)  # a prompt pass + a completion pass: the shared path ran, not its fallback
    assert shared_lengths.tolist() == flat_lengths.tolist() == [len(c) for c in completions]
    torch.testing.assert_close(shared, flat, atol=1e-5, rtol=0)
    with torch.no_grad():  # and both are the log-probs of an unpadded pass, one sequence at a time
        by_hand = torch.tensor([_by_hand(model, p, c) for p, c in zip(prompts, completions)])
    torch.testing.assert_close(flat, by_hand, atol=1e-4, rtol=0)
    assert shared_grads.keys() == flat_grads.keys()
    for name, g in shared_grads.items():
        scale = float(flat_grads[name].abs().max())
        assert scale > 0, name
        gap = float((g - flat_grads[name]).abs().max()) / scale
        assert gap <= 1e-5, (name, gap)
