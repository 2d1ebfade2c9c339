"""qrpo.objective.losses: a hand-worked example per loss, gradients against closed-form derivatives and
finite differences (gradcheck in float64), the optimum has zero QRPO loss, and the error messages."""

from __future__ import annotations

import math

import pytest
import torch

from qrpo.objective.losses import dpo_loss, qrpo_loss, qrpo_loss_from_quantiles, rebel_loss, simpo_loss
from qrpo.objective.quantiles import quantile_rewards
from qrpo.objective.transforms import get_transform

f64 = torch.float64


def t(*values, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=f64, requires_grad=grad)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --- hand-worked examples --------------------------------------------------------------------------


def test_qrpo_hand_worked_identity_example():
    """beta = 1/2, identity, q = 1/2, log pi_theta = -1.0, log pi_ref = -1.2.
    Z = beta (e^{1/beta} - 1) = (e^2 - 1)/2 = 3.19453, log Z = 1.16144, beta log Z = 0.58072;
    implicit reward = 0.5 * (-1.0 + 1.2) = 0.1; residual = 0.5 - 0.58072 - 0.1 = -0.18072;
    mse = 0.032660, mae = 0.18072."""
    beta_log_z = 0.5 * math.log((math.e**2 - 1) / 2)
    residual = 0.5 - beta_log_z - 0.1
    assert residual == pytest.approx(-0.18072, abs=1e-5)
    mse = qrpo_loss_from_quantiles(t(-1.0), t(-1.2), t(0.5), beta=0.5, transform="identity", loss_type="mse")
    mae = qrpo_loss_from_quantiles(t(-1.0), t(-1.2), t(0.5), beta=0.5, transform="identity", loss_type="mae")
    assert mse.losses.item() == pytest.approx(0.032660, abs=1e-6)
    assert mse.losses.item() == pytest.approx(residual**2, rel=1e-12)
    assert mae.losses.item() == pytest.approx(0.18072, abs=1e-5)
    assert mse.beta_log_partition == pytest.approx(beta_log_z, rel=1e-12)
    assert mse.implicit_rewards.item() == pytest.approx(0.1, rel=1e-12)
    assert mse.residuals.item() == pytest.approx(residual, rel=1e-12)
    assert mse.transformed_rewards.item() == 0.5


def test_qrpo_hand_worked_log_example_is_zero_at_the_optimum():
    """beta = 1, f = log: Z = beta/(beta+1) = 1/2, so pi*/pi_ref = q^{1/beta}/Z = 2q. For q = 1/4 the
    optimum has log pi_theta - log pi_ref = log(1/2): the residual log(1/4) - log(1/2) - log(1/2) = 0.
    Moving log pi_theta up by 0.3 gives residual -0.3, mse 0.09."""
    at_optimum = qrpo_loss_from_quantiles(t(math.log(0.5) - 2.0), t(-2.0), t(0.25), beta=1.0, transform="log")
    assert at_optimum.losses.item() == pytest.approx(0.0, abs=1e-15)
    off = qrpo_loss_from_quantiles(t(math.log(0.5) - 1.7), t(-2.0), t(0.25), beta=1.0, transform="log")
    assert off.losses.item() == pytest.approx(0.09, rel=1e-12)


def test_qrpo_loss_from_raw_rewards_hand_worked_clamps_only_where_f_is_infinite():
    """log, beta = 1, M = 4 references [1, 2, 3, 4], log pi_theta = log pi_ref, log Z = log(1/2).
    Raw reward 5 beats all: q_hat = 1, where log is finite (log 1 = 0), so it is NOT moved:
    target = 0 - log(1/2) = log 2, residual 0.693147, mse 0.480453. Raw reward 0.5 beats none:
    q_hat = 0, log 0 = -inf, clamped to 1/(2M) = 1/8: residual log(1/8) + log 2 = log(1/4), mse 1.921812.
    Phi^-1 is infinite at both ends: q_hat = 1 is moved to 1 - 1/8 = 7/8."""
    refs = t(1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0).reshape(2, 4)
    out = qrpo_loss(t(-3.0, -3.0), t(-3.0, -3.0), t(5.0, 0.5), refs, beta=1.0, transform="log")
    assert out.quantiles.tolist() == [1.0, 0.125]
    assert out.residuals.tolist() == pytest.approx([math.log(2), math.log(0.25)], rel=1e-12)
    assert out.losses.tolist() == pytest.approx([0.480453, 1.921812], abs=1e-6)
    assert qrpo_loss(t(-3.0, -3.0), t(-3.0, -3.0), t(5.0, 0.5), refs, 1.0, "normal_icdf").quantiles.tolist() == [0.875, 0.125]
    # identity needs no clamping: q_hat stays 1 and 0
    assert qrpo_loss(t(-3.0, -3.0), t(-3.0, -3.0), t(5.0, 0.5), refs, 1.0).quantiles.tolist() == [1.0, 0.0]


