import torch

from qrpo.logprobs import batched_sequence_logps, sequence_logps


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
