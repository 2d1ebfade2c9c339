import pyarrow as pa
import pytest
import torch

import qrpo.training.batching
import qrpo.training.logprobs
from qrpo.objective.algorithms import DPO, QRPO, REBEL, SFT, PairBatch, PointwiseBatch, SimPO
from qrpo.config.sections import TrainConfig
from qrpo.errors import InputError
from qrpo.training.fused_head import output_head
from qrpo.training.logprobs import batched_sequence_logps
from qrpo.training.batching import PairExamples, PointwiseExamples, epoch_order, make_examples, micro_batch
from qrpo.training.checkpoints import latest_checkpoint
from qrpo.training.trainer import cosine_schedule, train_policy

ALGORITHMS = [QRPO(beta=0.5), QRPO(beta=0.5, transform="normal_icdf"), QRPO(beta=0.5, transform="log"), DPO(beta=0.5),
              SimPO(beta=2.0), REBEL(beta=0.5), SFT()]


def _token_lists(n, length, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(10, 200, (length + i % 3,), generator=g).tolist() for i in range(n)]


def _pairs(model, pad_id, n=8):
    prompts, chosen, rejected = _token_lists(n, 3, 0), _token_lists(n, 4, 1), _token_lists(n, 5, 2)
    table = {
        "prompt_id": [f"p{i}" for i in range(n)], "prompt_ids": prompts, "chosen_ids": chosen, "rejected_ids": rejected,
        "chosen_reward": [0.8] * n, "rejected_reward": [0.2] * n,
        "chosen_quantile": [1.0] * n, "rejected_quantile": [0.25] * n, "num_ref": [4] * n,
        "chosen_ref_logp": batched_sequence_logps(model, prompts, chosen, pad_id, batch_size=3).tolist(),
        "rejected_ref_logp": batched_sequence_logps(model, prompts, rejected, pad_id, batch_size=3).tolist(),
    }
    return pa.table(table)


def _pointwise(model, pad_id, n=8):
    """Two completions per prompt (rows 2k and 2k + 1 share prompt p{k}), as the pointwise regime builds them."""
    prompts, completions = [p for p in _token_lists(n // 2, 3, 0) for _ in range(2)], _token_lists(n, 4, 3)
    return pa.table({
        "prompt_id": [f"p{i // 2}" for i in range(n)], "prompt_ids": prompts, "completion_ids": completions,
        "reward": [float(i % 4) for i in range(n)], "quantile": [(i % 4) / 4 for i in range(n)], "num_ref": [4] * n,
        "ref_logp": batched_sequence_logps(model, prompts, completions, pad_id, batch_size=3).tolist(),
    })


def _cfg(**kw):
    return TrainConfig(**{"learning_rate": 3e-3, "epochs": 2, "batch_size": 4, "micro_batch_size": 2, "warmup_ratio": 0.0, **kw})


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    f = cosine_schedule(total_steps=10, warmup_ratio=0.2)
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0) and f(6) == pytest.approx(0.5) and f(10) == pytest.approx(0.0)


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=repr)
def test_every_algorithm_trains_through_the_same_loop_and_lowers_its_loss(tiny_policy, algorithm):
    """Finite losses that fall. That the pair methods move the right way (chosen up over rejected) is
    `test_pair_methods_raise_every_chosen_completion_over_its_rejected_one`."""
    model, tokenizer = tiny_policy
    pairs = _pairs(model, tokenizer.pad_token_id)
    history = train_policy(model, pairs, algorithm, _cfg(epochs=6), tokenizer.pad_token_id)
    assert len(history) == 12
    losses = [h["loss"] for h in history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-2:]) < sum(losses[:2])


def _logps_by_hand(model, prompts, completions) -> torch.Tensor:
    """log pi(completion | prompt) of each row from its own unpadded forward pass (model(ids).logits,
    log_softmax, the completion tokens gathered): none of the trainer's padding, batching or LM-head code."""
    out = []
    with torch.no_grad():
        for p, c in zip(prompts, completions):
            logp = model(input_ids=torch.tensor([p + c])).logits[0].float().log_softmax(-1)  # [T, V]
            out.append(logp[torch.arange(len(p) - 1, len(p) + len(c) - 1), torch.tensor(c)].sum())
    return torch.stack(out)


PAIR_METHODS = [DPO(beta=0.5), SimPO(beta=2.0), REBEL(beta=0.5), QRPO(beta=0.5)]


