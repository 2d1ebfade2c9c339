"""qrpo.objective.transforms: the transforms themselves, their log-partition functions against high-precision
quadrature, the registry and the domain checks.

Reference values never come from the code under test: log Z_f(beta) = log integral_0^1 exp(f(t)/beta) dt
is integrated with mpmath (30 significant digits, tanh-sinh) with the interval split next to the
integrand's peak, where for small beta all of the mass sits in a layer of width ~beta.
"""

from __future__ import annotations

import itertools
import math

import mpmath
import numpy as np
import pytest
import torch
from scipy import stats

from qrpo.objective import transforms
from qrpo.objective.transforms import (
    QuadratureTransform,
    Transform,
    available_transforms,
    check_beta,
    get_transform,
    register_transform,
    transform_parameters,
)

mpmath.mp.dps = 30

# 1e-4 .. 10 on a log grid (16 points, three per decade), then a few larger
BETAS = [float(b) for b in np.logspace(-4, 1, 16)] + [30.0, 100.0, 1e3, 1e4]
SCALED_PARAMS = [(0.5, 0.2), (-1.0, 3.0)]


def _peak_layer_points(beta: float, at: float = 1.0) -> list:
    """Split points for [0, 1] that resolve a peak of width ~beta at t = `at` (0 or 1)."""
    offsets = [beta * k for k in (0.1, 1.0, 10.0, 100.0, 1000.0) if beta * k < 1.0]
    inner = sorted((1 - o if at == 1.0 else o) for o in offsets)
    return [mpmath.mpf(0)] + [mpmath.mpf(p) for p in inner] + [mpmath.mpf(1)]


def reference_log_z_interval(f, beta: float) -> float:
    """log integral_0^1 exp(f(t)/beta) dt by mpmath, f increasing (peak at t = 1)."""
    b = mpmath.mpf(beta)
    total = mpmath.quad(lambda t: mpmath.exp(f(t) / b), _peak_layer_points(beta, at=1.0))
    return float(mpmath.log(total))


def reference_log_z_normal(mu: float, sigma: float, beta: float) -> float:
    """log integral_0^1 exp((mu + sigma Phi^{-1}(t))/beta) dt, substituting t = Phi(z):
    = log integral exp((mu + sigma z)/beta) phi(z) dz, whose integrand peaks where its log-derivative
    sigma/beta - z vanishes, z* = sigma/beta; split there and 5 and 20 units either side."""
    b, m, s = mpmath.mpf(beta), mpmath.mpf(mu), mpmath.mpf(sigma)
    peak = s / b
    points = [-mpmath.inf, peak - 20, peak - 5, peak, peak + 5, peak + 20, mpmath.inf]
    integrand = lambda z: mpmath.exp((m + s * z) / b - z * z / 2) / mpmath.sqrt(2 * mpmath.pi)  # noqa: E731
    return float(mpmath.log(mpmath.quad(integrand, points)))


CLOSED_FORM_REFERENCES = {
    "identity": lambda beta: reference_log_z_interval(lambda t: t, beta),
    "log": lambda beta: reference_log_z_interval(mpmath.log, beta),
    "square": lambda beta: reference_log_z_interval(lambda t: t * t, beta),
    "sqrt": lambda beta: reference_log_z_interval(mpmath.sqrt, beta),
    "normal_icdf": lambda beta: reference_log_z_normal(0.0, 1.0, beta),
}


def _assert_close_relative(computed: float, reference: float, rel: float = 1e-6) -> None:
    assert math.isfinite(computed)
    assert abs(computed - reference) <= rel * abs(reference), (computed, reference)


@pytest.mark.parametrize("name", sorted(CLOSED_FORM_REFERENCES))
def test_closed_form_log_partition_matches_mpmath_quadrature_from_beta_1e_minus_4_to_1e4(name):
    transform = get_transform(name)
    for beta in BETAS:
        _assert_close_relative(transform.log_partition(beta), CLOSED_FORM_REFERENCES[name](beta))


@pytest.mark.parametrize("mu, sigma", SCALED_PARAMS)
def test_scaled_normal_icdf_log_partition_matches_mpmath_quadrature(mu, sigma):
    transform = get_transform("scaled_normal_icdf", mu=mu, sigma=sigma)
    for beta in BETAS:
        _assert_close_relative(transform.log_partition(beta), reference_log_z_normal(mu, sigma, beta))


