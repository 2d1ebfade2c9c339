import pyarrow as pa
import pytest
import torch

from qrpo.algorithms import DPO, QRPO, REBEL, SFT, PreferenceBatch, SimPO
from qrpo.config import TrainConfig
from qrpo.logprobs import batched_sequence_logps
from qrpo.trainer import cosine_schedule, train_policy

ALGORITHMS = [QRPO(beta=0.5), QRPO(beta=0.5, transform="normal_icdf"), DPO(beta=0.5), SimPO(beta=2.0), REBEL(beta=0.5), SFT()]


def _pairs(model, pad_id, n=8):
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(10, 200, (3,), generator=g).tolist() for _ in range(n)]
    chosen = [torch.randint(10, 200, (4,), generator=g).tolist() for _ in range(n)]
    rejected = [torch.randint(10, 200, (5,), generator=g).tolist() for _ in range(n)]
    table = {
        "prompt_ids": prompts, "chosen_ids": chosen, "rejected_ids": rejected,
        "chosen_reward": [0.8] * n, "rejected_reward": [0.2] * n,
        "chosen_quantile": [1.0] * n, "rejected_quantile": [0.25] * n, "num_ref": [4] * n,
        "chosen_ref_logp": batched_sequence_logps(model, prompts, chosen, pad_id).tolist(),
        "rejected_ref_logp": batched_sequence_logps(model, prompts, rejected, pad_id).tolist(),
    }
    return pa.table(table)


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    f = cosine_schedule(total_steps=10, warmup_ratio=0.2)
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0) and f(6) == pytest.approx(0.5) and f(10) == pytest.approx(0.0)


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=repr)
def test_every_algorithm_trains_through_the_same_loop_and_lowers_its_loss(tiny_policy, algorithm):
    model, tokenizer = tiny_policy
    pairs = _pairs(model, tokenizer.pad_token_id)
    cfg = TrainConfig(learning_rate=3e-3, epochs=6, batch_size=4, micro_batch_size=2, warmup_ratio=0.0)
    history = train_policy(model, pairs, algorithm, cfg, tokenizer.pad_token_id)
    assert len(history) == 12
    losses = [h["loss"] for h in history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-2:]) < sum(losses[:2])


def test_qrpo_pushes_the_log_ratios_towards_their_regression_targets(tiny_policy):
    model, tokenizer = tiny_policy
    pairs = _pairs(model, tokenizer.pad_token_id)
    algorithm = QRPO(beta=0.5)
    cfg = TrainConfig(learning_rate=3e-3, epochs=10, batch_size=4, micro_batch_size=4, warmup_ratio=0.0)
    history = train_policy(model, pairs, algorithm, cfg, tokenizer.pad_token_id)
    # targets f(q) - beta log Z: chosen 1.0 - b, rejected 0.25 - b; the residual must shrink
    assert history[-1]["residual_abs"] < 0.5 * history[0]["residual_abs"]
    assert history[-1]["chosen_implicit_reward"] > history[-1]["rejected_implicit_reward"]


def test_qrpo_clamps_quantiles_only_for_transforms_that_need_it():
    batch = PreferenceBatch(*(torch.zeros(2) for _ in range(4)), torch.ones(2), torch.ones(2), torch.zeros(2), torch.zeros(2),
                            torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.5]), torch.tensor([4.0, 4.0]))
    losses, metrics = QRPO(beta=1.0, transform="log")(batch)  # q = 1 and 0 would give log 0 = -inf unclamped
    assert torch.isfinite(losses).all()
    losses_id, _ = QRPO(beta=1.0)(batch)
    assert torch.isfinite(losses_id).all()


def test_reference_free_methods_say_so():
    assert [a.needs_reference for a in (QRPO(0.1), DPO(0.1), SimPO(2.0), REBEL(0.1), SFT())] == [True, True, False, True, False]


def test_an_empty_training_table_is_a_clear_input_error(tiny_policy):
    from qrpo.errors import InputError

    model, tokenizer = tiny_policy
    empty = _pairs(model, tokenizer.pad_token_id).slice(0, 0)
    with pytest.raises(InputError, match="num_train_samples"):
        train_policy(model, empty, QRPO(beta=0.1), TrainConfig(), tokenizer.pad_token_id)