@pytest.mark.parametrize("algorithm", PAIR_METHODS, ids=repr)
def test_pair_methods_raise_every_chosen_completion_over_its_rejected_one(tiny_policy, algorithm):
    """A lower loss alone proves little (Adam lowers any loss, also one with chosen and rejected swapped).
    The margin m_i = log pi(chosen_i | x_i) - log pi(rejected_i | x_i), recomputed by hand from the
    table's ids before and after training, must grow on every one of the 8 pairs by more than 0.25 nats
    (measured: DPO 5.0-6.7, SimPO 5.4-7.4, REBEL 0.65-1.7 and QRPO 1.0-2.2; REBEL and QRPO regress onto
    finite margins, 1.2 and 1.5 nats); so must the per-token margin m_i / length that SimPO ranks by.
    With chosen and rejected swapped anywhere in the trainer every margin falls instead."""
    model, tokenizer = tiny_policy
    pairs = _pairs(model, tokenizer.pad_token_id)
    prompts, chosen, rejected = (pairs.column(name).to_pylist() for name in ("prompt_ids", "chosen_ids", "rejected_ids"))
    chosen_len, rejected_len = (torch.tensor([len(c) for c in side], dtype=torch.float32) for side in (chosen, rejected))

    def margins():
        logp_chosen, logp_rejected = _logps_by_hand(model, prompts, chosen), _logps_by_hand(model, prompts, rejected)
        return logp_chosen - logp_rejected, logp_chosen / chosen_len - logp_rejected / rejected_len

    before, before_per_token = margins()
    train_policy(model, pairs, algorithm, _cfg(epochs=6), tokenizer.pad_token_id)
    after, after_per_token = margins()
    assert (after - before).min() > 0.25, (after - before).tolist()
    assert (after_per_token - before_per_token).min() > 0, (after_per_token - before_per_token).tolist()


def test_qrpo_pushes_the_log_ratios_towards_their_regression_targets(tiny_policy):
    model, tokenizer = tiny_policy
    history = train_policy(model, _pairs(model, tokenizer.pad_token_id), QRPO(beta=0.5), _cfg(epochs=10, micro_batch_size=4),
                           tokenizer.pad_token_id)
    # targets f(q) - beta log Z: chosen 1.0 - b, rejected 0.25 - b; the residual must shrink
    assert history[-1]["residual_abs"] < 0.5 * history[0]["residual_abs"]
    assert history[-1]["chosen_implicit_reward"] > history[-1]["rejected_implicit_reward"]


def test_every_step_logs_loss_lr_grad_norm_implicit_rewards_and_qrpo_targets(tiny_policy):
    model, tokenizer = tiny_policy
    history = train_policy(model, _pairs(model, tokenizer.pad_token_id), QRPO(beta=0.5), _cfg(epochs=1), tokenizer.pad_token_id)
    record = history[0]
    for key in ("loss", "learning_rate", "grad_norm", "chosen_implicit_reward", "rejected_implicit_reward", "implicit_margin",
                "implicit_accuracy", "chosen_quantile", "rejected_quantile", "chosen_transformed_reward", "beta_log_partition",
                "chosen_residual", "residual_abs", "tokens_per_s"):
        assert key in record, key
    # batch means of the table's values: every chosen quantile is 1.0, every rejected 0.25
    assert record["chosen_quantile"] == pytest.approx(1.0) and record["rejected_quantile"] == pytest.approx(0.25)
    assert record["beta_log_partition"] == pytest.approx(QRPO(0.5)._transform.log_partition(0.5) * 0.5)
    assert record["grad_norm"] > 0


def test_qrpo_trains_pointwise_on_single_completions(tiny_policy):
    model, tokenizer = tiny_policy
    history = train_policy(model, _pointwise(model, tokenizer.pad_token_id), QRPO(beta=0.5), _cfg(epochs=8), tokenizer.pad_token_id)
    assert history[-1]["residual_abs"] < 0.5 * history[0]["residual_abs"]
    assert "quantile" in history[0] and "chosen_quantile" not in history[0]


def test_a_pair_method_on_a_pointwise_table_fails_at_once(tiny_policy):
    model, tokenizer = tiny_policy
    with pytest.raises(InputError, match="algorithm dpo needs preference pairs"):
        train_policy(model, _pointwise(model, tokenizer.pad_token_id), DPO(beta=0.1), _cfg(), tokenizer.pad_token_id)