@pytest.mark.parametrize("beta", [0.3, 1.0, 3.0])
def test_normal_icdf_log_partition_matches_quadrature_in_the_quantile_domain(beta):
    """The same integral in t itself, Phi^{-1}(t) = sqrt(2) erfinv(2t - 1), no substitution; the
    integrand blows up (integrably) at t = 1, which tanh-sinh handles for moderate beta."""
    integrand = lambda t: mpmath.exp(mpmath.sqrt(2) * mpmath.erfinv(2 * t - 1) / beta)  # noqa: E731
    reference = float(mpmath.log(mpmath.quad(integrand, [0, 0.5, 0.99, 1])))
    _assert_close_relative(get_transform("normal_icdf").log_partition(beta), reference)


def test_log_partitions_stay_finite_for_extreme_betas():
    extreme = [1e-6, 1e-5, 1e-4, 1e4, 1e5, 1e6]
    transforms = [get_transform(n) for n in CLOSED_FORM_REFERENCES] + [
        get_transform("scaled_normal_icdf", mu=mu, sigma=s) for mu, s in SCALED_PARAMS
    ]
    for transform in transforms:
        for beta in extreme:
            assert math.isfinite(transform.log_partition(beta)), (transform, beta)


def test_log_partition_small_beta_asymptotics_by_hand():
    """For beta -> 0 the mass sits at t = 1 (Laplace): identity Z ~ beta e^{1/beta}, so
    log Z ~ 1/beta + log beta; square Z ~ (beta/2) e^{1/beta}; sqrt: with t = (1-u)^2,
    Z = e^{1/beta} integral_0^1 2(1-u) e^{-u/beta} du ~ e^{1/beta} 2 beta (1 - beta);
    log Z = log(beta/(1+beta)) ~ log beta."""
    beta = 1e-4
    assert get_transform("identity").log_partition(beta) == pytest.approx(1 / beta + math.log(beta), rel=1e-12)
    assert get_transform("square").log_partition(beta) == pytest.approx(1 / beta + math.log(beta / 2), rel=1e-8)
    assert get_transform("sqrt").log_partition(beta) == pytest.approx(1 / beta + math.log(2 * beta * (1 - beta)), rel=1e-12)
    assert get_transform("log").log_partition(beta) == pytest.approx(math.log(beta), rel=1e-3)


def test_log_partition_large_beta_tends_to_beta_times_mean_of_f_over_beta():
    """For beta -> inf, log E[exp(f/beta)] = E[f]/beta + Var[f]/(2 beta^2) + O(beta^-3); with
    E[t] = 1/2, Var = 1/12 (identity); E[log t] = -1, Var = 1 (log)."""
    beta = 1e4
    assert get_transform("identity").log_partition(beta) == pytest.approx(0.5 / beta + 1 / (24 * beta**2), rel=1e-8)
    assert get_transform("log").log_partition(beta) == pytest.approx(-1 / beta + 1 / (2 * beta**2), rel=1e-8)


def test_transform_values_match_their_definitions():
    q = torch.tensor([0.01, 0.2, 0.5, 0.77, 0.999], dtype=torch.float64)
    qs = q.numpy()
    np.testing.assert_allclose(get_transform("identity")(q).numpy(), qs)
    np.testing.assert_allclose(get_transform("log")(q).numpy(), np.log(qs), rtol=1e-15)
    np.testing.assert_allclose(get_transform("square")(q).numpy(), qs**2, rtol=1e-15)
    np.testing.assert_allclose(get_transform("sqrt")(q).numpy(), np.sqrt(qs), rtol=1e-15)
    np.testing.assert_allclose(get_transform("normal_icdf")(q).numpy(), stats.norm.ppf(qs), rtol=1e-12)
    scaled = get_transform("scaled_normal_icdf", mu=0.5, sigma=0.2)
    np.testing.assert_allclose(scaled(q).numpy(), 0.5 + 0.2 * stats.norm.ppf(qs), rtol=1e-12)