def test_qrpo_loss_equals_quantiles_then_regression_for_every_tie_policy():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 4, (64,), generator=gen).to(f64)
    refs = torch.randint(0, 4, (64, 5), generator=gen).to(f64)
    policy, ref = torch.randn(64, generator=gen, dtype=f64), torch.randn(64, generator=gen, dtype=f64)
    for ties in ("le", "lt", "mid"):
        q = quantile_rewards(rewards, refs, ties=ties)
        direct = qrpo_loss_from_quantiles(policy, ref, q, 0.3, "sqrt")
        via_rewards = qrpo_loss(policy, ref, rewards, refs, 0.3, "sqrt", ties=ties)
        torch.testing.assert_close(via_rewards.losses, direct.losses, rtol=0, atol=0)


# --- the optimum, enumerated --------------------------------------------------------------------
#
# A completion space small enough to write down: six completions y of one prompt with their reference
# probabilities and raw rewards (y0 and y2 tie). Their quantile q is the randomised probability
# integral transform: a completion whose reward r has reference mass P(r) gets q ~ U[F(r-), F(r)]
# (F the reference CDF of the reward), which is exactly Uniform(0, 1) under pi_ref: the atoms tile
# [0, 1]. So the extended completions (y, q) carry the transformed reward R = f(q), and the
# KL-regularised optimum pi*(y, q) = pi_ref(y, q) exp(f(q)/beta) / Z is enumerated here: a sum over
# the six completions of the integral over each one's quantile interval (Gauss-Legendre in
# z = Phi^{-1}(q)). Nothing of qrpo.objective.transforms enters that Z; the loss must vanish at pi* only if its
# closed-form log Z_f(beta) equals the enumerated one. The ties="mid" estimator against a reference
# set that IS the reference distribution (each completion repeated 20 pi_ref(y) times) gives the
# middle of each atom, so qrpo_loss from raw rewards is checked at pi* as well.

PI_REF = (0.10, 0.25, 0.05, 0.30, 0.20, 0.10)  # multiples of 1/20
REWARDS = (1.3, -0.2, 1.3, 0.7, 2.5, 0.1)
REFERENCE_SET = tuple(r for r, p in zip(REWARDS, PI_REF) for _ in range(round(20 * p)))  # the population, M = 20

# the transformed reward, written here as a function of z = Phi^{-1}(q) (what the quadrature needs,
# accurate in both tails) and of q (for the targets): the table of qrpo/objective/transforms.py, not its code
_NDTR, _LOG_NDTR, _NDTRI = torch.special.ndtr, torch.special.log_ndtr, torch.special.ndtri
REWARD_OF_QUANTILE = {  # name, params -> (f(Phi(z)), f(q))
    ("identity", ()): (_NDTR, lambda q: q),
    ("log", ()): (_LOG_NDTR, torch.log),
    ("square", ()): (lambda z: _NDTR(z) ** 2, lambda q: q**2),
    ("sqrt", ()): (lambda z: _NDTR(z).sqrt(), torch.sqrt),
    ("normal_icdf", ()): (lambda z: z, _NDTRI),
    ("scaled_normal_icdf", (("mu", 0.5), ("sigma", 0.2))): (lambda z: 0.5 + 0.2 * z, lambda q: 0.5 + 0.2 * _NDTRI(q)),
}
Z_CUT = 38.0  # |z| > 38: the normal density is below e^-722, nothing any of these rewards can lift


def _atoms():
    """Each completion's quantile interval [F(r-), F(r)] (ties share one)."""
    below = [sum(p for r2, p in zip(REWARDS, PI_REF) if r2 < r) for r in REWARDS]
    mass = [sum(p for r2, p in zip(REWARDS, PI_REF) if r2 == r) for r in REWARDS]
    return [(lo, lo + m) for lo, m in zip(below, mass)]