def test_reference_free_methods_need_no_reference_column(tiny_policy):
    model, tokenizer = tiny_policy
    pairs = _pairs(model, tokenizer.pad_token_id).drop_columns(["chosen_ref_logp", "rejected_ref_logp"])
    assert [a.needs_reference for a in (QRPO(0.1), DPO(0.1), SimPO(2.0), REBEL(0.1), SFT())] == [True, True, False, True, False]
    train_policy(model, pairs, SimPO(beta=2.0), _cfg(epochs=1), tokenizer.pad_token_id)  # no KeyError
    with pytest.raises(InputError, match="lacks column.*chosen_ref_logp"):
        train_policy(model, pairs, DPO(beta=0.1), _cfg(epochs=1), tokenizer.pad_token_id)


@pytest.fixture
def fused_calls(monkeypatch):
    """The devices of the tensors handed to each call of the chunked LM head (`qrpo.training.fused_head.token_logps`,
    the real function, wrapped): a test knows whether the fused path ran, and on which device."""
    seen = []

    def spy(hidden, weight, bias, targets, *args, **kwargs):
        seen.append({"hidden": hidden.device.type, "weight": weight.device.type, "targets": targets.device.type})
        return token_logps(hidden, weight, bias, targets, *args, **kwargs)

    token_logps = qrpo.training.logprobs.token_logps
    monkeypatch.setattr(qrpo.training.logprobs, "token_logps", spy)
    return seen


def _count_forward_calls(model) -> list:
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls


@pytest.mark.parametrize("fused", [True, False], ids=["fused-head", "logits"])
@pytest.mark.parametrize("share_prompts", [True, False], ids=["shared-prompts", "flat"])
def test_precomputed_reference_logps_equal_the_trainers_live_logps(tiny_policy, share_prompts, fused, fused_calls):
    """Reference log-probs computed ahead (flat pass, fused head, other batch sizes, sorted by length) equal
    what the trainer computes live for the same weights, to 1e-5, whichever pass the trainer takes: a
    pair's prompt run once (the default) or twice, through the fused LM head (the default) or the logits.
    One tokenisation and one padding rule for both; the spies check that the pass asked for really ran."""
    model, tokenizer = tiny_policy
    pairs = _pairs(model, tokenizer.pad_token_id)
    examples = make_examples(pairs, DPO(0.1))
    forward_calls = _count_forward_calls(model)
    with torch.no_grad():
        for rows in ([0, 5, 2], [7], [1, 3, 4, 6]):
            forward_calls.clear()
            fused_calls.clear()
            _, _, batch = micro_batch(model, examples, torch.tensor(rows).numpy(), DPO(0.1), tokenizer.pad_token_id,
                                      share_prompts=share_prompts, fused_lm_head=fused)
            assert len(forward_calls) == (2 if share_prompts else 1)  # shared: a prompt pass, then a completion pass
            assert len(fused_calls) == (1 if fused else 0)
            torch.testing.assert_close(batch.policy_chosen_logps, batch.ref_chosen_logps, atol=1e-5, rtol=0)
            torch.testing.assert_close(batch.policy_rejected_logps, batch.ref_rejected_logps, atol=1e-5, rtol=0)


class _MetaCache:
    """A key/value cache stand-in: one state per prompt, repeated per completion by `batch_select_indices`."""

    def __init__(self, state):
        self.state = state  # [P, H]

    def batch_select_indices(self, indices):
        assert indices.device.type == "meta", indices.device
        self.state = self.state[indices]  # [N, H]


class _MetaCausalLM(torch.nn.Module):
    """A causal LM with the transformers calling convention (`logits_to_keep` as an int, 1-D or per-row
    positions; a cache for the shared-prompt pass; `get_output_embeddings` giving its nn.Linear head)
    whose weights live on the `meta` device: any tensor the trainer builds on the host instead of the
    model's device shows up as 'cpu'."""

    def __init__(self, vocab=300, hidden=8):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden, device="meta")
        self.head = torch.nn.Linear(hidden, vocab, device="meta")
        self.calls = []  # per forward call: (on a prompt cache?, with position ids?)

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids, attention_mask, use_cache, logits_to_keep=0, position_ids=None, past_key_values=None):
        self.calls.append((past_key_values is not None, position_ids is not None))
        for t in (input_ids, attention_mask, logits_to_keep, position_ids):
            assert not isinstance(t, torch.Tensor) or t.device.type == "meta", t.device
        hidden = self.embed(input_ids)  # [B, T, H]
        if past_key_values is not None:  # completions attend to their prompt
            hidden = hidden + past_key_values.state[:, None]
        if isinstance(logits_to_keep, int):
            kept = hidden[:, -logits_to_keep:]  # 0: every position
        elif logits_to_keep.dim() == 1:
            kept = hidden[:, logits_to_keep]
        else:
            kept = hidden[torch.arange(len(input_ids), device=input_ids.device)[:, None], logits_to_keep]  # [B, C, H]
        cache = _MetaCache(hidden.mean(1)) if use_cache and past_key_values is None else past_key_values
        return type("Out", (), {"logits": self.head(kept), "past_key_values": cache})


