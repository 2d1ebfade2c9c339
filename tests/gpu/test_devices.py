"""The paths that run on CUDA, device-parametrised.

Every test runs on the CPU in the normal suite and on CUDA under `make gpu-check` (the `cuda` cases
carry the `gpu` mark; without a CUDA device they are skipped with that reason). Only torch,
transformers, accelerate, peft, pyarrow, numpy and pytest are needed: a GPU image seldom has Prefect,
Hydra or MLflow, so nothing here imports `flows` or the tracking code.

The trainer and the reward classifier pick their device themselves (CUDA when there is one), so their
`cpu` cases run on a machine without CUDA and their `cuda` cases on one with it; each asserts the
device it ran on.
"""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from qrpo.objective.algorithms import DPO, QRPO
from qrpo.config.sections import DistributedConfig, ModelConfig, TrainConfig
from qrpo.training.distributed import launch_training
from qrpo.training.fused_head import output_head, token_logps
from qrpo.training.logprobs import batched_sequence_logps, sequence_logps, shared_prompt_logps
from qrpo.models import load_policy, prepare_model
from qrpo.rewards.classifier import SequenceClassifierReward, resolve_dtype
from qrpo.sampling import HFSampler, SamplingParams, encode_prompts, sample_table
from qrpo.training.trainer import _optimizer, train_policy

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 256}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("device_model")
    prepare_model(ModelConfig(name="tiny", source="config", _target_="qrpo.models.TinyModel.load", architecture=TINY, seed=0), out)
    return out


def _machine_device(device: str) -> None:
    """Skips the `cpu` case on a CUDA machine where the code under test picks its device itself."""
    if device == "cpu" and torch.cuda.is_available():
        pytest.skip("this path takes CUDA whenever there is one; the cuda case covers this machine")


def _ids(n, length, seed, low=10, high=200):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(low, high, (length + i % 3,), generator=g).tolist() for i in range(n)]


def _pairs_table(model, pad_id, n=8):
    prompts, chosen, rejected = _ids(n, 3, 0), _ids(n, 4, 1), _ids(n, 5, 2)
    ref = lambda completions: batched_sequence_logps(model, prompts, completions, pad_id, batch_size=4).tolist()  # noqa: E731
    return pa.table({
        "prompt_id": [f"p{i}" for i in range(n)], "prompt_ids": prompts, "chosen_ids": chosen, "rejected_ids": rejected,
        "chosen_reward": [0.8] * n, "rejected_reward": [0.2] * n, "chosen_quantile": [1.0] * n,
        "rejected_quantile": [0.25] * n, "num_ref": [4] * n, "chosen_ref_logp": ref(chosen), "rejected_ref_logp": ref(rejected),
    })