def _log_integral(reward_of_z, beta: float, lo: float, hi: float) -> float:
    """log of integral_lo^hi exp(f(q)/beta) dq = integral over z in [Phi^-1(lo), Phi^-1(hi)] of
    exp(f(Phi(z))/beta) phi(z) dz, by 40-point Gauss-Legendre on pieces 1/4 wide."""
    import numpy as np

    za = -Z_CUT if lo == 0 else float(_NDTRI(torch.tensor(lo, dtype=f64)))
    zb = Z_CUT if hi >= 1 else float(_NDTRI(torch.tensor(hi, dtype=f64)))
    nodes, weights = np.polynomial.legendre.leggauss(40)
    edges = np.linspace(za, zb, max(1, math.ceil((zb - za) / 0.25)) + 1)
    half = (edges[1:] - edges[:-1])[:, None] / 2
    z = torch.tensor((edges[:-1, None] + half * (nodes[None, :] + 1)).ravel(), dtype=f64)
    log_w = torch.tensor(np.log(half * weights[None, :]).ravel(), dtype=f64)
    return float(torch.logsumexp(reward_of_z(z) / beta - z**2 / 2 - 0.5 * math.log(2 * math.pi) + log_w, 0))


def enumerated_log_partition(reward_of_z, beta: float) -> float:
    """log Z = log sum_y pi_ref(y) E_{q ~ U(atom of y)} exp(f(q)/beta), completion by completion."""
    terms = [math.log(p) - math.log(hi - lo) + _log_integral(reward_of_z, beta, lo, hi)
             for p, (lo, hi) in zip(PI_REF, _atoms())]
    return float(torch.logsumexp(torch.tensor(terms, dtype=f64), 0))


def test_the_enumerated_completion_space_has_uniform_quantiles_under_the_reference():
    """The premise of the enumeration: the atoms tile [0, 1] with widths equal to their reference
    mass, and the ties="mid" quantiles of the population reference set are the atoms' middles."""
    atoms = sorted(set(_atoms()))
    assert math.isclose(sum(PI_REF), 1.0) and atoms[0][0] == 0 and math.isclose(atoms[-1][1], 1.0)
    assert all(math.isclose(a[1], b[0]) for a, b in zip(atoms, atoms[1:]))
    mid = quantile_rewards(t(*REWARDS), t(*REFERENCE_SET).expand(len(REWARDS), -1), ties="mid")
    assert mid.tolist() == pytest.approx([(lo + hi) / 2 for lo, hi in _atoms()], abs=1e-15)
    # and the quadrature integrates the identity's atoms as their antiderivative beta (e^{b/beta} - e^{a/beta}) does
    for lo, hi in atoms:
        exact = math.log(0.37 * (math.exp(hi / 0.37) - math.exp(lo / 0.37)))
        assert _log_integral(_NDTR, 0.37, lo, hi) == pytest.approx(exact, abs=1e-12)


@pytest.mark.parametrize("beta", [0.1, 0.37, 2.0, 20.0])
@pytest.mark.parametrize("key", list(REWARD_OF_QUANTILE), ids=[name for name, _ in REWARD_OF_QUANTILE])
def test_qrpo_loss_vanishes_at_the_enumerated_kl_regularised_optimum(key, beta):
    """At pi*(y, q) = pi_ref(y, q) exp(f(q)/beta) / Z_enumerated every QRPO residual
    f(q) - beta log Z_f - beta log(pi*/pi_ref) = beta (log Z_enumerated - log Z_f) must be zero."""
    name, params = key
    reward_of_z, reward_of_q = REWARD_OF_QUANTILE[key]
    transform = get_transform(name, **dict(params))
    log_z = enumerated_log_partition(reward_of_z, beta)
    ref = torch.log(t(*PI_REF))  # log pi_ref(y | x) of each completion

    # three quantiles inside every completion's interval, straight into the regression
    fractions = t(0.1, 0.5, 0.9)
    lo, hi = (t(*edge) for edge in zip(*_atoms()))
    q = (lo[:, None] + (hi - lo)[:, None] * fractions[None, :]).ravel()  # [6 * 3]
    ref_q = ref.repeat_interleave(3)
    optimum = ref_q + reward_of_q(q) / beta - log_z  # log pi*: the same completion, reweighted
    out = qrpo_loss_from_quantiles(optimum, ref_q, q, beta, transform)
    assert out.beta_log_partition == pytest.approx(beta * log_z, rel=1e-11, abs=1e-11)
    assert out.residuals.abs().max().item() < 1e-12, (out.beta_log_partition, beta * log_z)

    # from raw rewards: q = the mid-rank among the population reference set (each atom's middle)
    middle = (lo + hi) / 2
    out = qrpo_loss(ref + reward_of_q(middle) / beta - log_z, ref, t(*REWARDS),
                    t(*REFERENCE_SET).expand(len(REWARDS), -1), beta, transform, ties="mid")
    assert out.quantiles.tolist() == pytest.approx(middle.tolist(), abs=1e-15)
    assert out.losses.max().item() < 1e-24