class _RecordingAlgorithm:
    """Records the device of every tensor the trainer hands an algorithm."""

    name, needs_reference = "recording", True

    def __init__(self, needs_pairs):
        self.needs_pairs, self.devices = needs_pairs, {}

    def __call__(self, batch):
        self.devices = {name: t.device.type for name, t in batch.tensors().items()}
        logps = batch.policy_chosen_logps if isinstance(batch, PairBatch) else batch.policy_logps
        return logps * 1.0, {"value": logps.detach()}


@pytest.mark.parametrize("fused", [True, False], ids=["fused-head", "logits"])
@pytest.mark.parametrize("share_prompts", [True, False], ids=["shared-prompts", "flat"])
@pytest.mark.parametrize("kind", ["pairs", "pointwise"])
def test_every_tensor_handed_to_the_algorithm_is_on_the_policys_device(tiny_policy, kind, share_prompts, fused, fused_calls,
                                                                       monkeypatch):
    """On a `meta` model, through each of the four passes (shared or flat prompts, fused head or logits),
    the model's inputs, the chunked head's inputs, every batch field, the losses and the diagnostics are
    on `meta`, and the backward pass runs. `output_head` turns a head on `meta` down (its values cannot
    be checked against the model's logits), so for the fused path the test accepts this model's plain
    Linear head itself and skips the value check `head_matches`; the spy shows the fused head ran."""
    model, tokenizer = tiny_policy
    table = _pairs(model, tokenizer.pad_token_id) if kind == "pairs" else _pointwise(model, tokenizer.pad_token_id)
    algorithm = _RecordingAlgorithm(needs_pairs=kind == "pairs")
    examples = make_examples(table, algorithm)
    assert isinstance(examples, PairExamples if kind == "pairs" else PointwiseExamples)
    meta = _MetaCausalLM()
    assert output_head(meta) is None
    monkeypatch.setattr(qrpo.training.logprobs, "output_head", lambda m: m.get_output_embeddings())
    monkeypatch.setattr(qrpo.training.logprobs, "head_matches", lambda head, seen, logits: True)
    fused_calls.clear()  # the table's reference log-probs went through the tiny policy's fused head
    losses, diagnostics, batch = micro_batch(meta, examples, torch.arange(4).numpy(), algorithm, tokenizer.pad_token_id,
                                             share_prompts=share_prompts, fused_lm_head=fused)
    # rows 0-3 repeat their prompts (a pair's two sides; pointwise rows 2k, 2k + 1): the shared pass runs
    # the prompts, then the completions on their cache
    assert meta.calls == ([(False, True), (True, True)] if share_prompts else [(False, False)])
    assert fused_calls == ([{"hidden": "meta", "weight": "meta", "targets": "meta"}] if fused else [])
    expected = 11 if kind == "pairs" else 6  # every field of the batch, the reference log-probs included
    assert len(algorithm.devices) == expected and set(algorithm.devices.values()) == {"meta"}, algorithm.devices
    assert losses.device.type == "meta" and all(v.device.type == "meta" for v in diagnostics.values())
    losses.sum().backward()  # the backward pass is device-clean too


def test_length_grouped_batches_cover_each_row_once_per_epoch_with_less_padding():
    import numpy as np

    tokens = np.random.default_rng(0).integers(10, 500, size=640)
    grouped = epoch_order(640, 8, seed=1, epoch=0, tokens=tokens)
    plain = epoch_order(640, 8, seed=1, epoch=0, tokens=None)
    assert sorted(np.concatenate(grouped).tolist()) == list(range(640)) == sorted(np.concatenate(plain).tolist())
    padding = lambda batches: sum(int(tokens[b].max() * len(b) - tokens[b].sum()) for b in batches)  # noqa: E731
    assert padding(grouped) < 0.2 * padding(plain)
    assert [b.tolist() for b in grouped] == [b.tolist() for b in epoch_order(640, 8, 1, 0, tokens)]  # a pure function
    assert [b.tolist() for b in grouped] != [b.tolist() for b in epoch_order(640, 8, 1, 1, tokens)]  # a new order each epoch