def test_optimum_built_from_log_partition_is_normalised_on_a_fine_quantile_grid():
    """E_{q~U(0,1)}[exp(f(q)/beta - log Z_f)] = 1: the midpoint rule on 10^6 cells, moderate beta."""
    cells = 1_000_000
    q = (torch.arange(cells, dtype=torch.float64) + 0.5) / cells
    for name in ("identity", "log", "square", "sqrt", "normal_icdf"):
        transform, beta = get_transform(name), 1.0
        mass = torch.exp(transform(q) / beta - transform.log_partition(beta)).mean().item()
        assert mass == pytest.approx(1.0, abs=2e-3), name


# --- user transforms: quadrature path ------------------------------------------------------------


_FRESH = itertools.count()


@pytest.fixture(autouse=True)
def _registry_restored():
    """Every test leaves the global registry as it found it: the transforms registered here (some of
    them with log Z accurate only on part of the beta range) must not reach other test modules, which
    loop over `available_transforms()`."""
    saved = dict(transforms._REGISTRY)
    yield
    transforms._REGISTRY.clear()
    transforms._REGISTRY.update(saved)


def _registered(name: str, f, **where) -> Transform:
    """Register under a name never used before in this process and return it: a fresh instance with an
    empty log Z cache, so each test computes its quadrature itself (the registry is global, refuses
    duplicates, and a cached log Z from an earlier test would hide what this test checks)."""
    unique = f"{name}_{next(_FRESH)}"
    register_transform(unique, f, **where)
    return get_transform(unique)


def test_registered_identity_by_quadrature_agrees_with_the_closed_form():
    by_quadrature = _registered("test_identity_by_quadrature", lambda q: q)
    assert isinstance(by_quadrature, QuadratureTransform)
    closed = get_transform("identity")
    for beta in BETAS:
        _assert_close_relative(by_quadrature.log_partition(beta), closed.log_partition(beta))


def test_registered_cube_log_partition_matches_mpmath():
    cube = _registered("test_cube", lambda q: q**3)
    for beta in BETAS:
        _assert_close_relative(cube.log_partition(beta), reference_log_z_interval(lambda t: t**3, beta))


def test_registered_open_interval_log_by_quadrature_agrees_with_closed_form_log():
    by_quadrature = _registered("test_log_by_quadrature", torch.log, open_interval=True)
    closed = get_transform("log")
    for beta in [1e-3, 0.1, 1.0, 10.0, 1e3]:
        _assert_close_relative(by_quadrature.log_partition(beta), closed.log_partition(beta))
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        by_quadrature(torch.tensor([0.0, 0.5]))


def test_registered_non_monotone_transform_with_interior_peak_matches_mpmath():
    """f(t) = -(t - 0.3)^2 peaks inside the interval, at t = 0.3."""
    bump = _registered("test_bump", lambda q: -((q - 0.3) ** 2))
    for beta in [1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0]:
        b = mpmath.mpf(beta)
        width = math.sqrt(beta)
        points = sorted({0.0, 1.0, *(min(max(0.3 + k * width, 0.0), 1.0) for k in (-30, -3, 0, 3, 30))})
        reference = float(mpmath.log(mpmath.quad(lambda t: mpmath.exp(-((t - 0.3) ** 2) / b), points)))
        _assert_close_relative(bump.log_partition(beta), reference)


def test_registering_an_existing_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_transform("identity", lambda q: q)


# --- registry, parameters, beta ------------------------------------------------------------------


def test_builtin_transforms_are_all_available():
    assert {"identity", "log", "square", "sqrt", "normal_icdf", "scaled_normal_icdf"} <= set(available_transforms())


def test_unknown_transform_error_lists_the_registry():
    with pytest.raises(ValueError, match="unknown transform 'cubic'") as err:
        get_transform("cubic")
    for name in ("identity", "log", "square", "sqrt", "normal_icdf", "scaled_normal_icdf"):
        assert name in str(err.value)


def test_get_transform_passes_instances_through_and_builds_parameters():
    transform = get_transform("scaled_normal_icdf", mu=1.0, sigma=2.0)
    assert get_transform(transform) is transform
    assert (transform.mu, transform.sigma) == (1.0, 2.0)
    assert transform.log_partition(2.0) == pytest.approx(1.0 / 2.0 + 4.0 / 8.0)


