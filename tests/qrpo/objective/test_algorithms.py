"""The algorithms as the trainer calls them: every loss and diagnostic against its formula written out
here by hand, what each method declares it needs, and the arguments each one refuses.

qrpo.objective.losses has its own hand-worked examples; these tests pin what qrpo.objective.algorithms adds on top: which
inputs each method picks from a batch, the pair average and prefixes of QRPO's diagnostics, the
clamping QRPO applies before its transform, the beta it solves from a budget, and SimPO's gamma.
"""

from __future__ import annotations

import math

import pytest
import torch

from qrpo.objective.algorithms import DPO, QRPO, REBEL, SFT, PairBatch, PointwiseBatch, SimPO
from qrpo.errors import UnknownKeyError
from qrpo.objective.optimum import beta_for_kl, beta_for_quantile, optimum_stats
from qrpo.objective.transforms import get_transform

T = torch.tensor


def _f64(*values):
    return torch.tensor(values, dtype=torch.float64)


def pair_batch(reference: bool = True) -> PairBatch:
    """Two pairs with every input different, so that a method reading the wrong field gives a wrong loss."""
    return PairBatch(
        policy_chosen_logps=_f64(-3.0, -5.0).requires_grad_(),
        policy_rejected_logps=_f64(-4.5, -4.0).requires_grad_(),
        ref_chosen_logps=_f64(-3.5, -4.25) if reference else None,
        ref_rejected_logps=_f64(-4.0, -4.75) if reference else None,
        chosen_lengths=_f64(3.0, 5.0),
        rejected_lengths=_f64(6.0, 2.0),
        chosen_rewards=_f64(2.0, 0.5),
        rejected_rewards=_f64(1.0, 1.5),
        chosen_quantiles=_f64(0.75, 0.25),
        rejected_quantiles=_f64(0.5, 1.0),
        num_ref=_f64(4.0, 4.0),
    )


def pointwise_batch() -> PointwiseBatch:
    return PointwiseBatch(
        policy_logps=_f64(-3.0, -5.0, -2.0).requires_grad_(),
        ref_logps=_f64(-3.5, -4.25, -2.0),
        lengths=_f64(3.0, 5.0, 1.0),
        rewards=_f64(2.0, 0.5, 9.0),
        quantiles=_f64(0.75, 0.0, 1.0),
        num_ref=_f64(4.0, 8.0, 2.0),
    )


def identity_log_z(beta: float) -> float:
    """log integral_0^1 exp(t / beta) dt, written out."""
    return math.log(beta * (math.exp(1.0 / beta) - 1.0))


def logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


# ------------------------------------------------------------------ what each method declares


@pytest.mark.parametrize("algorithm, name, needs_reference, needs_pairs", [
    (QRPO(beta=0.1), "qrpo", True, False),
    (DPO(beta=0.1), "dpo", True, True),
    (SimPO(beta=2.0), "simpo", False, True),
    (REBEL(beta=0.1), "rebel", True, True),
    (SFT(), "sft", False, True),
])
def test_each_method_declares_its_name_and_what_it_needs(algorithm, name, needs_reference, needs_pairs):
    assert (algorithm.name, algorithm.needs_reference, algorithm.needs_pairs) == (name, needs_reference, needs_pairs)


def test_repr_lists_the_public_parameters_only():
    assert repr(DPO(beta=0.25)) == "DPO(beta=0.25)"
    assert repr(SimPO(beta=2.0, gamma_beta_ratio=1)) == "SimPO(beta=2.0, gamma_beta_ratio=1.0)"
    assert repr(QRPO(beta=0.5, transform="log", loss_type="mae")) == (
        "QRPO(transform_name='log', loss_type='mae', beta=0.5, kl_budget=None, target_quantile=None)")
    assert repr(SFT()) == "SFT(beta=None)"


def test_batch_tensors_leave_out_the_missing_reference():
    with_ref, without = pair_batch().tensors(), pair_batch(reference=False).tensors()
    assert set(with_ref) - set(without) == {"ref_chosen_logps", "ref_rejected_logps"}
    assert len(with_ref) == 11 and with_ref["chosen_lengths"] is not None
    point = pointwise_batch()
    assert list(point.tensors()) == ["policy_logps", "ref_logps", "lengths", "rewards", "quantiles", "num_ref"]
    assert point.tensors()["rewards"] is point.rewards