def test_resume_from_a_mid_run_checkpoint_ends_with_the_parameters_of_an_uninterrupted_run(tiny_model_dir, tmp_path):
    from qrpo.models import load_policy

    def fresh():
        torch.manual_seed(0)
        return load_policy(tiny_model_dir, torch.device("cpu"))

    model, tokenizer = fresh()
    pairs = _pairs(model, tokenizer.pad_token_id)
    cfg = _cfg(epochs=3, checkpoint_every=2, weight_decay=0.01)  # 6 steps; AdamW state and the schedule matter
    uninterrupted = train_policy(model, pairs, QRPO(beta=0.5), cfg, tokenizer.pad_token_id)

    class Crash(Exception):
        pass

    def crash_after_step_2(step, record):
        if step == 2:
            raise Crash

    crashed, _ = fresh()
    with pytest.raises(Crash):
        train_policy(crashed, pairs, QRPO(beta=0.5), cfg, tokenizer.pad_token_id, on_step=crash_after_step_2, checkpoint_dir=tmp_path)
    assert latest_checkpoint(tmp_path).name == "step-0000002"
    resumed, _ = fresh()
    steps = []
    history = train_policy(resumed, pairs, QRPO(beta=0.5), cfg, tokenizer.pad_token_id, on_step=lambda s, r: steps.append(s),
                           checkpoint_dir=tmp_path)
    assert steps == [2, 3, 4, 5]  # the two checkpointed steps are not redone
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in uninterrupted], abs=1e-7)
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=0, msg=name)
    moved = max((a - b).abs().max().item() for a, b in zip(model.state_dict().values(), fresh()[0].state_dict().values()))
    assert moved > 1e-3  # training did move the weights, so equality above means something


