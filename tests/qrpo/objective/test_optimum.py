"""qrpo.objective.optimum: the optimum's expected quantile, expected transformed reward and KL(pi* || pi_ref)
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

from qrpo.verification import toy
from qrpo.errors import InputError
from qrpo.objective.optimum import (
    BETA_MAX,
    BETA_MIN,
    OptimumStats,
    beta_for_kl,
    beta_for_quantile,
    optimum_stats,
)
from qrpo.objective.transforms import QuadratureTransform, Transform, available_transforms, get_transform, register_transform

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


# --- the numerical pieces against independent computations --------------------------------------------------

from fractions import Fraction  # noqa: E402

from qrpo.objective import optimum as optimum_module  # noqa: E402


def _exact_cumulants(moments: list[Fraction]) -> list[Fraction]:
    """kappa_n from raw moments in exact rational arithmetic, through the log of the moment generating
    function's power series: log(1 + sum m_n x^n/n!) = sum kappa_n x^n/n! (series log, coefficient by coefficient)."""
    n_max = len(moments)
    a = [Fraction(0)] + [m / math.factorial(n) for n, m in enumerate(moments, start=1)]  # M(x) - 1
    # L = log(1 + A): L' (1 + A) = A'  =>  n l_n = n a_n - sum_{k=1}^{n-1} k l_k a_{n-k}
    log_coefficients = [Fraction(0)] * (n_max + 1)
    for n in range(1, n_max + 1):
        log_coefficients[n] = (n * a[n] - sum(k * log_coefficients[k] * a[n - k] for k in range(1, n))) / n
    return [log_coefficients[n] * math.factorial(n) for n in range(1, n_max + 1)]


def test_cumulants_of_distributions_with_known_cumulants():
    """N(mu, s^2): kappa = (mu, s^2, 0, 0, ...); Poisson(lam): every kappa_n = lam (moments: Touchard
    polynomials); Exp(1): m_n = n!, kappa_n = (n - 1)!."""
    cumulants = optimum_module._cumulants_from_moments
    mu, s2 = 0.5, 2.0  # normal raw moments: m_n = mu m_{n-1} + (n - 1) s^2 m_{n-2}
    normal = [1.0, mu]
    for n in range(2, 9):
        normal.append(mu * normal[-1] + (n - 1) * s2 * normal[-2])
    assert cumulants(normal[1:]) == pytest.approx([mu, s2, 0, 0, 0, 0, 0, 0], abs=1e-10)
    lam = 1.5  # Poisson raw moments: m_n = lam sum_k C(n-1, k) m_k
    poisson = [1.0]
    for n in range(1, 9):
        poisson.append(lam * sum(math.comb(n - 1, k) * poisson[k] for k in range(n)))
    assert cumulants(poisson[1:]) == pytest.approx([lam] * 8, rel=1e-12)
    assert cumulants([float(math.factorial(n)) for n in range(1, 11)]) == pytest.approx(
        [float(math.factorial(n - 1)) for n in range(1, 11)], rel=1e-12
    )


def test_cumulants_of_the_uniform_law_are_bernoulli_numbers_over_n():
    """U(0, 1): kappa_1 = 1/2, kappa_n = B_n / n for n >= 2 (B_2 = 1/6, B_4 = -1/30, odd ones 0)."""
    kappa = optimum_module._cumulants_from_moments([1.0 / (k + 1) for k in range(1, 13)])
    expected = [0.5] + [float(mpmath.bernoulli(n)) / n for n in range(2, 13)]
    assert kappa == pytest.approx(expected, rel=1e-9, abs=1e-13)


@pytest.mark.parametrize("cls, moment", [("Identity", lambda k: Fraction(1, k + 1)),
                                         ("Square", lambda k: Fraction(1, 2 * k + 1)),
                                         ("Sqrt", lambda k: Fraction(2, k + 2))])
def test_series_cumulants_of_the_built_ins_match_exact_rational_cumulants(cls, moment):
    """All 24 cumulants the series uses, against the same cumulants in exact arithmetic (another recursion)."""
    transform_type = getattr(__import__("qrpo.objective.transforms", fromlist=[cls]), cls)
    exact = _exact_cumulants([moment(k) for k in range(1, optimum_module._SERIES_TERMS + 1)])
    series = optimum_module._CUMULANTS[transform_type]
    assert len(series) == len(exact) == 24
    scale = max(abs(float(k)) for k in exact)
    for n, (value, reference) in enumerate(zip(series, exact), start=1):
        assert value == pytest.approx(float(reference), rel=1e-8, abs=1e-12 * scale), n


