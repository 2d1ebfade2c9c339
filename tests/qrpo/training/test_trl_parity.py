"""Parity with TRL: our DPO and SimPO losses, and their gradients, equal those of TRL's own trainers.

One batch of (prompt, chosen, rejected) texts goes through TRL's real code path: the trainer tokenises
the dataset itself, its data collator pads the batch, and its `compute_loss` runs the model
(`trl.DPOTrainer`; `trl.experimental.cpo.CPOTrainer` with `loss_type="simpo"`, `cpo_alpha=0`, which is
SimPO). Our side runs `qrpo.training.logprobs.sequence_logps` + `qrpo.objective.losses.dpo_loss` / `simpo_loss` on the
token ids we build ourselves, and the tests first check that those are exactly the ids TRL feeds its
model: the prompt's bytes, then the completion's bytes and one EOS (the tiny byte tokenizer has no BOS).

Tolerances (float32 on CPU, which is what the pipeline trains in): the loss to 1e-5 relative, and each
parameter's gradient to 5e-5 of that gradient's largest entry. TRL's DPOTrainer computes log-probs
through its fused LM head (`trl.trainer.utils.add_fused_lm_head`: the head applied in tiles to the
hidden states of the labelled positions), its CPOTrainer with `selective_log_softmax` over the model's
full logits. Ours, for policy and reference alike, take `sequence_logps`'s default path, the chunked LM
head `qrpo.training.fused_head.token_logps` (the tiny Llama's plain Linear `lm_head` applied a chunk of rows at
a time to the final hidden states at the completion positions, logsumexp in float32, its own backward;
never the [tokens, vocab] logits). The paths differ only in float32 summation order, measured here at
<= 3e-7 relative on the loss (DPO: equal) and <= 6e-7 of the largest entry on every gradient. A real
mismatch is orders of magnitude above the tolerance: `test_tolerance_catches_a_completion_one_token_short`
shows that losing one token per completion moves the gradients by ~0.5 of their scale (asserted: > 1e-2).
"""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer
from trl.experimental.cpo import CPOConfig, CPOTrainer

from qrpo.training.logprobs import sequence_logps
from qrpo.objective.losses import dpo_loss, simpo_loss

LOSS_RTOL = 1e-5
GRAD_TOL = 5e-5  # of each parameter's largest gradient entry
DPO_BETA = 0.1
SIMPO_BETA, SIMPO_GAMMA = 2.0, 0.5  # beta != 1, so a gamma-vs-gamma/beta mix-up would show

# Prompts and completions of different lengths, so that padding and masks matter.
TRIPLES = [
    {"prompt": "Name a colour:", "chosen": " blue", "rejected": " a cat sat on the mat"},
    {"prompt": "Hi there, how are", "chosen": " you doing today?", "rejected": " is it"},
    {"prompt": "2+2=", "chosen": " 4", "rejected": " five, I think"},
    {"prompt": "Write a haiku about rain.", "chosen": " Soft rain on the roof", "rejected": " No."},
]


def _common_args(tmp_path) -> dict:
    return dict(output_dir=str(tmp_path / "trl"), report_to="none", use_cpu=True, per_device_train_batch_size=len(TRIPLES),
                logging_strategy="no", save_strategy="no", seed=0)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def our_ids(tokenizer):
    """(prompt_ids, chosen_ids, rejected_ids) as we build them: bytes, and EOS closing each completion."""
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    eos = tokenizer.eos_token_id
    return ([encode(t["prompt"]) for t in TRIPLES], [encode(t["chosen"]) + [eos] for t in TRIPLES],
            [encode(t["rejected"]) + [eos] for t in TRIPLES])


@pytest.fixture
def policy(tiny_model_dir):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


@pytest.fixture
def reference(policy):
    """The policy with N(0, 0.3^2) noise on every weight (~15x the init scale): log-ratios of a few nats."""
    ref = copy.deepcopy(policy)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    ref.eval()
    return ref


def _grad_gap(ours, theirs) -> float:
    """max over parameters of max|g_ours - g_trl| / max|g_trl|."""
    gaps = []
    for (name, a), (name_b, b) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        assert name == name_b and a.grad is not None and b.grad is not None, name
        gaps.append(float((a.grad - b.grad).abs().max() / b.grad.abs().max()))
    return max(gaps)


def _our_dpo(model, reference, prompt_ids, chosen_ids, rejected_ids, pad_id):
    """Mean DPO loss over the batch, backpropagated into `model`; also the detached per-pair output."""
    b = len(prompt_ids)
    model.train()
    logps, _ = sequence_logps(model, prompt_ids * 2, chosen_ids + rejected_ids, pad_id)  # [2B] chosen then rejected
    with torch.no_grad():
        ref_logps, _ = sequence_logps(reference, prompt_ids * 2, chosen_ids + rejected_ids, pad_id)  # [2B]
    out = dpo_loss(logps[:b], logps[b:], ref_logps[:b], ref_logps[b:], DPO_BETA)
    loss = out.losses.mean()
    loss.backward()
    return loss.detach(), out, logps.detach(), ref_logps


def _trl_dpo(policy, reference, tokenizer, tmp_path, precompute: bool):
    args = DPOConfig(**_common_args(tmp_path), beta=DPO_BETA, loss_type=["sigmoid"], max_length=None,
                     precompute_ref_log_probs=precompute)
    return DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(TRIPLES),
                      processing_class=tokenizer)