# ------------------------------------------------------------------ pair methods against their formulas


def test_dpo_loss_and_diagnostics_by_hand():
    beta, batch = 0.5, pair_batch()
    losses, diagnostics = DPO(beta=beta)(batch)
    chosen = [beta * (-3.0 + 3.5), beta * (-5.0 + 4.25)]
    rejected = [beta * (-4.5 + 4.0), beta * (-4.0 + 4.75)]
    expected = [-logsigmoid(c - r) for c, r in zip(chosen, rejected)]
    assert losses.tolist() == pytest.approx(expected, rel=1e-12)
    assert diagnostics["chosen_implicit_reward"].tolist() == pytest.approx(chosen, rel=1e-12)
    assert diagnostics["rejected_implicit_reward"].tolist() == pytest.approx(rejected, rel=1e-12)
    assert diagnostics["implicit_margin"].tolist() == pytest.approx([c - r for c, r in zip(chosen, rejected)], rel=1e-12)
    assert diagnostics["implicit_accuracy"].tolist() == [1.0, 0.0]  # margins +0.5, -0.75
    assert diagnostics["implicit_accuracy"].dtype == torch.float64
    # gradient sign: the loss falls as the chosen log-prob rises, rises with the rejected one
    losses.sum().backward()
    assert (batch.policy_chosen_logps.grad < 0).all() and (batch.policy_rejected_logps.grad > 0).all()


def test_a_zero_margin_is_not_counted_as_accurate():
    batch = pair_batch()
    batch.policy_chosen_logps = batch.ref_chosen_logps.clone()
    batch.policy_rejected_logps = batch.ref_rejected_logps.clone()
    losses, diagnostics = DPO(beta=0.1)(batch)
    assert diagnostics["implicit_margin"].tolist() == [0.0, 0.0]
    assert diagnostics["implicit_accuracy"].tolist() == [0.0, 0.0]
    assert losses.tolist() == pytest.approx([math.log(2.0)] * 2, rel=1e-12)


@pytest.mark.parametrize("ratio", [None, 0.0, 0.3, 2.0])
def test_simpo_uses_per_token_log_probs_and_gamma_equal_to_ratio_times_beta(ratio):
    beta, batch = 2.0, pair_batch(reference=False)
    algorithm = SimPO(beta=beta) if ratio is None else SimPO(beta=beta, gamma_beta_ratio=ratio)
    gamma = (0.5 if ratio is None else ratio) * beta
    assert algorithm.gamma_beta_ratio == (0.5 if ratio is None else ratio)
    losses, diagnostics = algorithm(batch)
    chosen = [beta * -3.0 / 3.0, beta * -5.0 / 5.0]
    rejected = [beta * -4.5 / 6.0, beta * -4.0 / 2.0]
    expected = [-logsigmoid(c - r - gamma) for c, r in zip(chosen, rejected)]
    assert losses.tolist() == pytest.approx(expected, rel=1e-12)
    assert diagnostics["chosen_implicit_reward"].tolist() == pytest.approx(chosen, rel=1e-12)
    assert diagnostics["rejected_implicit_reward"].tolist() == pytest.approx(rejected, rel=1e-12)
    assert diagnostics["implicit_accuracy"].tolist() == [0.0, 1.0]  # margins -0.5, +2: gamma does not enter it


def test_simpo_ratio_is_stored_as_a_float():
    assert type(SimPO(beta=1.0, gamma_beta_ratio=1).gamma_beta_ratio) is float


def test_rebel_regresses_the_log_ratio_difference_onto_the_reward_difference_over_beta():
    beta, batch = 0.5, pair_batch()
    losses, diagnostics = REBEL(beta=beta)(batch)
    chosen, rejected = [-3.0 + 3.5, -5.0 + 4.25], [-4.5 + 4.0, -4.0 + 4.75]
    rewards = [2.0 - 1.0, 0.5 - 1.5]
    expected = [(dr / beta - (c - r)) ** 2 for dr, c, r in zip(rewards, chosen, rejected)]
    assert losses.tolist() == pytest.approx(expected, rel=1e-12)
    assert diagnostics["chosen_implicit_reward"].tolist() == pytest.approx([beta * c for c in chosen], rel=1e-12)
    assert diagnostics["rejected_implicit_reward"].tolist() == pytest.approx([beta * r for r in rejected], rel=1e-12)