def test_series_mean_and_kl_of_a_gaussian_and_of_an_exponential():
    """cumulants (mu, s^2): E[f] = mu + s^2 x, KL = s^2 x^2 / 2 (tilted normal).  Exp(1), kappa_n = (n-1)!:
    log Z = -log(1 - x), E[f] = 1/(1 - x), KL = x/(1 - x) + log(1 - x)."""
    mean, kl = optimum_module._series_mean_and_kl([0.3, 2.0, 0.0, 0.0], 0.4)
    assert (mean, kl) == pytest.approx((0.3 + 0.8, 2.0 * 0.16 / 2), rel=1e-15)
    x = 0.25
    mean, kl = optimum_module._series_mean_and_kl([float(math.factorial(n - 1)) for n in range(1, 60)], x)
    assert mean == pytest.approx(1 / (1 - x), rel=1e-12)
    assert kl == pytest.approx(x / (1 - x) + math.log(1 - x), rel=1e-12)


def test_bregman_is_w_log_w_minus_w_plus_1_to_full_precision_on_both_sides_of_the_switch():
    a = np.array([-30.0, -3.0, -0.5, -0.1000001, -0.0999999, -0.05, -1e-3, -1e-9, 0.0, 1e-9, 1e-3, 0.05,
                  0.0999999, 0.1000001, 0.5, 0.95, 1.05, 2.0, 10.0, -0.95, -1.05])
    values = optimum_module._bregman(a)
    for log_w, value in zip(a.tolist(), values.tolist()):
        with mpmath.workdps(60):  # w log w - w + 1 ~ a^2/2 cancels ~2 log10(1/|a|) digits
            w = mpmath.exp(mpmath.mpf(log_w))
            expected = float(w * mpmath.mpf(log_w) - w + 1)
        assert value == pytest.approx(expected, rel=1e-13, abs=1e-300), log_w
    assert values[8] == 0.0


@pytest.mark.parametrize("x", [1e-3, 0.3, 1.0, 1.9999, 2.0, 2.5, 7.0, 40.0, 1e3])
def test_k_integrals_against_mpmath(x):
    """K_n(x) = integral_0^1 (1 - v)^n e^{-x v} dv, n = 0..5, on both sides of the x = 2 switch."""
    ks = optimum_module._k_integrals(x, 5)
    assert len(ks) == 6
    for n, value in enumerate(ks):
        expected = mpmath.quad(lambda v: (1 - v) ** n * mpmath.exp(-x * v), [0, min(1, 1 / x), 1])
        assert value == pytest.approx(float(expected), rel=1e-12), n


# --- the graded mesh (user transforms) ------------------------------------------------------------------------

PEAK = 1 / math.pi  # off every grid point and every dyadic mesh point


@pytest.mark.parametrize("beta", [1e-10, 1e-8, BETA_MIN, 1e-4])
def test_mesh_resolves_a_narrow_gaussian_optimum_at_an_interior_peak(beta):
    """f = -(t - c)^2: p* is N(c, beta/2) truncated ~0.3/sqrt(beta) standard deviations away (exactly Gaussian
    in float64), so E[q] = c, E[f] = -beta/2, log Z = log(pi beta)/2, KL = -1/2 - log(pi beta)/2."""
    transform = QuadratureTransform("bump_at_1_over_pi", lambda q: -((q - PEAK) ** 2))
    stats = optimum_stats(transform, beta)
    assert stats.expected_quantile == pytest.approx(PEAK, rel=1e-12)
    assert stats.expected_reward == pytest.approx(-beta / 2, rel=1e-9)
    assert stats.log_partition == pytest.approx(0.5 * math.log(math.pi * beta), rel=1e-10)
    assert stats.kl == pytest.approx(-0.5 - 0.5 * math.log(math.pi * beta), rel=1e-10)


@pytest.mark.parametrize("beta", [1e-8, BETA_MIN, 1e-3])
def test_mesh_resolves_a_laplace_optimum_at_a_kink(beta):
    """f = -|t - c|: p* is Laplace(c, beta): Z = 2 beta, E[q] = c, E[f] = -beta, KL = -1 - log(2 beta).
    The kink must be found to far below beta for Gauss-Legendre to stay accurate."""
    transform = QuadratureTransform("kink_at_1_over_pi", lambda q: -(q - PEAK).abs())
    stats = optimum_stats(transform, beta)
    assert stats.expected_quantile == pytest.approx(PEAK, rel=1e-10)
    assert stats.expected_reward == pytest.approx(-beta, rel=1e-8)
    assert stats.log_partition == pytest.approx(math.log(2 * beta), rel=1e-10)
    assert stats.kl == pytest.approx(-1 - math.log(2 * beta), rel=1e-9)