def test_dpo_hand_worked_example():
    """beta = 0.1; chosen: log pi = -1, ref = -2 -> implicit reward 0.1 * 1 = 0.1; rejected: log pi = -3,
    ref = -2 -> -0.1. Margin 0.2, loss = log(1 + e^{-0.2}) = 0.598139."""
    out = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.1)
    assert out.losses.item() == pytest.approx(0.598139, abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(0.1)
    assert out.rejected_rewards.item() == pytest.approx(-0.1)
    # no preference yet (policy = reference): log 2
    assert dpo_loss(t(-1.0), t(-3.0), t(-1.0), t(-3.0), beta=0.1).losses.item() == pytest.approx(math.log(2))


def test_simpo_hand_worked_example():
    """beta = 2, gamma = 0.5; chosen log pi = -3 over 3 tokens (mean -1), rejected -8 over 4 (mean -2):
    z = 2 * (-1 - (-2)) - 0.5 = 1.5, loss = log(1 + e^{-1.5}) = 0.201413."""
    out = simpo_loss(t(-3.0), t(-8.0), t(3.0), t(4.0), beta=2.0, gamma=0.5)
    assert out.losses.item() == pytest.approx(0.201413, abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(-2.0)
    assert out.rejected_rewards.item() == pytest.approx(-4.0)
    # integer token counts work too
    assert simpo_loss(t(-3.0), t(-8.0), torch.tensor([3]), torch.tensor([4]), 2.0, 0.5).losses.item() == pytest.approx(
        0.201413, abs=1e-6
    )


def test_rebel_hand_worked_example():
    """beta = 0.5, r_w = 2, r_l = 1: (r_w - r_l)/beta = 2. Log-ratios: chosen -1 - (-2.5) = 1.5,
    rejected -2 - (-2.25) = 0.25, difference 1.25; loss = (2 - 1.25)^2 = 0.5625."""
    out = rebel_loss(t(-1.0), t(-2.0), t(-2.5), t(-2.25), t(2.0), t(1.0), beta=0.5)
    assert out.losses.item() == pytest.approx(0.5625, rel=1e-12)
    assert out.chosen_rewards.item() == pytest.approx(0.75)
    assert out.rejected_rewards.item() == pytest.approx(0.125)


# --- gradients --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["identity", "log", "normal_icdf"])
def test_qrpo_mse_gradient_is_minus_two_beta_residual(name):
    """L = (f - beta log Z - beta (pi - ref))^2: dL/dpi = -2 beta residual, dL/dref = +2 beta residual,
    and nothing flows into the quantiles (they are targets)."""
    gen = torch.Generator().manual_seed(1)
    policy = torch.randn(16, generator=gen, dtype=f64).requires_grad_()
    ref = torch.randn(16, generator=gen, dtype=f64).requires_grad_()
    q = torch.rand(16, generator=gen, dtype=f64).clamp(0.01, 0.99).requires_grad_()
    beta = 0.7
    out = qrpo_loss_from_quantiles(policy, ref, q, beta, name)
    out.losses.sum().backward()
    torch.testing.assert_close(policy.grad, -2 * beta * out.residuals)
    torch.testing.assert_close(ref.grad, 2 * beta * out.residuals)
    assert q.grad is None


def test_qrpo_mae_gradient_is_minus_beta_sign_of_residual():
    policy, ref, q = t(-1.0, -2.0, -3.0, grad=True), t(-1.5, -1.0, -3.0), t(0.9, 0.1, 0.5)
    out = qrpo_loss_from_quantiles(policy, ref, q, 0.5, "identity", loss_type="mae")
    out.losses.sum().backward()
    assert (out.residuals != 0).all()
    torch.testing.assert_close(policy.grad, -0.5 * torch.sign(out.residuals))


def test_dpo_gradient_is_minus_beta_sigmoid_of_minus_margin():
    """d/d pi_w of -log sigmoid(m) = -beta sigmoid(-m), d/d pi_l = +beta sigmoid(-m) (m = the margin);
    hand example: beta = 0.1, m = 0.2 -> -0.1 * 0.450166 = -0.0450166."""
    chosen, rejected = t(-1.0, grad=True), t(-3.0, grad=True)
    dpo_loss(chosen, rejected, t(-2.0), t(-2.0), beta=0.1).losses.sum().backward()
    assert chosen.grad.item() == pytest.approx(-0.1 * _sigmoid(-0.2), rel=1e-12)
    assert chosen.grad.item() == pytest.approx(-0.0450166, abs=1e-7)
    assert rejected.grad.item() == pytest.approx(0.1 * _sigmoid(-0.2), rel=1e-12)


def test_simpo_gradient_scales_with_beta_over_length():
    """d/d logp_w = -(beta/|y_w|) sigmoid(-z): beta = 2, |y_w| = 3, z = 1.5 -> -(2/3) * 0.182426."""
    chosen, rejected = t(-3.0, grad=True), t(-8.0, grad=True)
    simpo_loss(chosen, rejected, t(3.0), t(4.0), beta=2.0, gamma=0.5).losses.sum().backward()
    assert chosen.grad.item() == pytest.approx(-(2 / 3) * _sigmoid(-1.5), rel=1e-12)
    assert rejected.grad.item() == pytest.approx((2 / 4) * _sigmoid(-1.5), rel=1e-12)


def test_rebel_gradient_is_minus_two_residual():
    """Residual 0.75 in the hand example: d/d pi_w = -1.5, d/d pi_l = +1.5, d/d ref_w = +1.5."""
    pw, pl, rw = t(-1.0, grad=True), t(-2.0, grad=True), t(-2.5, grad=True)
    rebel_loss(pw, pl, rw, t(-2.25), t(2.0), t(1.0), beta=0.5).losses.sum().backward()
    assert (pw.grad.item(), pl.grad.item(), rw.grad.item()) == pytest.approx((-1.5, 1.5, 1.5))


def test_every_loss_passes_gradcheck_against_finite_differences():
    gen = torch.Generator().manual_seed(2)

    def randn(grad: bool = True) -> torch.Tensor:
        return torch.randn(5, generator=gen, dtype=f64).requires_grad_(grad)

    q = torch.rand(5, generator=gen, dtype=f64) * 0.9 + 0.05
    lengths_w, lengths_l = t(3.0, 5.0, 2.0, 7.0, 1.0), t(4.0, 2.0, 6.0, 3.0, 2.0)
    rewards_w, rewards_l = randn(False), randn(False)
    for name in ("identity", "log", "square", "sqrt", "normal_icdf"):
        for loss_type in ("mse", "mae"):
            assert torch.autograd.gradcheck(
                lambda p, r: qrpo_loss_from_quantiles(p, r, q, 0.4, name, loss_type).losses, (randn(), randn())
            )
    assert torch.autograd.gradcheck(lambda *x: dpo_loss(*x, beta=0.3).losses, (randn(), randn(), randn(), randn()))
    assert torch.autograd.gradcheck(
        lambda w, l: simpo_loss(w, l, lengths_w, lengths_l, beta=2.0, gamma=0.3).losses, (randn(), randn())
    )
    assert torch.autograd.gradcheck(
        lambda *x: rebel_loss(*x, rewards_w, rewards_l, beta=0.3).losses, (randn(), randn(), randn(), randn())
    )


def test_diagnostics_are_detached():
    out = qrpo_loss_from_quantiles(t(-1.0, grad=True), t(-1.0), t(0.5), 0.5)
    assert out.losses.requires_grad
    assert not (out.implicit_rewards.requires_grad or out.residuals.requires_grad or out.quantiles.requires_grad)
    pair = dpo_loss(t(-1.0, grad=True), t(-2.0, grad=True), t(-1.0), t(-1.0), 0.5)
    assert pair.losses.requires_grad and not pair.chosen_rewards.requires_grad


# --- errors -----------------------------------------------------------------------------------------

PAIR_CALLS = {
    "dpo": lambda beta: dpo_loss(t(-1.0), t(-2.0), t(-1.0), t(-1.0), beta),
    "simpo": lambda beta: simpo_loss(t(-1.0), t(-2.0), t(1.0), t(1.0), beta, 0.0),
    "rebel": lambda beta: rebel_loss(t(-1.0), t(-2.0), t(-1.0), t(-1.0), t(1.0), t(0.0), beta),
    "qrpo": lambda beta: qrpo_loss_from_quantiles(t(-1.0), t(-1.0), t(0.5), beta),
    "qrpo_raw": lambda beta: qrpo_loss(t(-1.0), t(-1.0), t(0.5), t(0.0, 1.0).reshape(1, 2), beta),
}


@pytest.mark.parametrize("loss", sorted(PAIR_CALLS))
@pytest.mark.parametrize("beta", [0.0, -1.0, float("nan"), float("inf")])
def test_every_loss_refuses_a_non_positive_or_non_finite_beta(loss, beta):
    with pytest.raises(ValueError, match="beta must be a positive finite number"):
        PAIR_CALLS[loss](beta)


def test_shape_mismatches_are_refused_with_the_shapes():
    with pytest.raises(ValueError, match=r"expected 1-D tensors of one shape \[B\].*'quantiles': \(3,\)"):
        qrpo_loss_from_quantiles(torch.zeros(2), torch.zeros(2), torch.full((3,), 0.5), 1.0)
    with pytest.raises(ValueError, match=r"expected 1-D tensors of one shape \[B\]"):
        qrpo_loss_from_quantiles(torch.zeros(2, 1), torch.zeros(2, 1), torch.full((2, 1), 0.5), 1.0)
    with pytest.raises(ValueError, match=r"expected rewards \[B\] and ref_rewards \[B, M\]"):
        qrpo_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(3, 4), 1.0)
    with pytest.raises(ValueError, match=r"expected 1-D tensors of one shape \[B\]"):
        dpo_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2), 1.0)
    with pytest.raises(ValueError, match=r"expected 1-D tensors of one shape \[B\]"):
        simpo_loss(torch.zeros(2), torch.zeros(2), torch.ones(1), torch.ones(2), 1.0, 0.0)
    with pytest.raises(ValueError, match=r"expected 1-D tensors of one shape \[B\]"):
        rebel_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(4), 1.0)