def test_sft_is_the_chosen_mean_token_nll_and_ignores_the_rejected_side():
    batch = pair_batch(reference=False)
    losses, diagnostics = SFT(beta=0.3)(batch)
    assert losses.tolist() == pytest.approx([3.0 / 3.0, 5.0 / 5.0], rel=1e-12)
    assert list(diagnostics) == ["chosen_nll_per_token"]
    assert not diagnostics["chosen_nll_per_token"].requires_grad
    assert diagnostics["chosen_nll_per_token"].tolist() == losses.tolist()
    losses.sum().backward()
    assert batch.policy_chosen_logps.grad.tolist() == pytest.approx([-1 / 3, -1 / 5])
    assert batch.policy_rejected_logps.grad is None
    assert SFT(beta=0.3).beta == 0.3


@pytest.mark.parametrize("algorithm", [DPO(beta=0.1), SimPO(beta=2.0), REBEL(beta=0.1)], ids=lambda a: a.name)
def test_pair_diagnostics_are_detached_and_losses_are_per_example(algorithm):
    batch = pair_batch()
    losses, diagnostics = algorithm(batch)
    assert losses.shape == (2,) and losses.requires_grad
    assert set(diagnostics) == {"chosen_implicit_reward", "rejected_implicit_reward", "implicit_margin", "implicit_accuracy"}
    assert not any(d.requires_grad for d in diagnostics.values())


# ------------------------------------------------------------------ QRPO


def test_qrpo_pointwise_loss_and_diagnostics_by_hand_with_clamping_only_where_f_is_infinite():
    beta = 0.5
    batch = pointwise_batch()
    losses, diagnostics = QRPO(beta=beta, transform="log")(batch)
    # log is -inf at 0 only: q = 0 moves to 1/(2M) with M = 8; q = 1 stays (log 1 = 0 is finite)
    quantiles = [0.75, 1 / 16, 1.0]
    log_z = math.log(beta) - math.log1p(beta)
    implicit = [beta * (-3.0 + 3.5), beta * (-5.0 + 4.25), 0.0]
    target = [math.log(q) - beta * log_z for q in quantiles]
    residual = [t - i for t, i in zip(target, implicit)]
    assert diagnostics["quantile"].tolist() == pytest.approx(quantiles, rel=1e-15)
    assert diagnostics["transformed_reward"].tolist() == pytest.approx([math.log(q) for q in quantiles], rel=1e-12)
    assert diagnostics["target"].tolist() == pytest.approx(target, rel=1e-12)
    assert diagnostics["implicit_reward"].tolist() == pytest.approx(implicit, rel=1e-12)
    assert diagnostics["residual"].tolist() == pytest.approx(residual, rel=1e-12)
    assert diagnostics["residual_abs"].tolist() == pytest.approx([abs(r) for r in residual], rel=1e-12)
    assert diagnostics["beta_log_partition"].tolist() == pytest.approx([beta * log_z] * 3, rel=1e-12)
    assert losses.tolist() == pytest.approx([r * r for r in residual], rel=1e-12)
    assert not any(d.requires_grad for d in diagnostics.values())
    losses.sum().backward()  # d/d logp of (target - beta (logp - ref))^2 = -2 beta residual
    assert batch.policy_logps.grad.tolist() == pytest.approx([-2 * beta * r for r in residual], rel=1e-12)


def test_qrpo_identity_keeps_the_end_quantiles_and_mae_is_the_absolute_residual():
    beta = 2.0
    batch = pointwise_batch()
    losses, diagnostics = QRPO(beta=beta, loss_type="mae")(batch)
    assert diagnostics["quantile"].tolist() == [0.75, 0.0, 1.0]
    implicit = [beta * 0.5, beta * -0.75, 0.0]
    residual = [q - beta * identity_log_z(beta) - i for q, i in zip([0.75, 0.0, 1.0], implicit)]
    assert losses.tolist() == pytest.approx([abs(r) for r in residual], rel=1e-12)
    assert diagnostics["residual"].tolist() == pytest.approx(residual, rel=1e-12)


def test_qrpo_normal_icdf_clamps_both_ends_by_each_rows_own_num_ref():
    batch = pointwise_batch()
    _, diagnostics = QRPO(beta=1.0, transform="normal_icdf")(batch)
    assert diagnostics["quantile"].tolist() == pytest.approx([0.75, 1 / 16, 1 - 1 / 4], rel=1e-15)