@pytest.mark.parametrize("beta", [1e-9, BETA_MIN, 1e-3])
def test_mesh_resolves_an_exponential_optimum_at_either_endpoint(beta):
    """f = t (or 1 - t): p* = x e^{x t}/(e^x - 1) in a layer of width beta at 1 (or 0). For x >> 1:
    E[q] = 1 - beta (beta), E[f] = 1 - beta, log Z = 1/beta + log beta, KL = -1 - log beta."""
    for f, at_one in [(lambda q: q, True), (lambda q: 1 - q, False)]:
        stats = optimum_stats(QuadratureTransform("linear", f), beta)
        assert stats.expected_quantile == pytest.approx(1 - beta if at_one else beta, rel=1e-10)
        assert stats.expected_reward == pytest.approx(1 - beta, rel=1e-12)
        assert stats.log_partition == pytest.approx(1 / beta + math.log(beta), rel=1e-12)
        assert stats.kl == pytest.approx(-1 - math.log(beta), rel=1e-9)


def test_mesh_resolves_log_singularities_at_both_ends():
    """f(t) = log t + log(1 - t) (infinite at both ends), beta = 1: p* = 6 t (1 - t) (Beta(2, 2)):
    E[q] = 1/2, E[f] = 2 (psi(2) - psi(4)) = -5/3, log Z = log(1/6), KL = E[f] - log Z."""
    transform = QuadratureTransform("log_both", lambda q: torch.log(q) + torch.log1p(-q), open_interval=True)
    stats = optimum_stats(transform, 1.0)
    assert stats.expected_quantile == pytest.approx(0.5, rel=1e-12)
    assert stats.expected_reward == pytest.approx(-5 / 3, rel=1e-10)
    assert stats.log_partition == pytest.approx(-math.log(6), rel=1e-10)
    assert stats.kl == pytest.approx(-5 / 3 + math.log(6), rel=1e-9)


def test_mesh_refuses_a_transform_that_is_nan_inside_the_interval():
    transform = QuadratureTransform("half_nan", lambda q: torch.where(q > 0.5, torch.nan, q))
    with pytest.raises(InputError, match=r"^transform 'half_nan' returns NaN inside \(0, 1\) \(at q = 0\.50001\)$"):
        optimum_stats(transform, 1.0)


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_mesh_refuses_nan_or_plus_inf_at_a_node_the_coarse_grid_misses(bad):
    """+inf or NaN only below 1e-13: the 1e-12 .. 1 - 1e-12 grid of an open-interval transform misses it, the
    mesh (graded down to 2^-50) does not. Inside the error: the offending q."""
    transform = QuadratureTransform("spike", lambda q: torch.where(q < 1e-13, bad, torch.log(q)), open_interval=True)
    with pytest.raises(InputError, match=r"^transform 'spike' is NaN or \+inf at q = ([0-9.e-]+), inside \(0, 1\)$") as info:
        optimum_stats(transform, 1.0)
    q = float(info.value.args[0].split("q = ")[1].split(",")[0])
    nodes, _ = np.polynomial.legendre.leggauss(20)  # the error names the smallest offending q: the first
    assert q == pytest.approx((1 + nodes.min()) * 2.0**-51, rel=1e-12, abs=0.0)  # node of the piece [0, 2^-50]


def test_a_transform_that_is_minus_inf_at_mesh_nodes_is_accepted():
    """f = -inf on a set of positive measure just zeroes p* there: f = t for t >= 1/2, -inf below:
    p* = x e^{x t}/(e^x - e^{x/2}) on [1/2, 1]; at beta = 1: E[q] = (e - e^{1/2}/2)/(e - e^{1/2}) - 1."""
    transform = QuadratureTransform("half_minus_inf", lambda q: torch.where(q < 0.5, -torch.inf, q))
    stats = optimum_stats(transform, 1.0)
    e, h = math.e, math.exp(0.5)
    assert stats.log_partition == pytest.approx(math.log(e - h), rel=1e-7)  # the kink at 1/2 is on no mesh edge
    assert stats.expected_quantile == pytest.approx((e - h / 2) / (e - h) - 1, rel=1e-6)