def test_qrpo_loss_refuses_non_finite_rewards_and_empty_reference_sets():
    with pytest.raises(ValueError, match="rewards has non-finite values"):
        qrpo_loss(t(-1.0), t(-1.0), t(float("nan")), t(0.0, 1.0).reshape(1, 2), 1.0)
    with pytest.raises(ValueError, match="ref_rewards has non-finite values"):
        qrpo_loss(t(-1.0), t(-1.0), t(0.5), t(0.0, float("inf")).reshape(1, 2), 1.0)
    with pytest.raises(ValueError, match=r"M = 0"):
        qrpo_loss(t(-1.0), t(-1.0), t(0.5), torch.zeros(1, 0, dtype=f64), 1.0)


def test_unknown_loss_type_transform_and_tie_policy_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown loss_type 'huber'; choose one of mse, mae"):
        qrpo_loss_from_quantiles(t(-1.0), t(-1.0), t(0.5), 1.0, loss_type="huber")
    with pytest.raises(ValueError, match=r"unknown transform 'cube'; choose one of .*identity.*log.*normal_icdf"):
        qrpo_loss_from_quantiles(t(-1.0), t(-1.0), t(0.5), 1.0, transform="cube")
    with pytest.raises(ValueError, match="unknown tie policy 'avg'"):
        qrpo_loss(t(-1.0), t(-1.0), t(0.5), t(0.0, 1.0).reshape(1, 2), 1.0, ties="avg")


def test_open_interval_transform_refuses_unclamped_quantiles_in_the_loss():
    with pytest.raises(ValueError, match=r"transform 'log' needs quantiles in \(0, 1\]"):
        qrpo_loss_from_quantiles(t(-1.0, -1.0), t(-1.0, -1.0), t(0.0, 0.5), 1.0, transform="log")


def test_simpo_refuses_completions_without_tokens():
    with pytest.raises(ValueError, match="at least one token"):
        simpo_loss(t(-1.0), t(-2.0), t(0.0), t(1.0), 1.0, 0.0)