def test_qrpo_on_pairs_averages_the_two_pointwise_losses_and_prefixes_each_sides_diagnostics():
    beta = 0.5
    batch = pair_batch()
    algorithm = QRPO(beta=beta, transform="log")
    losses, diagnostics = algorithm(batch)
    log_z = math.log(beta) - math.log1p(beta)

    def side(logps, refs, quantiles):
        implicit = [beta * (p - r) for p, r in zip(logps, refs)]
        return implicit, [math.log(q) - beta * log_z - i for q, i in zip(quantiles, implicit)]

    chosen_implicit, chosen_residual = side([-3.0, -5.0], [-3.5, -4.25], [0.75, 0.25])
    rejected_implicit, rejected_residual = side([-4.5, -4.0], [-4.0, -4.75], [0.5, 1.0])
    expected = [0.5 * (c * c + r * r) for c, r in zip(chosen_residual, rejected_residual)]
    assert losses.tolist() == pytest.approx(expected, rel=1e-12)
    assert diagnostics["chosen_residual"].tolist() == pytest.approx(chosen_residual, rel=1e-12)
    assert diagnostics["rejected_residual"].tolist() == pytest.approx(rejected_residual, rel=1e-12)
    assert diagnostics["chosen_quantile"].tolist() == [0.75, 0.25]
    assert diagnostics["rejected_quantile"].tolist() == [0.5, 1.0]
    assert diagnostics["chosen_target"].tolist() == pytest.approx([math.log(q) - beta * log_z for q in (0.75, 0.25)], rel=1e-12)
    assert diagnostics["rejected_transformed_reward"].tolist() == pytest.approx([math.log(0.5), 0.0], abs=1e-15)
    assert diagnostics["residual_abs"].tolist() == pytest.approx(
        [0.5 * (abs(c) + abs(r)) for c, r in zip(chosen_residual, rejected_residual)], rel=1e-12)
    assert diagnostics["chosen_implicit_reward"].tolist() == pytest.approx(chosen_implicit, rel=1e-12)
    assert diagnostics["rejected_implicit_reward"].tolist() == pytest.approx(rejected_implicit, rel=1e-12)
    assert diagnostics["implicit_margin"].tolist() == pytest.approx(
        [c - r for c, r in zip(chosen_implicit, rejected_implicit)], rel=1e-12)
    assert diagnostics["implicit_accuracy"].tolist() == [1.0, 0.0]
    assert diagnostics["beta_log_partition"].tolist() == pytest.approx([beta * log_z] * 2, rel=1e-12)
    prefixed = {f"{p}_{k}" for p in ("chosen", "rejected")
                for k in ("quantile", "transformed_reward", "target", "implicit_reward", "residual", "residual_abs")}
    assert set(diagnostics) == prefixed | {"implicit_margin", "implicit_accuracy", "residual_abs", "beta_log_partition"}
    assert not any(d.requires_grad for d in diagnostics.values())
    losses.sum().backward()  # each side weighs 1/2: -beta * residual
    assert batch.policy_chosen_logps.grad.tolist() == pytest.approx([-beta * r for r in chosen_residual], rel=1e-12)
    assert batch.policy_rejected_logps.grad.tolist() == pytest.approx([-beta * r for r in rejected_residual], rel=1e-12)


def test_qrpo_pair_quantiles_are_clamped_with_the_pairs_num_ref():
    batch = pair_batch()
    batch.chosen_quantiles, batch.rejected_quantiles = _f64(0.0, 1.0), _f64(1.0, 0.0)
    _, diagnostics = QRPO(beta=1.0, transform="normal_icdf")(batch)
    assert diagnostics["chosen_quantile"].tolist() == pytest.approx([1 / 8, 7 / 8], rel=1e-15)
    assert diagnostics["rejected_quantile"].tolist() == pytest.approx([7 / 8, 1 / 8], rel=1e-15)


def test_qrpo_passes_transform_parameters_to_the_transform():
    algorithm = QRPO(beta=2.0, transform="scaled_normal_icdf", mu=1.5, sigma=3.0)
    assert (algorithm._transform.mu, algorithm._transform.sigma) == (1.5, 3.0)
    assert algorithm.transform_name == "scaled_normal_icdf"
    _, diagnostics = algorithm(pointwise_batch())
    assert diagnostics["beta_log_partition"][0].item() == pytest.approx(2.0 * (1.5 / 2.0 + 9.0 / 8.0), rel=1e-12)