def test_gradient_checkpointing_is_switched_on_and_changes_no_number(tiny_model_dir):
    from qrpo.models import load_policy

    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model, tokenizer = load_policy(tiny_model_dir, torch.device("cpu"))
        pairs = _pairs(model, tokenizer.pad_token_id)
        train_policy(model, pairs, DPO(beta=0.5), _cfg(epochs=1, gradient_checkpointing=checkpointing), tokenizer.pad_token_id)
        assert getattr(model, "is_activation_checkpointing", None) == checkpointing
        results.append(model.state_dict())
    for a, b in zip(*(r.values() for r in results)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_lora_trains_adapters_and_merges_them_into_a_plain_model(tiny_model_dir):
    from qrpo.models import load_policy

    torch.manual_seed(0)
    model, tokenizer = load_policy(tiny_model_dir, torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = train_policy(model, _pairs(model, tokenizer.pad_token_id), DPO(beta=0.5), _cfg(epochs=3, lora_r=4, learning_rate=3e-2),
                           tokenizer.pad_token_id)
    assert not any("lora" in name for name in model.state_dict())  # merged: a plain model again
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all("proj" in k for k in changed)  # only the adapted linear layers moved
    assert not any("embed" in k or "norm" in k for k in changed)
    assert history[-1]["loss"] < history[0]["loss"]


def test_an_empty_or_too_small_training_table_is_a_clear_input_error(tiny_policy):
    model, tokenizer = tiny_policy
    pairs = _pairs(model, tokenizer.pad_token_id)
    with pytest.raises(InputError, match="num_train_samples"):
        train_policy(model, pairs.slice(0, 0), QRPO(beta=0.1), TrainConfig(), tokenizer.pad_token_id)
    with pytest.raises(InputError, match="fewer than train.batch_size=8"):
        train_policy(model, pairs.slice(0, 3), QRPO(beta=0.1), TrainConfig(batch_size=8), tokenizer.pad_token_id)


def test_qrpo_clamps_quantiles_only_where_the_transform_is_infinite():
    zeros, ones = torch.zeros(2), torch.ones(2)
    batch = PointwiseBatch(zeros, zeros, ones, ones, torch.tensor([1.0, 0.0]), torch.tensor([4.0, 4.0]))
    _, log_diag = QRPO(beta=1.0, transform="log")(batch)
    assert log_diag["quantile"].tolist() == [1.0, 0.125]  # log 1 = 0 is finite: q = 1 stays
    assert log_diag["transformed_reward"][0].item() == 0.0
    _, normal_diag = QRPO(beta=1.0, transform="normal_icdf")(batch)
    assert normal_diag["quantile"].tolist() == [0.875, 0.125]
    _, identity_diag = QRPO(beta=1.0)(batch)
    assert identity_diag["quantile"].tolist() == [1.0, 0.0]


def test_qrpo_beta_from_a_kl_budget_or_a_target_quantile_and_the_optimum_it_implies():
    from qrpo.objective.optimum import optimum_stats

    by_budget = QRPO(beta=0.1, kl_budget=1.303085)  # identity at beta = 0.1 spends 1.3031 nats
    assert by_budget.beta == pytest.approx(0.1, rel=1e-5)
    assert by_budget.optimum()["optimum_expected_quantile"] == pytest.approx(0.900045, abs=1e-5)
    by_quantile = QRPO(transform="log", target_quantile=0.9)  # log: E[q] = (1 + b)/(1 + 2b) = 0.9 at b = 1/8
    assert by_quantile.beta == pytest.approx(0.125, rel=1e-6)
    assert by_quantile.optimum()["optimum_kl"] == pytest.approx(optimum_stats("log", 0.125).kl)
    with pytest.raises(ValueError, match="not both"):
        QRPO(kl_budget=1.0, target_quantile=0.9)
    with pytest.raises(ValueError, match="needs algorithm.beta"):
        QRPO()


class _MatmulDtypes(torch.utils._python_dispatch.TorchDispatchMode):
    """The dtypes every matrix product ran in."""

    def __init__(self):
        super().__init__()
        self.dtypes = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm, torch.ops.aten.linear):
            self.dtypes.add(args[0].dtype)
        return func(*args, **(kwargs or {}))


class _LogRatioRecordingQRPO(QRPO):
    """QRPO that records each example's log-ratio log pi_theta(y|x) - log pi_ref(y|x) as the trainer hands it over."""

    def __init__(self, beta):
        super().__init__(beta=beta)
        self.log_ratios = []

    def __call__(self, batch):
        self.log_ratios.append((batch.policy_logps - batch.ref_logps).detach().double())
        return super().__call__(batch)


@pytest.mark.parametrize("precision, compute", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_mixed_precision_bf16_computes_training_and_reference_logps_in_bf16_over_fp32_weights_on_cpu(tiny_model_dir, precision, compute):
    """train.mixed_precision=bf16 on a CPU: every matmul of the reference log-probs and of training runs
    in bf16 (autocast), the weights stay fp32; "fp32" keeps everything fp32. Reference and policy passes
    share the arithmetic, so every example's first-step log-ratio stays within 1e-5 nats of 0 (measured:
    exactly 0 in bf16, <= 2e-6 in fp32; an fp32 reference under a bf16 policy is off by up to 1.4e-3)."""
    from qrpo.models import load_policy

    torch.manual_seed(0)
    model, tokenizer = load_policy(tiny_model_dir, torch.device("cpu"))
    prompts, completions = _token_lists(8, 3, 0), _token_lists(8, 4, 3)
    with _MatmulDtypes() as ref_pass:
        ref = batched_sequence_logps(model, prompts, completions, tokenizer.pad_token_id, batch_size=3, precision=precision)
    assert ref_pass.dtypes == {compute}
    table = pa.table({
        "prompt_id": [f"p{i // 2}" for i in range(8)], "prompt_ids": prompts, "completion_ids": completions,
        "reward": [float(i % 4) for i in range(8)], "quantile": [(i % 4) / 4 for i in range(8)], "num_ref": [4] * 8,
        "ref_logp": ref.tolist(),
    })
    algorithm = _LogRatioRecordingQRPO(beta=0.5)
    with _MatmulDtypes() as training:
        train_policy(model, table, algorithm, _cfg(epochs=1, learning_rate=1e-9, mixed_precision=precision), tokenizer.pad_token_id)
    assert training.dtypes == {compute}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    # the first step's policy is the reference, so each of its 4 examples' log-ratio is rounding only: at
    # most 1e-5 nats in absolute value, per example (a batch mean would let errors of both signs cancel)
    first_step = torch.cat(algorithm.log_ratios[:2])  # its 2 micro-batches of 2
    assert len(first_step) == 4 and first_step.abs().max() < 1e-5, first_step.tolist()


def _pair_table():
    """Three pairs whose every value differs, so a test sees which row and column each batch field came from."""
    return pa.table({
        "prompt_id": ["a", "b", "c"], "prompt_ids": [[1], [2, 2], [3, 3, 3]], "chosen_ids": [[11], [12, 12], [13]],
        "rejected_ids": [[21, 21], [22], [23, 23, 23]], "chosen_reward": [0.1, 0.2, 0.3], "rejected_reward": [-0.1, -0.2, -0.3],
        "chosen_quantile": [0.5, 0.6, 0.7], "rejected_quantile": [0.05, 0.06, 0.07], "num_ref": [4, 5, 6],
        "chosen_ref_logp": [-1.0, -2.0, -3.0], "rejected_ref_logp": [-4.0, -5.0, -6.0],
    })


def test_pair_examples_give_chosen_then_rejected_sequences_and_the_rows_values_in_the_batch():
    import numpy as np

    examples = make_examples(_pair_table(), DPO(0.1))
    assert isinstance(examples, PairExamples) and len(examples) == 3
    assert examples.tokens().tolist() == [2 * 1 + 1 + 2, 2 * 2 + 2 + 1, 2 * 3 + 1 + 3]  # the prompt twice, both completions
    rows = np.array([2, 0])
    assert examples.sequences(rows) == ([[3, 3, 3], [1], [3, 3, 3], [1]], [[13], [11], [23, 23, 23], [21, 21]])
    logps, lengths = torch.tensor([-7.0, -8.0, -9.0, -10.0]), torch.tensor([1, 1, 3, 2])
    batch = examples.batch(rows, logps, lengths)
    expected = {"policy_chosen_logps": [-7.0, -8.0], "policy_rejected_logps": [-9.0, -10.0], "ref_chosen_logps": [-3.0, -1.0],
                "ref_rejected_logps": [-6.0, -4.0], "chosen_lengths": [1.0, 1.0], "rejected_lengths": [3.0, 2.0],
                "chosen_rewards": [0.3, 0.1], "rejected_rewards": [-0.3, -0.1], "chosen_quantiles": [0.7, 0.5],
                "rejected_quantiles": [0.07, 0.05], "num_ref": [6.0, 4.0]}
    tensors = batch.tensors()
    assert set(tensors) == set(expected)
    for name, values in expected.items():
        assert tensors[name].dtype == torch.float32, name
        torch.testing.assert_close(tensors[name], torch.tensor(values), msg=name)
    free = make_examples(_pair_table(), SimPO(2.0)).batch(rows, logps, lengths)  # reference-free: no reference log-probs
    assert free.ref_chosen_logps is None and free.ref_rejected_logps is None


def test_pointwise_examples_give_each_completion_with_its_rows_values_in_the_batch():
    import numpy as np

    table = pa.table({"prompt_id": ["a", "a", "b"], "prompt_ids": [[1], [1], [2, 2]], "completion_ids": [[11, 11], [12], [13, 13, 13]],
                      "reward": [0.1, 0.2, 0.3], "quantile": [0.5, 0.6, 0.7], "num_ref": [4, 5, 6], "ref_logp": [-1.0, -2.0, -3.0]})
    examples = make_examples(table, QRPO(0.1))
    assert isinstance(examples, PointwiseExamples) and len(examples) == 3
    assert examples.tokens().tolist() == [3, 2, 5]
    rows = np.array([2, 1])
    assert examples.sequences(rows) == ([[2, 2], [1]], [[13, 13, 13], [12]])
    batch = examples.batch(rows, torch.tensor([-7.0, -8.0]), torch.tensor([3, 1]))
    expected = {"policy_logps": [-7.0, -8.0], "ref_logps": [-3.0, -2.0], "lengths": [3.0, 1.0], "rewards": [0.3, 0.2],
                "quantiles": [0.7, 0.6], "num_ref": [6.0, 5.0]}
    tensors = batch.tensors()
    assert set(tensors) == set(expected)
    for name, values in expected.items():
        assert tensors[name].dtype == torch.float32, name
        torch.testing.assert_close(tensors[name], torch.tensor(values), msg=name)
    assert PointwiseExamples(table.drop_columns(["ref_logp"]), False).batch(rows, torch.zeros(2), torch.ones(2)).ref_logps is None


def test_examples_name_the_missing_columns_and_a_pair_method_refuses_single_completions():
    with pytest.raises(InputError) as err:
        make_examples(_pair_table().drop_columns(["chosen_quantile", "rejected_ref_logp"]), DPO(0.1))
    assert str(err.value) == "the training table lacks column(s) chosen_quantile, rejected_ref_logp; rebuild it with the training_data step"
    pointwise = pa.table({"prompt_id": ["a"], "prompt_ids": [[1]], "completion_ids": [[2]], "reward": [0.0], "quantile": [0.5], "num_ref": [2]})
    with pytest.raises(InputError) as err:
        make_examples(pointwise, SimPO(2.0))
    assert str(err.value) == ("algorithm simpo needs preference pairs but the training table holds single completions "
                              "(regime=pointwise); use regime=best_worst or regime=random_pairs, or algorithm=qrpo")


def test_micro_batch_takes_the_flat_fused_pass_by_default_and_detaches_the_diagnostics(monkeypatch):
    import numpy as np

    import qrpo.training.trainer

    calls = []

    def fake_logps(name):
        def logps(model, prompts, completions, pad_id, fused):
            calls.append((name, prompts, completions, pad_id, fused))
            return torch.arange(len(prompts), dtype=torch.float32, requires_grad=True), torch.ones(len(prompts), dtype=torch.long)
        return logps

    monkeypatch.setattr(qrpo.training.batching, "sequence_logps", fake_logps("flat"))
    monkeypatch.setattr(qrpo.training.batching, "shared_prompt_logps", fake_logps("shared"))

    class Half:
        name, needs_pairs, needs_reference = "half", True, False

        def __call__(self, batch):
            d = batch.policy_chosen_logps.double() * 2
            return batch.policy_chosen_logps * 0.5, {"twice": d}

    examples = make_examples(_pair_table(), Half())
    losses, diagnostics, batch = micro_batch("model", examples, np.array([1]), Half(), pad_id=7)
    assert calls == [("flat", [[2, 2], [2, 2]], [[12, 12], [22]], 7, True)]
    assert losses.requires_grad and losses.tolist() == [0.0]
    assert diagnostics["twice"].dtype == torch.float32 and not diagnostics["twice"].requires_grad
    assert batch.policy_rejected_logps.tolist() == [1.0]
    micro_batch("model", examples, np.array([1]), Half(), pad_id=7, share_prompts=True, fused_lm_head=False)
    assert calls[-1] == ("shared", [[2, 2], [2, 2]], [[12, 12], [22]], 7, False)


def test_epoch_order_gives_full_batches_only_and_depends_on_the_seed():
    import numpy as np

    for tokens in (None, np.arange(23)):
        batches = epoch_order(23, 4, seed=0, epoch=0, tokens=tokens)
        assert [len(b) for b in batches] == [4] * 5  # the last 3 rows wait for another epoch
        assert len(set(np.concatenate(batches).tolist())) == 20
        assert epoch_order(24, 4, 0, 0, tokens=None if tokens is None else np.arange(24))[0].size == 4
        assert len(epoch_order(24, 4, 0, 0, tokens=None if tokens is None else np.arange(24))) == 6
        other = epoch_order(23, 4, seed=1, epoch=0, tokens=tokens)
        assert [b.tolist() for b in other] != [b.tolist() for b in batches]
    plain = np.concatenate(epoch_order(64, 4, seed=0, epoch=0, tokens=None))
    assert plain.tolist() != sorted(plain.tolist())  # shuffled


def test_length_grouping_sorts_within_windows_of_64_batches_and_shuffles_the_batches():
    """Distinct lengths (length = row index). An epoch of 64 batches is one window: every batch holds rows
    of consecutive length rank; of 65 batches, two windows of 65 rows each, sorted apart: some batches
    are not consecutive in the global ranking. The batches come in a random order, not by length."""
    import numpy as np

    consecutive = lambda b: b.max() - b.min() == len(b) - 1  # noqa: E731
    one_window = epoch_order(128, 2, seed=0, epoch=0, tokens=np.arange(128))
    assert all(consecutive(b) for b in one_window) and len(one_window) == 64
    starts = [int(b.min()) for b in one_window]
    assert starts != sorted(starts) and sorted(starts) == list(range(0, 128, 2))
    two_windows = epoch_order(130, 2, seed=0, epoch=0, tokens=np.arange(130))
    assert not all(consecutive(b) for b in two_windows)


def test_length_grouping_keeps_the_epochs_shuffle_among_rows_of_equal_length():
    """Two lengths (rows 0-63 short, 64-127 long), one window. Grouping sorts by length only: the short rows
    pair up in the order the epoch's shuffle (the plain, ungrouped order of the same seed) put them."""
    import numpy as np

    tokens = np.repeat([10, 20], 64)
    shuffled = np.concatenate(epoch_order(128, 2, seed=4, epoch=1, tokens=None)).tolist()
    by_length = [r for r in shuffled if tokens[r] == 10] + [r for r in shuffled if tokens[r] == 20]
    expected = {frozenset(by_length[i : i + 2]) for i in range(0, 128, 2)}
    assert {frozenset(b.tolist()) for b in epoch_order(128, 2, seed=4, epoch=1, tokens=tokens)} == expected