class _UnhashableSqrt(Transform):
    """A user transform class with __eq__ and no __hash__: the mesh is not cached, yet still computed."""

    name = "unhashable_sqrt"
    __hash__ = None

    def __eq__(self, other):
        return isinstance(other, _UnhashableSqrt)

    def f(self, q):
        return torch.sqrt(q)

    def log_partition(self, beta):
        x = 1.0 / beta  # Z = 2 integral u e^{xu} du = 2 (e^x (x - 1) + 1)/x^2
        return math.log(2 * (math.exp(x) * (x - 1) + 1) / x**2)


def test_an_unhashable_transform_is_integrated_without_a_cache():
    transform = _UnhashableSqrt()
    for _ in range(2):
        stats = optimum_stats(transform, 0.5)
        _assert_stats_close(stats, vars(optimum_stats("sqrt", 0.5)), rel=1e-10)


def test_mesh_is_cached_per_transform_object():
    transform = QuadratureTransform("cached_square", lambda q: q * q)
    calls = []
    original = transform._f
    transform._f = lambda q: (calls.append(1), original(q))[1]
    first = optimum_stats(transform, 0.3)
    count = len(calls)
    assert optimum_stats(transform, 0.3) == first and optimum_stats(transform, 3.0).kl > 0
    assert len(calls) == count  # f is evaluated once per transform, not once per beta


def test_mesh_finds_a_narrow_interior_bump_between_coarse_grid_points():
    """f = e^{-((t - c)/1e-4)^2} + t/2: the global max (~1.16) sits in a bump 1e-4 wide at c, which a coarse
    grid would step over (the argmax then sits at t = 1, value 1/2); for beta = 1e-3 p* lives in the bump."""
    c, width, beta = 0.3141592653589793, 1e-4, 1e-3
    transform = QuadratureTransform("narrow_bump", lambda q: torch.exp(-(((q - c) / width) ** 2)) + q / 2)
    f = lambda t: mpmath.exp(-(((t - c) / width) ** 2)) + t / 2  # noqa: E731
    f_max = f(c + width**2 / 4)  # ~ the max (any shift near it serves: it cancels)
    weight = lambda t: mpmath.exp((f(t) - f_max) / beta)  # noqa: E731
    points = [0, *(c + k * width for k in (-5, -1, -0.1, 0, 0.1, 1, 5)), 1]
    z = mpmath.quad(weight, points)
    mean_q = mpmath.quad(lambda t: t * weight(t), points) / z
    stats = optimum_stats(transform, beta)
    assert stats.expected_quantile == pytest.approx(float(mean_q), rel=1e-9)
    assert stats.log_partition == pytest.approx(float(f_max / beta + mpmath.log(z)), rel=1e-9)


@pytest.mark.parametrize("beta", [0.05, 10.0, 1e3])
def test_mesh_with_an_interior_peak_still_covers_the_whole_interval(beta):
    """f = -(t - 0.7)^2 at moderate and large beta: p* spreads over all of [0, 1], including the stretches
    far from the peak (E[q] -> 1/2 + ..., everything against mpmath)."""
    transform = QuadratureTransform("bump_07", lambda q: -((q - 0.7) ** 2))
    f = lambda t: -((t - mpmath.mpf("0.7")) ** 2)  # noqa: E731
    weight = lambda t: mpmath.exp(f(t) / beta)  # noqa: E731
    points = [0, 0.5, 0.7, 0.9, 1]
    z = mpmath.quad(weight, points)
    mean_f = mpmath.quad(lambda t: f(t) * weight(t), points) / z
    reference = {"expected_quantile": mpmath.quad(lambda t: t * weight(t), points) / z, "expected_reward": mean_f,
                 "kl": mean_f / beta - mpmath.log(z), "log_partition": mpmath.log(z)}
    _assert_stats_close(optimum_stats(transform, beta), reference, rel=1e-7, log_z_abs=1e-13)


def test_quadrature_refusal_message_names_beta_and_the_remedy():
    clone = QuadratureTransform("normal_icdf_clone", torch.special.ndtri, open_interval=True)
    with pytest.raises(InputError) as info:
        optimum_stats(clone, 0.1)
    assert str(info.value) == (
        "at beta=0.1 the optimum of transform 'normal_icdf_clone' puts its mass within 1e-15 of q = 1, "
        "beyond what quadrature in q resolves; use a larger beta (or a transform with a closed form)"
    )