@pytest.mark.parametrize("precompute", [False, True], ids=["ref-forward", "precomputed-ref"])
def test_dpo_loss_and_gradients_equal_trl_dpo_trainer(policy, reference, tokenizer, our_ids, tmp_path, precompute):
    prompt_ids, chosen_ids, rejected_ids = our_ids
    ours = copy.deepcopy(policy)  # before TRL patches a fused LM head onto its model
    trainer = _trl_dpo(policy, reference, tokenizer, tmp_path, precompute)
    features = [trainer.train_dataset[i] for i in range(len(TRIPLES))]

    # Same token ids: TRL drops the EOS its tokenizer puts after the prompt and ends each completion with one EOS.
    assert [f["prompt_ids"] for f in features] == prompt_ids
    assert [f["chosen_ids"] for f in features] == chosen_ids
    assert [f["rejected_ids"] for f in features] == rejected_ids
    batch = trainer.data_collator(features)
    rows = [p + c for p, c in zip(prompt_ids * 2, chosen_ids + rejected_ids)]
    assert [r[: int(m.sum())].tolist() for r, m in zip(batch["input_ids"], batch["attention_mask"])] == rows

    trainer.model.train()
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()
    loss, out, logps, ref_logps = _our_dpo(ours, reference, prompt_ids, chosen_ids, rejected_ids, tokenizer.pad_token_id)

    assert float((logps - ref_logps).abs().mean()) > 1.0, "the log-ratio terms must be far from 0"
    assert abs(float(loss) - 0.6931) > 0.1, "a loss near log 2 would barely test the log-ratio terms"
    if precompute:  # TRL's own reference pass, stored in the dataset, equals ours
        b = len(TRIPLES)
        torch.testing.assert_close(torch.tensor([f["ref_chosen_logps"] for f in features]), ref_logps[:b], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.tensor([f["ref_rejected_logps"] for f in features]), ref_logps[b:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, trl_loss.detach(), rtol=LOSS_RTOL, atol=0.0)
    assert _grad_gap(ours, trainer.model) < GRAD_TOL
    metrics = trainer._metrics["train"]
    assert metrics["rewards/chosen"][-1] == pytest.approx(float(out.chosen_rewards.mean()), rel=1e-4, abs=1e-6)
    assert metrics["rewards/rejected"][-1] == pytest.approx(float(out.rejected_rewards.mean()), rel=1e-4, abs=1e-6)


def test_tolerance_catches_a_completion_one_token_short(policy, reference, tokenizer, our_ids, tmp_path):
    """The same comparison with each completion's final EOS left out of our side fails by far."""
    prompt_ids, chosen_ids, rejected_ids = our_ids
    ours = copy.deepcopy(policy)
    trainer = _trl_dpo(policy, reference, tokenizer, tmp_path, precompute=False)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(TRIPLES))])
    trainer.model.train()
    trainer.compute_loss(trainer.model, batch).backward()
    _our_dpo(ours, reference, prompt_ids, [c[:-1] for c in chosen_ids], [r[:-1] for r in rejected_ids], tokenizer.pad_token_id)
    assert _grad_gap(ours, trainer.model) > 1e-2 > 100 * GRAD_TOL


def test_simpo_loss_and_gradients_equal_trl_cpo_trainer_simpo(policy, tokenizer, our_ids, tmp_path):
    prompt_ids, chosen_ids, rejected_ids = our_ids
    ours = copy.deepcopy(policy)
    args = CPOConfig(**_common_args(tmp_path), beta=SIMPO_BETA, loss_type="simpo", simpo_gamma=SIMPO_GAMMA,
                     cpo_alpha=0.0, max_length=512, remove_unused_columns=False)
    trainer = CPOTrainer(model=policy, args=args, train_dataset=Dataset.from_list(TRIPLES), processing_class=tokenizer)
    features = [trainer.train_dataset[i] for i in range(len(TRIPLES))]

    # Same token ids (no BOS: the byte tokenizer has none; EOS appended to each completion).
    assert [f["prompt_input_ids"] for f in features] == prompt_ids
    assert [f["chosen_input_ids"] for f in features] == [p + c for p, c in zip(prompt_ids, chosen_ids)]
    assert [f["rejected_input_ids"] for f in features] == [p + r for p, r in zip(prompt_ids, rejected_ids)]
    assert [sum(x != -100 for x in f["chosen_labels"]) for f in features] == [len(c) for c in chosen_ids]
    batch = trainer.data_collator(features)

    trainer.model.train()
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()

    b = len(TRIPLES)
    ours.train()
    logps, lengths = sequence_logps(ours, prompt_ids * 2, chosen_ids + rejected_ids, tokenizer.pad_token_id)  # [2B]
    assert lengths.tolist() == [len(c) for c in chosen_ids + rejected_ids]
    lengths = lengths.float()
    out = simpo_loss(logps[:b], logps[b:], lengths[:b], lengths[b:], SIMPO_BETA, SIMPO_GAMMA)
    loss = out.losses.mean()
    loss.backward()

    torch.testing.assert_close(loss.detach(), trl_loss.detach(), rtol=LOSS_RTOL, atol=0.0)
    assert _grad_gap(ours, trainer.model) < GRAD_TOL
    metrics = trainer._stored_metrics["train"]
    assert metrics["rewards/chosen"][-1] == pytest.approx(float(out.chosen_rewards.mean()), rel=1e-4, abs=1e-6)
    assert metrics["rewards/rejected"][-1] == pytest.approx(float(out.rejected_rewards.mean()), rel=1e-4, abs=1e-6)