def test_parameters_a_transform_does_not_take_are_refused():
    with pytest.raises(ValueError, match="does not take parameters"):
        get_transform("identity", mu=1.0)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_scaled_normal_icdf_needs_a_positive_finite_sigma(sigma):
    with pytest.raises(ValueError, match="sigma > 0"):
        get_transform("scaled_normal_icdf", mu=0.0, sigma=sigma)


@pytest.mark.parametrize("beta", [0.0, -0.5, float("nan"), float("inf"), float("-inf")])
def test_non_positive_or_non_finite_beta_is_refused_by_every_log_partition(beta):
    with pytest.raises(ValueError, match="beta must be a positive finite number"):
        check_beta(beta)
    for name in available_transforms():
        with pytest.raises(ValueError, match="beta must be a positive finite number"):
            get_transform(name).log_partition(beta)


# --- domains --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, bad, domain", [
    ("log", 0.0, r"\(0, 1\]"),
    ("normal_icdf", 0.0, r"\(0, 1\)"), ("normal_icdf", 1.0, r"\(0, 1\)"),
    ("scaled_normal_icdf", 0.0, r"\(0, 1\)"), ("scaled_normal_icdf", 1.0, r"\(0, 1\)"),
])
def test_transforms_refuse_quantiles_where_they_are_infinite_and_point_to_clamping(name, bad, domain):
    transform = get_transform(name)
    assert transform.open_interval
    with pytest.raises(ValueError, match=f"needs quantiles in {domain}.*transform.clamp"):
        transform(torch.tensor([0.5, bad]))


def test_log_is_finite_at_one_and_takes_it_as_is():
    assert get_transform("log")(torch.tensor([1.0], dtype=torch.float64)).tolist() == [0.0]


@pytest.mark.parametrize("name", ["log", "normal_icdf"])
def test_open_interval_transforms_are_finite_after_clamping(name):
    m = 8
    grid = torch.arange(m + 1, dtype=torch.float64) / m  # every possible q_hat, ends included
    values = get_transform(name)(get_transform(name).clamp(grid, m))
    assert torch.isfinite(values).all()
    assert (values.diff() > 0).all()  # the order of the grid survives


@pytest.mark.parametrize("name, clamped", [("identity", []), ("square", []), ("sqrt", []), ("log", [0]),
                                           ("normal_icdf", [0, 8]), ("scaled_normal_icdf", [0, 8])])
def test_clamping_moves_only_the_ends_where_the_transform_is_infinite(name, clamped):
    """The grid of M = 8: every point but the clamped ends must come back bit for bit, so no finite
    target f(q) is ever moved (today's log keeps q = 1, i.e. f = 0, for every top sample)."""
    m = 8
    grid = torch.arange(m + 1, dtype=torch.float64) / m
    out = get_transform(name).clamp(grid, m)
    moved = [i for i in range(m + 1) if out[i] != grid[i]]
    assert moved == clamped
    expected = {0: 1 / (2 * m), 8: 1 - 1 / (2 * m)}
    assert all(out[i].item() == pytest.approx(expected[i]) for i in clamped)


@pytest.mark.parametrize("name", ["identity", "square", "sqrt"])
def test_closed_interval_transforms_accept_0_and_1_but_not_outside(name):
    transform = get_transform(name)
    assert not transform.open_interval
    ends = transform(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert ends.tolist() == [0.0, 1.0]
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError, match=r"needs quantiles in \[0, 1\]"):
            transform(torch.tensor([0.5, bad]))


# --- user transforms: registration, domains, caching ---------------------------------------------


def test_registered_transform_is_one_shared_instance_with_its_name_and_repr():
    first = _registered("test_shared", lambda q: q)
    assert get_transform(first.name) is first  # one instance: its log Z cache is shared
    assert first.name.startswith("test_shared_") and first.name in available_transforms()
    assert repr(first) == f"QuadratureTransform({first.name!r})"
    assert first(torch.tensor([0.25], dtype=torch.float64)).tolist() == [0.25]


def test_registering_the_same_new_name_twice_is_refused_and_keeps_the_first():
    name = f"test_twice_{next(_FRESH)}"
    register_transform(name, lambda q: q)
    first = get_transform(name)
    with pytest.raises(ValueError, match=f"transform '{name}' is already registered"):
        register_transform(name, lambda q: 2 * q)
    assert get_transform(name) is first


