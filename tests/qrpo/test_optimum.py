"""qrpo.optimum: the optimum's expected quantile, expected transformed reward and KL(pi* || pi_ref)
against 30-digit quadrature for every built-in transform, the quadrature path for user transforms,
monotonicity in beta, the beta solvers, their errors, and the enumerable toy's exact pi*.

Reference values never come from the code under test. Under pi*, q has the density
p*(t) = e^{f(t)/beta} / Z on [0, 1]; mpmath integrates Z, integral t e^{f/beta} and integral f e^{f/beta}
with the exponent shifted by max f / beta (so nothing overflows) and the interval split in the layer
of width ~beta next to t = 1 where all the mass sits for small beta; KL = E[f]/beta - log Z is then
formed at 30 digits, where the cancellation for large beta costs ~10 of them.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from scipy import special

from qrpo import toy
from qrpo.errors import InputError
from qrpo.optimum import (
    BETA_MAX,
    BETA_MIN,
    OptimumStats,
    beta_for_kl,
    beta_for_quantile,
    optimum_stats,
)
from qrpo.transforms import QuadratureTransform, available_transforms, get_transform, register_transform

mpmath.mp.dps = 30

# 1e-3 .. 10, three per decade, and the ends of the advertised range
BETAS = [1e-4] + [float(b) for b in np.logspace(-3, 1, 13)] + [1e4]
BUILT_IN = ["identity", "log", "square", "sqrt", "normal_icdf"]


def _split_points(beta: float) -> list:
    """[0, 1] split at 1 - beta*k: resolves a peak of width ~beta at t = 1."""
    inner = sorted(1 - beta * k for k in (0.1, 1.0, 10.0, 100.0, 1000.0) if beta * k < 1.0)
    return [mpmath.mpf(0)] + [mpmath.mpf(p) for p in inner] + [mpmath.mpf(1)]


def reference_interval(f, beta: float, f_max) -> dict[str, float]:
    """E[q], E[f], KL by mpmath for an f peaking at t = 1 with value f_max (exponent shifted by it)."""
    b = mpmath.mpf(beta)
    points = _split_points(beta)
    weight = lambda t: mpmath.exp((f(t) - f_max) / b)  # noqa: E731
    z = mpmath.quad(weight, points)
    mean_q = mpmath.quad(lambda t: t * weight(t), points) / z
    mean_f = mpmath.quad(lambda t: f(t) * weight(t), points) / z
    log_z = f_max / b + mpmath.log(z)
    return {"expected_quantile": mean_q, "expected_reward": mean_f, "kl": mean_f / b - log_z, "log_partition": log_z}


def reference_normal(mu: float, sigma: float, beta: float) -> dict[str, float]:
    """The same for f = mu + sigma Phi^{-1}(t), substituting t = Phi(z) (z ~ N(0, 1) under pi_ref) and
    splitting at the tilted peak z* = sigma / beta."""
    b, m, s = mpmath.mpf(beta), mpmath.mpf(mu), mpmath.mpf(sigma)
    peak = s / b
    points = [-mpmath.inf, peak - 20, peak - 5, peak, peak + 5, peak + 20, mpmath.inf]
    # e^{(mu + sigma z)/beta} phi(z) = e^{mu/beta + peak^2/2} * phi(z - peak): shift out the constant
    weight = lambda z: mpmath.exp(-((z - peak) ** 2) / 2) / mpmath.sqrt(2 * mpmath.pi)  # noqa: E731
    z_total = mpmath.quad(weight, points)  # = 1 up to quadrature error
    mean_q = mpmath.quad(lambda z: mpmath.ncdf(z) * weight(z), points) / z_total
    mean_f = mpmath.quad(lambda z: (m + s * z) * weight(z), points) / z_total
    log_z = m / b + peak**2 / 2 + mpmath.log(z_total)
    return {"expected_quantile": mean_q, "expected_reward": mean_f, "kl": mean_f / b - log_z, "log_partition": log_z}


REFERENCES = {
    "identity": lambda beta: reference_interval(lambda t: t, beta, 1),
    "log": lambda beta: reference_interval(mpmath.log, beta, 0),
    "square": lambda beta: reference_interval(lambda t: t * t, beta, 1),
    "sqrt": lambda beta: reference_interval(mpmath.sqrt, beta, 1),
    "normal_icdf": lambda beta: reference_normal(0.0, 1.0, beta),
}


def _assert_stats_close(stats: OptimumStats, reference: dict, rel: float, log_z_abs: float = 0.0) -> None:
    """Every field to `rel`; log Z (which tends to 0 for large beta) also to `log_z_abs`."""
    for field, expected in reference.items():
        value, expected = getattr(stats, field), float(expected)
        slack = log_z_abs if field == "log_partition" else 0.0
        assert math.isfinite(value), (field, value)
        assert abs(value - expected) <= rel * abs(expected) + slack, (field, value, expected)


# --- closed forms against quadrature ----------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILT_IN)
def test_closed_forms_match_30_digit_quadrature_from_beta_1e_minus_6_to_1e6(name):
    """To 1e-10 over the solvers' whole range (the worst case, KL of square at beta = 1e-6, is ~6e-12);
    log Z is the transform's own, whose cancellation near log Z = 0 for beta >~ 1e5 costs ~1e-15 absolute.
    (normal_icdf's closed forms are exact Gaussian identities; its slower reference takes every other beta.)"""
    betas = BETAS[::2] if name == "normal_icdf" else [BETA_MIN, 1e-5, *BETAS, 1e5, BETA_MAX]
    for beta in betas:
        _assert_stats_close(optimum_stats(name, beta), REFERENCES[name](beta), rel=1e-10, log_z_abs=1e-14)


@pytest.mark.parametrize("mu, sigma", [(0.5, 0.2), (-1.0, 3.0)])
def test_scaled_normal_icdf_closed_forms_match_quadrature(mu, sigma):
    transform = get_transform("scaled_normal_icdf", mu=mu, sigma=sigma)
    for beta in [1e-3, 0.05, 0.14, 1.0, 10.0]:
        _assert_stats_close(optimum_stats(transform, beta), reference_normal(mu, sigma, beta), rel=1e-9)


def test_identity_at_beta_0_1_reaches_quantile_0_90_for_1_30_nats():
    """E[q] = 1/(1 - e^{-10}) - 0.1 = 0.9000454; KL = 10 E[q] - log(10 (e^10 - 1)) ... = 1.303085."""
    stats = optimum_stats("identity", 0.1)
    assert stats.expected_quantile == pytest.approx(1 / (1 - math.exp(-10)) - 0.1, rel=1e-14)
    assert round(stats.expected_quantile, 2) == 0.90 and round(stats.kl, 2) == 1.30
    assert stats.kl == pytest.approx(10 * stats.expected_quantile - math.log(0.1 * math.expm1(10)), rel=1e-13)


def test_hand_worked_values_for_log_and_normal_icdf():
    """log, beta = 1: p*(t) = 2t, E[q] = 2/3, E[log q] = -1/2, KL = log 2 - 1/2.
    normal_icdf, beta = 1: z ~ N(1, 1), E[q] = Phi(1/sqrt 2), E[f] = 1, KL = 1/2."""
    log = optimum_stats("log", 1.0)
    assert (log.expected_quantile, log.expected_reward) == pytest.approx((2 / 3, -0.5), rel=1e-15)
    assert log.kl == pytest.approx(math.log(2) - 0.5, rel=1e-14)
    normal = optimum_stats("normal_icdf", 1.0)
    assert normal.expected_quantile == pytest.approx(0.5 * (1 + math.erf(0.5)), rel=1e-14)
    assert (normal.expected_reward, normal.kl, normal.log_partition) == pytest.approx((1.0, 0.5, 0.5), rel=1e-15)


def test_log_partition_is_the_transforms_own():
    for name in available_transforms():
        for beta in [1e-3, 0.3, 30.0]:
            assert optimum_stats(name, beta).log_partition == pytest.approx(
                get_transform(name).log_partition(beta), rel=1e-12
            )


@pytest.mark.parametrize("name", BUILT_IN + ["scaled_normal_icdf"])
def test_kl_and_expected_quantile_decrease_strictly_in_beta_over_the_whole_solver_range(name):
    """KL is the solvers' monotone objective: dKL/dx = x Var[f] > 0, dE[q]/dx = Cov(q, f) > 0 (x = 1/beta).
    Strict decrease until E[q] rounds to 1 (normal_icdf for small beta)."""
    betas = np.logspace(math.log10(BETA_MIN), math.log10(BETA_MAX), 241)
    stats = [optimum_stats(name, float(b)) for b in betas]
    kls = np.array([s.kl for s in stats])
    quantiles = np.array([s.expected_quantile for s in stats])
    assert np.isfinite(kls).all() and (kls > 0).all() and (np.diff(kls) < 0).all()
    below_one = quantiles < 1.0
    assert (np.diff(quantiles) <= 0).all() and (np.diff(quantiles[below_one]) < 0).all()
    assert (0.5 < quantiles).all() and (quantiles <= 1.0).all()
    assert quantiles[-1] - 0.5 < 1e-5 and kls[-1] < 1e-10  # beta = 1e6: pi* = pi_ref to first order


# --- the quadrature path (user transforms) -----------------------------------------------------------------

CLONES = {
    "identity": (lambda q: q, False),
    "log": (torch.log, True),
    "square": (lambda q: q * q, False),
    "sqrt": (torch.sqrt, False),
    "normal_icdf": (torch.special.ndtri, True),
}


@pytest.mark.parametrize("name", sorted(CLONES))
def test_quadrature_of_a_user_transform_agrees_with_the_closed_form(name):
    """The same f without its closed form goes through the graded Gauss-Legendre mesh. normal_icdf's pi*
    sits within 1e-15 of q = 1 below beta ~ 0.3, which quadrature in q cannot resolve: checked above it."""
    f, open_interval = CLONES[name]
    clone = QuadratureTransform(f"{name}_clone", f, open_interval)
    betas = [b for b in [BETA_MIN, *BETAS, BETA_MAX] if name != "normal_icdf" or b >= 0.5]
    for beta in betas:
        _assert_stats_close(optimum_stats(clone, beta), vars(optimum_stats(name, beta)), rel=1e-8, log_z_abs=1e-14)


def test_quadrature_refuses_an_optimum_beyond_float_resolution():
    clone = QuadratureTransform("normal_icdf_clone", torch.special.ndtri, open_interval=True)
    with pytest.raises(InputError, match="within 1e-15 of q = 1"):
        optimum_stats(clone, 0.1)


def test_a_registered_transform_with_an_interior_peak_against_mpmath():
    """f(t) = -(t - 0.7)^2 peaks inside: for small beta, p* is ~N(0.7, beta/2), so E[q] -> 0.7."""
    name = "test_optimum_bump"
    if name not in available_transforms():
        register_transform(name, lambda q: -((q - 0.7) ** 2))
    f = lambda t: -((t - mpmath.mpf("0.7")) ** 2)  # noqa: E731
    for beta in [1e-4, 1e-2, 0.3, 10.0]:
        b = mpmath.mpf(beta)
        width = math.sqrt(beta)
        points = sorted({0.0, 1.0, *(p for k in (-30, -5, -1, 0, 1, 5, 30) if 0 < (p := 0.7 + k * width) < 1)})
        weight = lambda t: mpmath.exp(f(t) / b)  # noqa: E731
        z = mpmath.quad(weight, points)
        mean_f = mpmath.quad(lambda t: f(t) * weight(t), points) / z
        reference = {
            "expected_quantile": mpmath.quad(lambda t: t * weight(t), points) / z,
            "expected_reward": mean_f,
            "kl": mean_f / b - mpmath.log(z),
            "log_partition": mpmath.log(z),
        }
        _assert_stats_close(optimum_stats(name, beta), reference, rel=1e-8, log_z_abs=1e-13)
    assert optimum_stats(name, 1e-4).expected_quantile == pytest.approx(0.7, abs=1e-6)


# --- the solvers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILT_IN + ["scaled_normal_icdf"])
def test_beta_for_kl_inverts_the_optimums_kl(name):
    for beta in [1e-5, 1e-3, 0.02, 0.1, 0.7, 3.0, 50.0, 1e4, 5e5]:
        assert beta_for_kl(name, optimum_stats(name, beta).kl) == pytest.approx(beta, rel=1e-8)


@pytest.mark.parametrize("name", BUILT_IN)
def test_beta_for_quantile_inverts_the_optimums_expected_quantile(name):
    for beta in [1e-3, 0.02, 0.1, 0.7, 3.0, 50.0, 1e3]:
        target = optimum_stats(name, beta).expected_quantile
        if target > 1 - 1e-9:  # normal_icdf: E[q] = Phi(1/(beta sqrt 2)) is 1 to ~16 digits below beta ~ 0.1
            continue
        assert beta_for_quantile(name, target) == pytest.approx(beta, rel=1e-7)


def test_solvers_hit_hand_worked_betas():
    """log: E[q] = (1 + beta)/(1 + 2 beta) = 0.9 at beta = 1/8; normal_icdf: KL = 1/(2 beta^2) = 0.5 at
    beta = 1 and E[q] = Phi(1/(beta sqrt 2)) = Phi(1/sqrt 2) at beta = 1; identity: 1.3030845 nats at 0.1."""
    assert beta_for_quantile("log", 0.9) == pytest.approx(0.125, rel=1e-10)
    assert beta_for_kl("normal_icdf", 0.5) == pytest.approx(1.0, rel=1e-10)
    assert beta_for_quantile("normal_icdf", 0.5 * (1 + math.erf(0.5))) == pytest.approx(1.0, rel=1e-9)
    assert beta_for_kl("identity", optimum_stats("identity", 0.1).kl) == pytest.approx(0.1, rel=1e-10)
    transform = QuadratureTransform("sqrt_clone", torch.sqrt)  # the solvers also work on the quadrature path
    assert beta_for_kl(transform, optimum_stats("sqrt", 0.2).kl) == pytest.approx(0.2, rel=1e-7)
    assert beta_for_quantile(transform, optimum_stats("sqrt", 0.2).expected_quantile) == pytest.approx(0.2, rel=1e-7)


@pytest.mark.parametrize("budget", [0.0, -1.0, float("nan"), "much", None])
def test_beta_for_kl_refuses_a_non_positive_budget(budget):
    with pytest.raises(InputError, match="kl_budget"):
        beta_for_kl("identity", budget)


def test_beta_for_kl_says_which_budgets_are_reachable():
    """identity: KL ~ log(1/beta) - 1 for small beta, so 1e-6 caps it near 12.8 nats."""
    with pytest.raises(InputError, match=r"kl_budget=50 nats is out of reach .*'identity'.*ranges over \(.*12\.8"):
        beta_for_kl("identity", 50.0)


@pytest.mark.parametrize("target", [0.5, 0.3, 1.0, 1.2, float("nan")])
def test_beta_for_quantile_refuses_targets_outside_one_half_to_one(target):
    with pytest.raises(InputError, match="target_quantile"):
        beta_for_quantile("identity", target)


def test_beta_for_quantile_says_which_targets_are_reachable():
    """identity: E[q] = 1 - beta + ... so beta >= 1e-6 reaches at most 1 - 1e-6."""
    with pytest.raises(InputError, match=r"out of reach .*'identity'.*0\.999999\)"):
        beta_for_quantile("identity", 1 - 1e-9)


def test_beta_for_quantile_refuses_a_transform_that_decreases():
    transform = QuadratureTransform("bump", lambda q: -((q - 0.7) ** 2))
    with pytest.raises(InputError, match="non-decreasing"):
        beta_for_quantile(transform, 0.6)
    assert beta_for_kl(transform, 0.5) > 0  # the KL is monotone for any f


def test_input_errors_are_value_errors_and_bad_beta_is_refused():
    with pytest.raises(ValueError, match="beta must be a positive finite number"):
        optimum_stats("identity", 0.0)
    with pytest.raises(InputError):
        optimum_stats("identity", float("inf"))
    with pytest.raises(ValueError, match="unknown transform"):
        optimum_stats("nope", 0.1)


# --- the enumerable toy: the exact pi* of a discrete pi_ref --------------------------------------------------


@pytest.fixture(scope="module")
def toy_problem():
    """2 prompts x 16^3 = 4096 completions of small mass (max pi_ref(y) ~ 1.2e-3)."""
    return toy.make_problem(prompts=2, vocab=16, length=3, ref_scale=0.3, generator=torch.Generator().manual_seed(0))


TOY_CASES = [  # (transform, beta, slope s: see below)
    ("identity", 0.1, 1.0),
    ("identity", 0.03, 1.0),
    ("square", 0.1, 2.0),
    ("log", 0.5, 2.0),
    ("sqrt", 0.1, 2.0),
]


@pytest.mark.parametrize("name, beta, slope", TOY_CASES)
def test_toy_optimum_has_the_closed_form_kl_and_expected_quantile(toy_problem, name, beta, slope):
    """With the toy's midpoint quantiles q(y) = F(r-) + p_ref(y)/2, every expectation under the exact
    pi* = pi_ref e^{f(q)/beta} / Z(x) (enumerated) is a midpoint rule, on cells of width p_ref(y) <= h_max,
    for the corresponding integral over p*(t). The rule's error on a cell of width h is h^3 |g''| / 24 for
    g = e^{f/beta} (times t or f), so the relative error is ~ (h_max^2 / 24) E_{p*}|g''/g|, with
    g''/g = (f'/beta)^2 + f''/beta. `slope` s is such that (s/beta)^2 bounds that mean: identity s = 1;
    square (f' = 2t) s = 2; log at beta = 1/2 has g = t^2, mean 6 <= (2/beta)^2; sqrt at beta = 0.1 has
    g''/g ~ 22 where p* has its mass, <= (2/beta)^2. We allow 4x the bound: (s h_max / beta)^2 / 6.
    Measured errors are 10-100x smaller still (identity, beta = 0.1: KL 5e-7 against a tolerance of 2.4e-5)."""
    transform = get_transform(name)
    quantiles = toy.midpoint_quantiles(toy_problem.ref_logps, toy_problem.rewards)  # [P, N]
    optimum_logps, _ = toy.tilted(toy_problem.ref_logps, transform(quantiles) / beta)  # [P, N]
    kl = toy.kl(optimum_logps, toy_problem.ref_logps)  # [P] KL(pi* || pi_ref) per prompt
    expected_quantile = (optimum_logps.exp() * quantiles).sum(-1)  # [P]
    h_max = toy_problem.ref_logps.exp().max().item()
    tolerance = (h_max * slope / beta) ** 2 / 6
    stats = optimum_stats(name, beta)
    assert tolerance < 1e-3  # the comparison is tight enough to catch a wrong closed form
    for value in kl.tolist():
        assert value == pytest.approx(stats.kl, rel=tolerance)
    for value in expected_quantile.tolist():
        assert value == pytest.approx(stats.expected_quantile, rel=tolerance)


def test_exact_optimum_of_the_enumerable_toy_for_normal_icdf_within_its_tail_cells(toy_problem):
    """normal_icdf, beta = 1: Phi^{-1} is unbounded at 1, so the midpoint rule's error bound is O(1) on
    the top cells, where width h_max spans the Gaussian tail: there z = Phi^{-1}(t) > z_h = Phi^{-1}(1 - h_max)
    (~3.0 here). Under pi*, z ~ N(1/beta, 1), so those cells carry p*-mass Phi(1/beta - z_h) (~0.021 here);
    that mass is the stated relative tolerance. Measured: KL 4.4e-3, E[q] 2.3e-4 relative."""
    beta = 1.0
    transform = get_transform("normal_icdf")
    quantiles = toy.midpoint_quantiles(toy_problem.ref_logps, toy_problem.rewards)  # [P, N]
    optimum_logps, _ = toy.tilted(toy_problem.ref_logps, transform(quantiles) / beta)  # [P, N]
    kl = toy.kl(optimum_logps, toy_problem.ref_logps)  # [P]
    expected_quantile = (optimum_logps.exp() * quantiles).sum(-1)  # [P]
    h_max = toy_problem.ref_logps.exp().max().item()
    tolerance = float(special.ndtr(1 / beta - special.ndtri(1 - h_max)))
    stats = optimum_stats("normal_icdf", beta)
    assert tolerance < 0.05
    for value in kl.tolist():
        assert value == pytest.approx(stats.kl, rel=tolerance)
    for value in expected_quantile.tolist():
        assert value == pytest.approx(stats.expected_quantile, rel=tolerance)