def _pointwise_table(model, pad_id, n=8):
    prompts, completions = [p for p in _ids(n // 2, 3, 0) for _ in range(2)], _ids(n, 4, 3)
    return pa.table({
        "prompt_id": [f"p{i // 2}" for i in range(n)], "prompt_ids": prompts, "completion_ids": completions,
        "reward": [float(i % 4) for i in range(n)], "quantile": [(i % 4) / 4 for i in range(n)], "num_ref": [4] * n,
        "ref_logp": batched_sequence_logps(model, prompts, completions, pad_id, batch_size=4).tolist(),
    })


def _train(model_dir, device, precision, algorithm=None, steps=4):
    """A few optimiser steps of DPO on the same 8 pairs; (history, trained model)."""
    model, tokenizer = load_policy(model_dir, torch.device(device), torch.float32)  # fp32 master weights, as in training
    table = _pairs_table(model, tokenizer.pad_token_id)
    cfg = TrainConfig(learning_rate=3e-3, epochs=steps // 2, batch_size=4, micro_batch_size=2, warmup_ratio=0.0,
                      mixed_precision=precision, group_by_length=False)
    history = train_policy(model, table, algorithm or DPO(beta=0.5), cfg, tokenizer.pad_token_id)
    return history, model


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_training_tracks_fp32_for_a_few_steps(model_dir, device):
    """4 DPO steps, bf16 autocast over fp32 master weights against fp32: every step's loss within 0.02
    (bf16 keeps 8 mantissa bits: log-prob sums of ~5 tokens differ by ~1e-2, the loss by a fraction of
    that), while the loss itself moves by more than that over the 4 steps; the master weights stay fp32, and
the model handed back no longer runs under the training's autocast (later passes choose their own)."""
    _machine_device(device)
    fp32, _ = _train(model_dir, device, "no")
    bf16, model = _train(model_dir, device, "bf16")
    assert next(model.parameters()).device.type == device and next(model.parameters()).dtype == torch.float32
    assert abs(fp32[-1]["loss"] - fp32[0]["loss"]) > 0.05, "the run must move the loss for the comparison to mean anything"
    assert [h["loss"] for h in bf16] == pytest.approx([h["loss"] for h in fp32], abs=0.02)
    assert [h["loss"] for h in bf16] != [h["loss"] for h in fp32], "bf16 autocast did not take effect"
    dtypes = []
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    model(input_ids=torch.tensor([[5, 6, 7, 8]], device=device))
    assert dtypes == [torch.float32], "the trained model must not keep the training's autocast"


@pytest.mark.parametrize("device", DEVICES)
def test_the_optimizer_is_fused_adamw_and_steps_like_the_reference_adamw(device):
    torch.manual_seed(0)
    params = [torch.randn(64, 32, device=device, requires_grad=True), torch.randn(32, device=device, requires_grad=True)]
    reference = [p.detach().clone().requires_grad_() for p in params]
    cfg = TrainConfig(learning_rate=1e-2, weight_decay=0.1)
    fused = _optimizer(params, cfg, torch.device(device))
    assert fused.defaults["fused"] is True
    plain = torch.optim.AdamW(reference, lr=1e-2, weight_decay=0.1, foreach=False)
    for step in range(3):
        for ps in (params, reference):
            for i, p in enumerate(ps):
                p.grad = torch.sin(torch.arange(p.numel(), device=device, dtype=torch.float32) + step + i).view_as(p)
        fused.step()
        plain.step()
    for a, b in zip(params, reference):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_the_fused_lm_head_under_bf16_autocast_equals_the_unfused_head_in_values_and_gradients(device):
    """token_logps under autocast against log_softmax(autocast(h @ W^T + b)): the same bf16 products,
    float32 reductions, so values within 2e-2 and gradients (hidden, W, b) within 2e-2 relative."""
    torch.manual_seed(0)
    n, h, v = 70, 48, 300
    hidden = torch.randn(n, h, device=device, requires_grad=True)
    weight = (torch.randn(v, h, device=device) * 0.2).requires_grad_()
    bias = (torch.randn(v, device=device) * 0.1).requires_grad_()
    targets = torch.randint(0, v, (n,), device=device)
    upstream = torch.rand(n, device=device)

    with torch.autocast(device, dtype=torch.bfloat16):
        fused = token_logps(hidden, weight, bias, targets, compute_dtype=torch.bfloat16, chunk_rows=16)
        logits = torch.nn.functional.linear(hidden, weight, bias)
    assert logits.dtype == torch.bfloat16
    plain = logits.float().log_softmax(-1).gather(-1, targets[:, None])[:, 0]
    grads_fused = torch.autograd.grad((fused * upstream).sum(), (hidden, weight, bias))
    grads_plain = torch.autograd.grad((plain * upstream).sum(), (hidden, weight, bias))
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, plain, atol=2e-2, rtol=0)
    for name, a, b in zip(("hidden", "weight", "bias"), grads_fused, grads_plain):
        scale = b.abs().max().item()
        assert (a - b).abs().max().item() <= 2e-2 * scale, name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("share_prompts", [False, True])
def test_model_log_probs_through_the_fused_head_under_autocast_equal_the_model_logits(model_dir, device, share_prompts, monkeypatch):
    """The model-level path the trainer takes (fused head, bf16 autocast, fp32 weights) against the
    model's own logits, in values (1e-2) and in the gradient of every parameter (1.5e-2 of its largest
    entry; on a CPU the two agree to 7e-3). Both paths compute the head's products in bf16 and reduce in
    float32, so only the summation order differs."""
    import qrpo.training.logprobs

    calls = []
    monkeypatch.setattr(qrpo.training.logprobs, "token_logps", lambda *a, **k: calls.append(1) or token_logps(*a, **k))
    model, tokenizer = load_policy(model_dir, torch.device(device), torch.float32)  # training's fp32 weights under autocast
    assert output_head(model) is not None, "the tiny Llama's head must take the fused path"
    prompts = [p for p in _ids(3, 4, 5) for _ in range(2)]
    completions = _ids(6, 5, 6)
    logps_of = shared_prompt_logps if share_prompts else sequence_logps
    results = []
    for fused in (True, False):
        model.zero_grad()
        with torch.autocast(device, dtype=torch.bfloat16):
            logps, _ = logps_of(model, prompts, completions, tokenizer.pad_token_id, fused=fused)
        logps.sum().backward()
        results.append((logps.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}))
        assert len(calls) == 1, "the fused head must be taken exactly when asked for"
    (fused_logps, fused_grads), (plain_logps, plain_grads) = results
    assert fused_logps.device.type == device
    torch.testing.assert_close(fused_logps, plain_logps, atol=1e-2, rtol=0)
    for name, g in plain_grads.items():
        assert (fused_grads[name] - g).abs().max().item() <= 1.5e-2 * max(g.abs().max().item(), 1e-6), name