def test_log_partition_is_cached_per_beta_and_repeat_calls_agree():
    calls = []

    def f(q):
        calls.append(q.shape)
        return q

    transform = _registered("test_cached", f)
    value = transform.log_partition(0.5)
    n = len(calls)
    assert value == transform.log_partition(0.5) == transform.log_partition(np.float64(0.5))
    assert len(calls) == n  # served from the cache, f not evaluated again
    assert value == pytest.approx(get_transform("identity").log_partition(0.5), rel=1e-9)
    assert transform.log_partition(2.0) == pytest.approx(get_transform("identity").log_partition(2.0), rel=1e-9)


def test_quadrature_hands_f_float64_tensors():
    dtypes = set()

    def f(q):
        dtypes.add(q.dtype)
        return q**2

    _registered("test_dtype", f).log_partition(0.01)
    assert dtypes == {torch.float64}


@pytest.mark.parametrize("where, zero, one, domain", [
    ({}, False, False, "[0, 1]"),
    ({"open_interval": True}, True, True, "(0, 1)"),
    ({"infinite_at_zero": True}, True, False, "(0, 1]"),
    ({"infinite_at_one": True}, False, True, "[0, 1)"),
    ({"open_interval": True, "infinite_at_zero": False}, False, True, "[0, 1)"),
    ({"open_interval": True, "infinite_at_one": False}, True, False, "(0, 1]"),
    ({"open_interval": False, "infinite_at_one": True}, False, True, "[0, 1)"),
])
def test_registered_transform_says_where_it_is_infinite(where, zero, one, domain):
    transform = _registered("test_where", lambda q: q, **where)
    assert (transform.infinite_at_zero, transform.infinite_at_one) == (zero, one)
    assert transform.open_interval == (zero or one)
    assert transform.domain == domain
    m = 4
    grid = torch.arange(m + 1, dtype=torch.float64) / m
    moved = [i for i, (a, b) in enumerate(zip(transform.clamp(grid, m), grid)) if a != b]
    assert moved == [i for i, infinite in ((0, zero), (m, one)) if infinite]


def test_registered_log_infinite_at_zero_only_matches_the_closed_form_log():
    by_quadrature = _registered("test_log_zero_only", torch.log, infinite_at_zero=True)
    closed = get_transform("log")
    for beta in [1e-4, 1e-2, 1.0, 100.0, 1e4]:
        _assert_close_relative(by_quadrature.log_partition(beta), closed.log_partition(beta), rel=1e-8)
    assert by_quadrature(torch.tensor([1.0], dtype=torch.float64)).tolist() == [0.0]


@pytest.mark.parametrize("beta", [1e-4, 3e-3, 0.1, 1.0, 30.0, 1e4])
def test_registered_decreasing_transform_peak_at_zero_matches_closed_form(beta):
    """f(t) = -t peaks at t = 0: Z = beta (1 - e^{-1/beta}), log Z = log beta + log(-expm1(-1/beta))."""
    transform = _registered("test_decreasing", lambda q: -q)
    _assert_close_relative(transform.log_partition(beta), math.log(beta) + math.log(-math.expm1(-1 / beta)), rel=1e-9)


@pytest.mark.parametrize("beta", [1e-4, 1e-2, 1.0, 1e4])
def test_registered_transform_with_interior_peak_and_shifted_level(beta):
    """f(t) = 5 - |t - 0.6|/... : a kink at the interior peak t = 0.6 (the break point the quadrature
    must use), Z = e^{5/beta} beta [(1 - e^{-0.6/beta}) + (1 - e^{-0.4/beta})]."""
    transform = _registered("test_kink", lambda q: 5.0 - (q - 0.6).abs())
    expected = 5.0 / beta + math.log(beta) + math.log(-math.expm1(-0.6 / beta) - math.expm1(-0.4 / beta))
    _assert_close_relative(transform.log_partition(beta), expected, rel=1e-9)


def test_registered_transform_refuses_bad_beta():
    transform = _registered("test_bad_beta", lambda q: q)
    for beta in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="beta must be a positive finite number"):
            transform.log_partition(beta)