@pytest.mark.parametrize("budget, message", [
    ("much", "kl_budget must be a number; got 'much'"),
    (None, "kl_budget must be a number; got None"),
    (float("nan"), "kl_budget must be a number; got nan"),
    (0.0, "kl_budget must be > 0 nats (KL(pi* || pi_ref) of any beta is positive); got 0.0"),
    (-1, "kl_budget must be > 0 nats (KL(pi* || pi_ref) of any beta is positive); got -1"),
])
def test_beta_for_kl_error_messages(budget, message):
    with pytest.raises(InputError) as info:
        beta_for_kl("identity", budget)
    assert str(info.value) == message


@pytest.mark.parametrize("target", [0.5, 1.0, 1.2, 0.3])
def test_beta_for_quantile_error_message_for_targets_outside_one_half_to_one(target):
    with pytest.raises(InputError) as info:
        beta_for_quantile("identity", target)
    assert str(info.value) == (
        "target_quantile must lie in (1/2, 1): 1/2 is pi_ref's own expected quantile (beta -> inf) and "
        f"1 is reached only as beta -> 0; got {target!r}"
    )
    with pytest.raises(InputError, match=r"^target_quantile must be a number; got 'high'$"):
        beta_for_quantile("identity", "high")


@pytest.mark.parametrize("name", ["identity", "log", "normal_icdf"])
def test_the_solvers_reachable_ranges_are_open_at_both_ends(name):
    """The KL and E[q] of beta = BETA_MAX and BETA_MIN themselves are out of reach (the range is open), and
    the message says what is reachable; just inside, the solver answers."""
    for at in (BETA_MAX, BETA_MIN):
        stats = optimum_stats(name, at)
        with pytest.raises(InputError, match=r"nats is out of reach .* choose a budget inside that range$"):
            beta_for_kl(name, stats.kl)
        if 0.5 < stats.expected_quantile < 1.0:
            with pytest.raises(InputError, match=r"is out of reach .* choose a target inside that range$"):
                beta_for_quantile(name, stats.expected_quantile)
    assert beta_for_kl(name, optimum_stats(name, BETA_MAX / 2).kl) == pytest.approx(BETA_MAX / 2, rel=1e-8)


def test_the_out_of_reach_messages_in_full():
    low, high = optimum_stats("identity", BETA_MAX).kl, optimum_stats("identity", BETA_MIN).kl
    with pytest.raises(InputError) as info:
        beta_for_kl("identity", 50.0)
    assert str(info.value) == (
        f"kl_budget=50 nats is out of reach for transform 'identity': for beta in [1e-06, 1e+06] its optimum's "
        f"KL(pi* || pi_ref) ranges over ({low:.3g}, {high:.4g}) nats; choose a budget inside that range"
    )
    low, high = optimum_stats("identity", BETA_MAX).expected_quantile, optimum_stats("identity", BETA_MIN).expected_quantile
    with pytest.raises(InputError) as info:
        beta_for_quantile("identity", 1 - 1e-9)
    assert str(info.value) == (
        f"target_quantile=1 is out of reach for transform 'identity': for beta in [1e-06, 1e+06] its optimum's "
        f"E[q] ranges over ({low:.8g}, {high:.8g}); choose a target inside that range"
    )


@pytest.mark.parametrize("name", ["identity", "sqrt", "normal_icdf"])
def test_beta_for_kl_inverts_kl_to_1e_minus_11_across_twelve_decades(name):
    for beta in np.logspace(-5.5, 5.5, 23):
        assert beta_for_kl(name, optimum_stats(name, float(beta)).kl) == pytest.approx(float(beta), rel=1e-11)


@pytest.mark.parametrize("beta", ["abc", None, [0.1], -0.5, float("nan")])
def test_a_beta_that_is_not_a_positive_number_is_an_input_error(beta):
    with pytest.raises(InputError) as info:
        optimum_stats("identity", beta)
    assert str(info.value) == f"beta must be a positive finite number; got {beta!r}"


def test_quadrature_answers_while_under_1e_minus_7_of_the_mass_is_in_the_last_resolved_piece():
    """normal_icdf without its closed form: the last piece before the float cut-off at q = 1 is
    [1 - 2^-49, 1 - 2^-50]; the optimum is refused once it holds more than 1e-7 of p*'s mass (beta ~0.35),
    and answered (to ~that mass, relative) just above."""
    clone = QuadratureTransform("normal_icdf_clone", torch.special.ndtri, open_interval=True)
    with pytest.raises(InputError, match="within 1e-15 of q = 1"):
        optimum_stats(clone, 0.34)  # last piece: 1.5e-7 of the mass
    stats = optimum_stats(clone, 0.355)  # 8e-8 (and 1.2e-7 in the piece before it)
    _assert_stats_close(stats, vars(optimum_stats("normal_icdf", 0.355)), rel=2e-5)