@pytest.mark.parametrize("device", DEVICES)
def test_gumbel_sampling_is_batch_invariant(model_dir, device):
    """The same (prompt, index) keeps its completion whatever the batch it ran in: its noise comes from
    its own seeded generator on the device, and its logits do not depend on its batch neighbours."""
    model, tokenizer = load_policy(model_dir, torch.device(device))
    prompts = encode_prompts(tokenizer, pa.table({"prompt_id": [f"p{i}" for i in range(4)],
                                                  "prompt": [f"Tell me about number {i}." + " Now." * i for i in range(4)]}))
    params = SamplingParams(max_new_tokens=12, seed=7)
    rows = lambda batch: sorted(sample_table(HFSampler(model, tokenizer, params, batch), prompts, range(3),  # noqa: E731
                                             shard_prompts=4).select(["prompt_id", "sample_index", "completion_ids"]).to_pylist(),
                                key=lambda r: (r["prompt_id"], r["sample_index"]))
    alone, together = rows(1), rows(12)
    assert alone == together
    assert len({tuple(r["completion_ids"]) for r in alone}) == len(alone)


@pytest.mark.parametrize("device", DEVICES)
def test_the_reward_classifier_with_dtype_auto_runs_bf16_on_cuda_fp32_on_cpu(tmp_path, device):
    _machine_device(device)
    saved = SequenceClassifierReward.from_config(TINY, seed=0)
    saved.model.save_pretrained(tmp_path)
    saved.tokenizer.save_pretrained(tmp_path)
    auto = SequenceClassifierReward.from_pretrained(str(tmp_path), dtype="auto")
    fp32 = SequenceClassifierReward.from_pretrained(str(tmp_path), dtype="float32")
    param = next(auto.model.parameters())
    assert resolve_dtype("auto") == param.dtype == (torch.bfloat16 if device == "cuda" else torch.float32)
    assert param.device.type == device
    prompts = ["How are you?", "Name a colour.", "What is 2 + 2?"]
    completions = ["Fine, thanks.", "Blue, the colour of the sky on a clear day.", "4"]
    a, b = auto.score(prompts, completions), fp32.score(prompts, completions)
    spread = max(b) - min(b)
    assert spread > 0
    assert max(abs(x - y) for x, y in zip(a, b)) <= 0.05 * max(1.0, abs(b).max())


@pytest.mark.parametrize("device", DEVICES)
def test_every_tensor_the_trainer_hands_an_algorithm_is_on_the_policy_device(model_dir, device):
    """Through the default path (shared prompts, fused head), for a pair method and QRPO."""
    _machine_device(device)
    seen = []

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, batch):
            seen.extend((type(batch).__name__, k, v.device.type) for k, v in vars(batch).items() if isinstance(v, torch.Tensor))
            return self.inner(batch)

    for algorithm in (DPO(beta=0.5), QRPO(beta=0.5)):
        _train(model_dir, device, "no", Spy(algorithm), steps=2)
    model, tokenizer = load_policy(model_dir, torch.device(device), torch.float32)
    cfg = TrainConfig(learning_rate=1e-3, batch_size=4, micro_batch_size=2, warmup_ratio=0.0, mixed_precision="no")
    train_policy(model, _pointwise_table(model, tokenizer.pad_token_id), Spy(QRPO(beta=0.5)), cfg, tokenizer.pad_token_id)
    assert {kind for kind, _, _ in seen} == {"PairBatch", "PointwiseBatch"}
    assert seen and all(d == device for _, _, d in seen), [s for s in seen if s[2] != device]


@pytest.mark.gpu
def test_fsdp_through_accelerate_on_the_gpus_matches_one_process(model_dir, tmp_path):
    """FSDP (the conf/distributed/fsdp.yaml settings) on every GPU here for 4 steps against one process
    with the same global batch, fp32: losses within 1e-4, parameters within 1e-4 (reduction order only;
    the weights move by ~1e-2). The CPU twin is the FSDP2-over-gloo test in tests/qrpo/training/test_distributed.py."""
    preset = yaml.safe_load((Path(__file__).parents[2] / "conf" / "distributed" / "fsdp.yaml").read_text())
    world = max(1, min(2, torch.cuda.device_count()))
    model, tokenizer = load_policy(model_dir, torch.device("cuda"), torch.float32)
    table_file = tmp_path / "pairs.parquet"
    pq.write_table(_pairs_table(model, tokenizer.pad_token_id), table_file)
    train = {"learning_rate": 3e-3, "epochs": 2, "batch_size": 4, "micro_batch_size": 2, "warmup_ratio": 0.0,
             "mixed_precision": "no", "group_by_length": False}
    cfg = DistributedConfig("fsdp", world, accelerate=preset.get("accelerate", {}))
    history = launch_training(cfg, model_dir, table_file, {"_target_": "qrpo.objective.algorithms.DPO", "beta": 0.5}, train, tmp_path / "fsdp")
    single = train_policy(model, pq.read_table(table_file), DPO(beta=0.5), TrainConfig(**train), tokenizer.pad_token_id)
    assert [h["processes"] for h in history] == [world] * 4
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in single], abs=1e-4)
    sharded, _ = load_policy(tmp_path / "fsdp" / "policy", torch.device("cuda"), torch.float32)
    for (name, a), b in zip(model.state_dict().items(), sharded.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0, msg=name)