def test_quadrature_transform_defaults_to_the_closed_interval():
    transform = QuadratureTransform("test_direct", lambda q: q)
    assert (transform.infinite_at_zero, transform.infinite_at_one, transform.domain) == (False, False, "[0, 1]")
    assert transform(torch.tensor([0.0, 1.0], dtype=torch.float64)).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("beta", [10.0, 100.0, 1e3])
def test_registered_transform_infinite_at_zero_with_its_peak_there(beta):
    """f(t) = -log t is +inf at t = 0, where its integrand peaks: Z = integral t^{-1/beta} dt =
    beta / (beta - 1) for beta > 1 (the grid must stop short of the infinite end)."""
    transform = _registered("test_minus_log", lambda q: -torch.log(q), infinite_at_zero=True)
    _assert_close_relative(transform.log_partition(beta), math.log(beta / (beta - 1)), rel=1e-7)


def test_registered_transform_with_a_sharp_interior_kink_at_small_beta():
    """f(t) = 5 - |t - 0.3| at beta = 1e-5: all the mass within ~1e-5 of t = 0.3, which the peak search
    must locate; Z = e^{5/beta} beta [(1 - e^{-0.3/beta}) + (1 - e^{-0.7/beta})]."""
    beta = 1e-5
    transform = _registered("test_sharp_kink", lambda q: 5.0 - (q - 0.3).abs())
    expected = 5.0 / beta + math.log(beta) + math.log(-math.expm1(-0.3 / beta) - math.expm1(-0.7 / beta))
    _assert_close_relative(transform.log_partition(beta), expected, rel=1e-12)


def test_domain_error_messages_in_full():
    with pytest.raises(ValueError) as err:
        get_transform("log")(torch.tensor([0.0]))
    assert str(err.value) == "transform 'log' needs quantiles in (0, 1]; clamp them with transform.clamp(q, num_ref)"
    with pytest.raises(ValueError) as err:
        get_transform("identity")(torch.tensor([1.5]))
    assert str(err.value) == "transform 'identity' needs quantiles in [0, 1]"  # nothing to clamp: no hint


def test_reprs_name_the_transform_and_its_parameters():
    assert [repr(get_transform(n)) for n in ("identity", "log", "square", "sqrt", "normal_icdf")] == [
        "Identity()", "Log()", "Square()", "Sqrt()", "NormalIcdf()"]
    assert repr(get_transform("scaled_normal_icdf", mu=0.5, sigma=0.2)) == "ScaledNormalIcdf(mu=0.5, sigma=0.2)"


# --- messages, reprs, defaults ---------------------------------------------------------------------


def test_out_of_domain_messages_point_to_clamping_only_where_clamping_helps():
    """Open-interval transforms name transform.clamp (it moves exactly their infinite ends); for a
    closed-interval transform clamping would not help, so its message names only the domain."""
    with pytest.raises(ValueError) as err:
        get_transform("log")(torch.tensor([0.0]))
    assert str(err.value) == "transform 'log' needs quantiles in (0, 1]; clamp them with transform.clamp(q, num_ref)"
    with pytest.raises(ValueError) as err:
        get_transform("identity")(torch.tensor([1.5]))
    assert str(err.value) == "transform 'identity' needs quantiles in [0, 1]"


def test_unknown_transform_error_lists_the_choices_comma_separated():
    with pytest.raises(ValueError) as err:
        get_transform("no_such_transform")
    assert str(err.value) == f"unknown transform 'no_such_transform'; choose one of {', '.join(available_transforms())}"


def test_builtin_reprs_name_their_class():
    assert repr(get_transform("identity")) == "Identity()"
    assert repr(get_transform("sqrt")) == "Sqrt()"
    assert repr(get_transform("normal_icdf")) == "NormalIcdf()"
    assert repr(get_transform("scaled_normal_icdf", mu=0.5, sigma=2.0)) == "ScaledNormalIcdf(mu=0.5, sigma=2.0)"


@pytest.mark.parametrize("beta", [0.1, 1.0, 7.0])
def test_scaled_normal_icdf_defaults_to_the_standard_normal(beta):
    default = get_transform("scaled_normal_icdf")
    assert (default.mu, default.sigma) == (0.0, 1.0)
    assert default.log_partition(beta) == pytest.approx(1 / (2 * beta**2), rel=1e-15)
    q = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    assert torch.equal(default(q), get_transform("normal_icdf")(q))