def test_qrpo_defaults_are_identity_and_mse():
    algorithm = QRPO(beta=0.1)
    assert (algorithm.transform_name, algorithm.loss_type, algorithm.kl_budget, algorithm.target_quantile) == (
        "identity", "mse", None, None)
    assert algorithm._transform.name == "identity"


@pytest.mark.parametrize("transform", ["identity", "log"])
def test_qrpo_solves_beta_from_a_kl_budget_or_a_target_quantile_and_reports_its_optimum(transform):
    f = get_transform(transform)
    by_kl = QRPO(beta=123.0, transform=transform, kl_budget=0.3)
    assert by_kl.beta == beta_for_kl(f, 0.3) and by_kl.kl_budget == 0.3 and by_kl.target_quantile is None
    by_q = QRPO(transform=transform, target_quantile=0.8)
    assert by_q.beta == beta_for_quantile(f, 0.8) and by_q.target_quantile == 0.8 and by_q.kl_budget is None
    stats = optimum_stats(f, by_kl.beta)
    assert by_kl.optimum() == {"beta": by_kl.beta, "optimum_kl": stats.kl, "optimum_expected_quantile": stats.expected_quantile}
    assert by_kl.optimum()["optimum_kl"] == pytest.approx(0.3, rel=1e-9)
    assert by_q.optimum()["optimum_expected_quantile"] == pytest.approx(0.8, rel=1e-9)


# ------------------------------------------------------------------ refused arguments


def test_qrpo_refuses_an_unknown_loss_type_naming_the_choices():
    with pytest.raises(ValueError) as err:
        QRPO(beta=0.1, loss_type="huber")
    assert str(err.value) == "algorithm.loss_type='huber' is not one of mse, mae"


def test_qrpo_refuses_both_budgets_and_no_beta_at_all():
    with pytest.raises(ValueError) as err:
        QRPO(beta=0.1, kl_budget=0.3, target_quantile=0.8)
    assert str(err.value) == "give algorithm.kl_budget or algorithm.target_quantile, not both"
    with pytest.raises(ValueError) as err:
        QRPO()
    assert str(err.value) == "QRPO needs algorithm.beta, algorithm.kl_budget or algorithm.target_quantile"


def test_qrpo_refuses_an_unknown_transform_and_names_an_unknown_key_with_the_valid_ones():
    with pytest.raises(ValueError, match="unknown transform 'cube'"):
        QRPO(beta=0.1, transform="cube")
    with pytest.raises(UnknownKeyError) as err:
        QRPO(beta=0.1, bta=1.0)  # Hydra's +algorithm.bta=1: neither QRPO's key nor the transform's
    assert str(err.value) == "unknown key algorithm.bta; valid keys: beta, transform, loss_type, kl_budget, target_quantile"
    with pytest.raises(UnknownKeyError) as err:
        QRPO(beta=0.1, transform="scaled_normal_icdf", mu=1.0, sgma=2.0, x=1)
    assert str(err.value) == ("unknown keys algorithm.sgma, algorithm.x; valid keys: "
                              "beta, transform, loss_type, kl_budget, target_quantile, mu, sigma")


def test_qrpo_accepts_a_transform_instance_with_no_parameters_to_check():
    transform = get_transform("scaled_normal_icdf", mu=2.0)
    assert QRPO(beta=1.0, transform=transform)._transform is transform


@pytest.mark.parametrize("make", [lambda b: QRPO(beta=b), DPO, SimPO, REBEL], ids=["qrpo", "dpo", "simpo", "rebel"])
@pytest.mark.parametrize("beta", [0.0, -0.1, math.inf, math.nan])
def test_every_method_refuses_a_non_positive_or_non_finite_beta(make, beta):
    with pytest.raises(ValueError, match="beta"):
        make(beta)


@pytest.mark.parametrize("make", [lambda b: QRPO(beta=b), DPO, SimPO, REBEL], ids=["qrpo", "dpo", "simpo", "rebel"])
def test_beta_is_stored_as_a_float(make):
    assert type(make(1).beta) is float