def test_quadrature_transform_built_directly_is_finite_everywhere_by_default():
    transform = QuadratureTransform("direct", lambda q: q)
    assert (transform.infinite_at_zero, transform.infinite_at_one, transform.domain) == (False, False, "[0, 1]")
    assert transform(torch.tensor([0.0, 1.0], dtype=torch.float64)).tolist() == [0.0, 1.0]


# --- quadrature: hard integrands ------------------------------------------------------------------


@pytest.mark.parametrize("beta", [1e-4, 1e-2, 1.0])
def test_quadrature_narrow_spike_between_coarse_grid_points_matches_the_gaussian_integral(beta):
    """f(t) = -1e4 (t - 0.3)^2, a peak of width ~0.01 sqrt(beta) at t = 0.3: with A = 1e4/beta,
    Z = sqrt(pi/A)/2 [erf(0.7 sqrt A) + erf(0.3 sqrt A)]. The peak must be located finely enough
    for exp(f/beta - c) not to overflow and for the quadrature to see the spike."""
    from scipy import special

    transform = QuadratureTransform("test_spike", lambda q: -1e4 * (q - 0.3) ** 2)
    a = 1e4 / beta
    expected = 0.5 * math.log(math.pi / a) + math.log((special.erf(0.7 * math.sqrt(a)) + special.erf(0.3 * math.sqrt(a))) / 2)
    _assert_close_relative(transform.log_partition(beta), expected, rel=1e-9)


def test_quadrature_fast_oscillation_matches_mpmath():
    """f(t) = sin(500 t): 80 periods on [0, 1], which the adaptive quadrature must subdivide finely."""
    transform = QuadratureTransform("test_oscillation", lambda q: (500 * q).sin())
    points = [mpmath.mpf(k) / 160 for k in range(161)]
    for beta in (1.0, 0.5):
        reference = float(mpmath.log(mpmath.quad(lambda t: mpmath.exp(mpmath.sin(500 * t) / beta), points)))
        _assert_close_relative(transform.log_partition(beta), reference, rel=1e-8)


@pytest.mark.parametrize("beta", [3.0, 10.0, 100.0])
def test_quadrature_transform_plus_infinite_at_zero(beta):
    """f(t) = -log t is +inf at t = 0 (so the peak is there): Z = integral t^{-1/beta} = beta/(beta - 1), beta > 1."""
    transform = QuadratureTransform("test_neg_log", lambda q: -torch.log(q), infinite_at_zero=True)
    _assert_close_relative(transform.log_partition(beta), math.log(beta / (beta - 1)))


@pytest.mark.parametrize("beta", [3.0, 10.0, 100.0])
def test_quadrature_transform_plus_infinite_at_one(beta):
    """f(t) = -log(1 - t) is +inf at t = 1 (the mirror of -log t): Z = beta/(beta - 1), beta > 1. Near
    t = 1 the quadrature's nodes round to 1.0 itself, where f = +inf: a single point, no mass."""
    transform = QuadratureTransform("test_neg_log_one_minus", lambda q: -torch.log1p(-q), infinite_at_one=True)
    _assert_close_relative(transform.log_partition(beta), math.log(beta / (beta - 1)))


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 10.0])
def test_user_normal_quantile_by_quadrature_agrees_with_the_closed_form(beta):
    """The user's own Phi^{-1} (+inf at 1, -inf at 0) by quadrature: log Z = 1/(2 beta^2)."""
    transform = QuadratureTransform("test_ndtri", torch.special.ndtri, open_interval=True)
    _assert_close_relative(transform.log_partition(beta), get_transform("normal_icdf").log_partition(beta))


def test_transform_parameters_are_the_keywords_each_transform_is_built_with():
    assert {name: transform_parameters(name) for name in ("identity", "log", "normal_icdf", "scaled_normal_icdf")} == {
        "identity": [], "log": [], "normal_icdf": [], "scaled_normal_icdf": ["mu", "sigma"]}
    name = f"test_parameters_{next(_FRESH)}"
    register_transform(name, lambda q: q)
    assert transform_parameters(name) == []
    with pytest.raises(ValueError) as err:
        transform_parameters("cubic")
    assert str(err.value) == f"unknown transform 'cubic'; choose one of {', '.join(available_transforms())}"
