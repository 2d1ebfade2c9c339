"""The KL-regularised optimum of QRPO in closed form: its KL to pi_ref, its expected quantile, and beta
chosen from a KL budget or a target quantile (`optimum_stats`, `beta_for_kl`, `beta_for_quantile`). Closed
forms for the built-in transforms, a graded quadrature for the others; the derivation, the formulas and
their accuracy: docs/mathematics.md, "The optimum"."""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from qrpo.errors import InputError
from qrpo.objective.transforms import Identity, Log, NormalIcdf, ScaledNormalIcdf, Sqrt, Square, Transform, get_transform

# scipy is imported inside the functions that need it: training with the identity or log transform, and
# the GPU checks (tests/gpu), run where scipy is not installed.

# beta range the solvers search (and the range the numerics are built for)
BETA_MIN, BETA_MAX = 1e-6, 1e6

_SERIES_BELOW_X = 0.5  # x = 1/beta below which E[f] and KL come from the cumulant series
_SERIES_TERMS = 24  # (x / radius)^24 < 1e-16 for x < 0.5: the radius is 2 pi (identity), >~ 4 (square, sqrt)


@dataclass(frozen=True)
class OptimumStats:
    """What the KL-regularised optimum pi* of QRPO with transform f and beta achieves, for every prompt.

    expected_quantile: E_{pi*}[q], the optimum's mean quantile reward (1/2 for pi_ref itself).
    expected_reward:   E_{pi*}[f(q)], the transformed reward QRPO regresses on.
    kl:                KL(pi* || pi_ref) in nats.
    log_partition:     log Z_f(beta).
    """

    expected_quantile: float
    expected_reward: float
    kl: float
    log_partition: float


# --- small numerical pieces ----------------------------------------------------------------------------


def _cumulants_from_moments(moments: list[float]) -> list[float]:
    """kappa_1..kappa_N from the raw moments m_1..m_N (index 0 holds m_1), by the recursion
    kappa_n = m_n - sum_{k=1}^{n-1} C(n-1, k-1) kappa_k m_{n-k}."""
    m = [1.0, *moments]  # m[0] = 1
    kappa = [0.0]
    for n in range(1, len(m)):
        kappa.append(m[n] - sum(math.comb(n - 1, k - 1) * kappa[k] * m[n - k] for k in range(1, n)))
    return kappa[1:]


def _series_mean_and_kl(cumulants: list[float], x: float) -> tuple[float, float]:
    """E[f] = sum_{n>=1} kappa_n x^{n-1}/(n-1)!  and  KL = sum_{n>=2} (n-1) kappa_n x^n / n!."""
    mean = sum(k * x ** (n - 1) / math.factorial(n - 1) for n, k in enumerate(cumulants, start=1))
    kl = sum((n - 1) * k * x**n / math.factorial(n) for n, k in enumerate(cumulants, start=1) if n >= 2)
    return mean, kl


def _bregman(log_w: np.ndarray) -> np.ndarray:
    """w log w - w + 1 = e^a (a - 1) + 1 with a = log w, >= 0; by its series sum_{n>=2} (n-1) a^n / n!
    where |a| < 0.1 (there the direct form cancels)."""
    a = np.asarray(log_w, dtype=np.float64)
    direct = np.exp(a) * (a - 1.0) + 1.0
    small = np.abs(a) < 0.1
    series = sum((n - 1) * a**n / math.factorial(n) for n in range(2, 14))
    return np.where(small, series, direct)


# uniform-law moments E[f(U)^k] of the bounded built-in transforms, for their cumulant series
_MOMENTS: dict[type, Callable[[int], float]] = {
    Identity: lambda k: 1.0 / (k + 1),  # E[U^k]
    Square: lambda k: 1.0 / (2 * k + 1),  # E[U^{2k}]
    Sqrt: lambda k: 2.0 / (k + 2),  # E[U^{k/2}]
}
_CUMULANTS = {cls: _cumulants_from_moments([m(k) for k in range(1, _SERIES_TERMS + 1)]) for cls, m in _MOMENTS.items()}


# --- closed forms ----------------------------------------------------------------------------------------


def _identity_stats(transform: Transform, beta: float) -> OptimumStats:
    """f(t) = t:  p*(t) = x e^{x t} / (e^x - 1).

    E[q] = integral t e^{xt} dt / Z with integral_0^1 t e^{xt} dt = e^x/x - (e^x - 1)/x^2 and
    Z = (e^x - 1)/x, so E[q] = e^x/(e^x - 1) - 1/x = 1/(1 - e^{-x}) - beta, written with expm1(-x).
    KL = x E[q] - log Z. Small beta: E[q] = 1 - beta + O(e^{-1/beta}), KL = log(1/beta) - 1 + o(1).
    Large beta (x < 1/2), from the cumulants of U(0, 1) (kappa_n = B_n / n):
    E[q] = 1/2 + x/12 - x^3/720 + ...,  KL = x^2/24 - x^4/960 + ...
    (beta = 0.1: E[q] = 0.900045, KL = 1.30321 nats.)
    """
    x = 1.0 / beta
    log_z = transform.log_partition(beta)
    if x < _SERIES_BELOW_X:
        mean, kl = _series_mean_and_kl(_CUMULANTS[Identity], x)
    else:
        mean = 1.0 / -math.expm1(-x) - beta
        kl = x * mean - log_z
    return OptimumStats(mean, mean, kl, log_z)


def _log_stats(transform: Transform, beta: float) -> OptimumStats:
    """f(t) = log t:  e^{x log t} = t^x, Z = 1/(x + 1), p*(t) = (x + 1) t^x (a Beta(x + 1, 1) law).

    E[q] = (x + 1)/(x + 2) = (1 + beta)/(1 + 2 beta);  E[log q] = -1/(x + 1) = -beta/(1 + beta);
    KL = x E[log q] - log Z = log(1 + x) - x/(1 + x) = log(1 + 1/beta) - 1/(1 + beta).
    For x < 0.1 the two terms cancel; there KL = sum_{n>=2} (-1)^n (n-1)/n x^n (log1p's series minus the
    geometric one). Small beta: E[q] = 1 - beta + O(beta^2), KL = log(1/beta) - 1 + o(1).
    """
    x = 1.0 / beta
    if x < 0.1:
        kl = sum((-1) ** n * (n - 1) / n * x**n for n in range(2, 18))
    else:
        kl = math.log1p(x) - 1.0 / (1.0 + beta)
    return OptimumStats((1.0 + beta) / (1.0 + 2.0 * beta), -beta / (1.0 + beta), kl, transform.log_partition(beta))


def _square_stats(transform: Transform, beta: float) -> OptimumStats:
    """f(t) = t^2:  Z = integral e^{x t^2} dt = sqrt(beta) e^x D(sqrt x)  (D: Dawson's function).

    E[q] = integral t e^{x t^2} dt / Z = (e^x - 1)/(2x) / Z = sqrt(beta) (1 - e^{-x}) / (2 D(sqrt x)).
    E[q^2]: by parts, integral t^2 e^{xt^2} dt = e^x/(2x) - Z/(2x), so with u = sqrt x and e^x/Z = u/D(u),
    E[q^2] = 1/(2 u D(u)) - 1/(2 u^2).  KL = x E[q^2] - log Z.
    For x < 1/2, E[q^2] and KL from the cumulants of U^2 (moments 1/(2k+1)): KL = 2x^2/45 + ...
    """
    from scipy import special

    x = 1.0 / beta
    u = math.sqrt(x)
    dawson = float(special.dawsn(u))
    expected_quantile = math.sqrt(beta) * -math.expm1(-x) / (2.0 * dawson)
    log_z = transform.log_partition(beta)
    if x < _SERIES_BELOW_X:
        mean, kl = _series_mean_and_kl(_CUMULANTS[Square], x)
    else:
        mean = 1.0 / (2.0 * u * dawson) - 0.5 * beta
        kl = x * mean - log_z
    return OptimumStats(expected_quantile, mean, kl, log_z)


def _k_integrals(x: float, n_max: int) -> list[float]:
    """K_n(x) = integral_0^1 (1 - v)^n e^{-x v} dv = e^{-x} integral_0^1 u^n e^{x u} du, n = 0..n_max.

    x >= 2: K_0 = (1 - e^{-x})/x and, by parts, K_n = (1 - n K_{n-1})/x (stable: n K_{n-1} <~ n/x).
    x < 2: the series K_n = sum_k (-x)^k n! / (n + k + 1)!  (Beta integrals; terms fall like 2^k/(k+1)!).
    """
    if x >= 2.0:
        ks = [-math.expm1(-x) / x]
        for n in range(1, n_max + 1):
            ks.append((1.0 - n * ks[-1]) / x)
        return ks
    return [
        sum((-x) ** k * math.factorial(n) / math.factorial(n + k + 1) for k in range(40)) for n in range(n_max + 1)
    ]


def _sqrt_stats(transform: Transform, beta: float) -> OptimumStats:
    """f(t) = sqrt(t): substitute t = u^2 (dt = 2u du): Z = 2 integral_0^1 u e^{xu} du = 2 e^x K_1(x), and

    E[sqrt q] = integral u^2 e^{xu} du / integral u e^{xu} du = K_2/K_1,
    E[q]      = integral u^3 e^{xu} du / integral u e^{xu} du = K_3/K_1,
    with K_n(x) = e^{-x} integral u^n e^{xu} du (never overflows; see `_k_integrals`). KL = x K_2/K_1 - log Z.
    For x < 1/2, E[sqrt q] and KL from the cumulants of sqrt(U) (moments 2/(k+2)).
    """
    x = 1.0 / beta
    _, k1, k2, k3 = _k_integrals(x, 3)
    log_z = transform.log_partition(beta)
    if x < _SERIES_BELOW_X:
        mean, kl = _series_mean_and_kl(_CUMULANTS[Sqrt], x)
    else:
        mean = k2 / k1
        kl = x * mean - log_z
    return OptimumStats(k3 / k1, mean, kl, log_z)


def _normal_stats(transform: Transform, beta: float) -> OptimumStats:
    """f(t) = mu + sigma Phi^{-1}(t): with t = Phi(z), q ~ U(0, 1) is z ~ N(0, 1), and tilting N(0, 1) by
    e^{sigma z / beta} gives z ~ N(sigma/beta, 1) under pi*. Hence f(q) ~ N(mu + sigma^2/beta, sigma^2):

    E[f] = mu + sigma^2 / beta,   log Z = mu/beta + sigma^2/(2 beta^2),
    KL = E[f]/beta - log Z = sigma^2 / (2 beta^2)   (the KL between N(sigma/beta, 1) and N(0, 1)),
    E[q] = E[Phi(Z)], Z ~ N(m, 1), m = sigma/beta: = P(W <= Z) for an independent W ~ N(0, 1)
         = P(W - Z <= 0) with W - Z ~ N(-m, 2), = Phi(m / sqrt 2) = Phi(sigma / (beta sqrt 2)).
    (beta = 1: E[q] = Phi(1/sqrt 2) = 0.760, KL = 0.5 nats.)
    """
    from scipy import special

    mu, sigma = transform.mu, transform.sigma
    expected_quantile = float(special.ndtr(sigma / (beta * math.sqrt(2.0))))
    return OptimumStats(
        expected_quantile, mu + sigma**2 / beta, sigma**2 / (2.0 * beta**2), transform.log_partition(beta)
    )


_CLOSED_FORMS: dict[type, Callable[[Transform, float], OptimumStats]] = {
    Identity: _identity_stats,
    Log: _log_stats,
    Square: _square_stats,
    Sqrt: _sqrt_stats,
    ScaledNormalIcdf: _normal_stats,
    NormalIcdf: _normal_stats,
}  # looked up by exact type: a user subclass that overrides f falls through to quadrature


# --- quadrature, for every other transform ---------------------------------------------------------------

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(20)
_MESH_CACHE: "weakref.WeakKeyDictionary[Transform, _Mesh]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class _Mesh:
    """Quadrature nodes t [N] in (0, 1), weights [N], f(t) [N], and which nodes lie in the last piece
    before the float-resolution cut-off at an infinite right endpoint (open-interval transforms)."""

    t: np.ndarray
    weights: np.ndarray
    f: np.ndarray
    edge: np.ndarray  # [N] bool


def _f_numpy(transform: Transform, t: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return transform.f(torch.as_tensor(t, dtype=torch.float64)).double().numpy()


def _mesh(transform: Transform) -> _Mesh:
    """A beta-independent mesh: pieces [a, b] whose edges approach 0, 1 and the peak of f geometrically
    (2^-1 .. 2^-50 away), 20-point Gauss-Legendre on each. Whatever beta, p*(t) is smooth on every piece
    relative to the piece's width once the piece is narrower than the layer ~beta/|f'| (or ~sqrt(beta/|f''|))
    in which p* lives, so the rule stays accurate for beta down to BETA_MIN = 1e-6 (tested) and below, while
    that layer is wider than ~1e-15. Near a finite endpoint the grading also resolves integrable
    singularities such as t^x log t at 0. Cached per transform object (f is evaluated once)."""
    from scipy import optimize

    try:
        return _MESH_CACHE[transform]
    except (KeyError, TypeError):  # TypeError: a transform class that is not hashable is not cached
        pass
    eps = 1e-12 if transform.open_interval else 0.0
    grid = np.linspace(eps, 1.0 - eps, 100_001)
    values = _f_numpy(transform, grid)
    if np.isnan(values).any():
        bad = grid[np.isnan(values)][0]
        raise InputError(f"transform {transform.name!r} returns NaN inside (0, 1) (at q = {bad:g})")
    peak_index = int(np.argmax(values))
    offsets = 2.0 ** -np.arange(1, 51)  # 0.5 .. 8.9e-16
    points = [0.0, 1.0, *offsets, *(1.0 - offsets)]
    if 0 < peak_index < len(grid) - 1:
        found = optimize.minimize_scalar(
            lambda t: -float(_f_numpy(transform, np.array([t]))[0]),
            bounds=(grid[peak_index - 1], grid[peak_index + 1]),
            method="bounded",
            options={"xatol": 1e-15},
        )
        peak = float(found.x)
        points += [p for p in (*(peak - offsets), peak, *(peak + offsets)) if 0.0 < p < 1.0]
    points = np.unique(np.asarray(points))
    left, right = points[:-1], points[1:]
    if transform.open_interval:  # nodes within 1e-15 of 1 round to 1 itself, where f may be infinite
        left, right = left[:-1], right[:-1]
    half = (right - left) / 2.0  # [P]
    t = ((left + right) / 2.0)[:, None] + half[:, None] * _GL_NODES[None, :]  # [P, 20]
    weights = half[:, None] * _GL_WEIGHTS[None, :]  # [P, 20]
    edge = np.zeros_like(t, dtype=bool)
    if transform.open_interval:
        edge[-1] = True
    t, weights, edge = t.ravel(), weights.ravel(), edge.ravel()
    f = _f_numpy(transform, t)
    if np.isnan(f).any() or np.isposinf(f).any():
        bad = float(t[np.isnan(f) | np.isposinf(f)][0])
        raise InputError(f"transform {transform.name!r} is NaN or +inf at q = {bad!r}, inside (0, 1)")
    mesh = _Mesh(t, weights, f, edge)
    try:
        _MESH_CACHE[transform] = mesh
    except TypeError:
        pass
    return mesh


def _quadrature_stats(transform: Transform, beta: float) -> OptimumStats:
    """The integrals of the module docstring on the graded mesh, shifted by c = max f(t)/beta:

    s = f/beta - c <= 0,  I = integral e^s in (0, 1],  log Z = c + log I,  log p* = s - log I, and
    KL = integral p* log p* = integral (p* log p* - p* + 1) dt  (p* and 1 both integrate to 1 on the mesh),
    a sum of non-negative terms (w log w - w + 1 >= 0) that needs no cancellation where p* ~ 1 (large beta;
    summing p* log p* directly loses 7 digits of the KL of `log` at beta = 1e4).
    """
    mesh = _mesh(transform)
    s = mesh.f / beta  # [N]
    c = float(s.max())
    s = s - c
    log_i = math.log(float(np.dot(mesh.weights, np.exp(s))))
    log_p = s - log_i  # [N] log p*(t)
    p = np.exp(log_p)
    if transform.open_interval and float(np.dot(mesh.weights[mesh.edge], p[mesh.edge])) > 1e-7:
        raise InputError(
            f"at beta={beta:g} the optimum of transform {transform.name!r} puts its mass within 1e-15 of q = 1, "
            "beyond what quadrature in q resolves; use a larger beta (or a transform with a closed form)"
        )
    return OptimumStats(
        expected_quantile=float(np.dot(mesh.weights, p * mesh.t)),
        expected_reward=float(np.dot(mesh.weights, p * mesh.f)),
        kl=float(np.dot(mesh.weights, _bregman(log_p))),
        log_partition=c + log_i,
    )


# --- the public functions --------------------------------------------------------------------------------


def _check_beta(beta) -> float:
    try:
        value = float(beta)
    except (TypeError, ValueError):
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise InputError(f"beta must be a positive finite number; got {beta!r}")
    return value


def optimum_stats(transform: str | Transform, beta: float) -> OptimumStats:
    """E_{pi*}[q], E_{pi*}[f(q)], KL(pi* || pi_ref) and log Z_f(beta) of QRPO's optimum with `transform`
    (a name from `qrpo.objective.transforms.available_transforms()` or a `Transform`) at `beta`.

    The same numbers hold for every prompt (see the module docstring). Built-in transforms use closed
    forms; any other transform is integrated numerically.
    """
    transform = get_transform(transform)
    beta = _check_beta(beta)
    closed_form = _CLOSED_FORMS.get(type(transform))
    return closed_form(transform, beta) if closed_form else _quadrature_stats(transform, beta)


def _solve_log_beta(stat: Callable[[float], float], target: float) -> float:
    """The beta in [BETA_MIN, BETA_MAX] where the decreasing function stat(beta) equals target, by
    Brent's method in log beta (the caller has checked that the target lies between the endpoints)."""
    from scipy import optimize

    root = optimize.brentq(
        lambda log_beta: stat(math.exp(log_beta)) - target,
        math.log(BETA_MIN),
        math.log(BETA_MAX),
        xtol=1e-13,
        rtol=1e-13,
        maxiter=200,
    )
    return math.exp(root)


def _positive_float(value, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number; got {value!r}") from None
    if math.isnan(number):
        raise InputError(f"{what} must be a number; got {value!r}")
    return number


def beta_for_kl(transform: str | Transform, kl_budget: float) -> float:
    """The beta at which QRPO's optimum pi* has KL(pi* || pi_ref) = kl_budget nats (for every prompt).

    KL decreases strictly in beta (dKL/d(1/beta) = Var_{p*}[f]/beta > 0), from +inf as beta -> 0 to 0 as
    beta -> inf, so every positive budget has exactly one beta; it is found by Brent's method on
    log beta in [BETA_MIN, BETA_MAX] = [1e-6, 1e6], to a relative accuracy of ~1e-12. Examples (nats ->
    beta): identity 1.303 -> 0.100, 1.0 -> 0.136; log 1.0 -> 0.188; normal_icdf 1.0 -> 1/sqrt 2, 0.5 -> 1.
    """
    transform = get_transform(transform)
    budget = _positive_float(kl_budget, "kl_budget")
    if not budget > 0:
        raise InputError(f"kl_budget must be > 0 nats (KL(pi* || pi_ref) of any beta is positive); got {kl_budget!r}")
    kl = lambda beta: optimum_stats(transform, beta).kl  # noqa: E731
    low, high = kl(BETA_MAX), kl(BETA_MIN)
    if not low < budget < high:
        raise InputError(
            f"kl_budget={budget:g} nats is out of reach for transform {transform.name!r}: for beta in "
            f"[{BETA_MIN:g}, {BETA_MAX:g}] its optimum's KL(pi* || pi_ref) ranges over ({low:.3g}, {high:.4g}) nats; "
            "choose a budget inside that range"
        )
    return _solve_log_beta(kl, budget)


def _non_decreasing(transform: Transform) -> bool:
    mesh = _mesh(transform)
    order = np.argsort(mesh.t)
    return bool((np.diff(mesh.f[order]) >= -1e-12 * np.abs(mesh.f[order][1:]).clip(min=1.0)).all())


def beta_for_quantile(transform: str | Transform, target_quantile: float) -> float:
    """The beta at which QRPO's optimum pi* reaches E_{pi*}[q] = target_quantile (for every prompt).

    For a non-decreasing f, E_{pi*}[q] decreases in beta (dE[q]/d(1/beta) = Cov_{p*}(q, f(q)) >= 0) from
    sup = 1 (beta -> 0: p* collapses onto q = 1) to 1/2 (beta -> inf: pi* = pi_ref), so a target in
    (1/2, 1) has one beta, found by Brent's method on log beta in [1e-6, 1e6]. Examples: identity
    0.9 -> 0.1000; log 0.9 -> 1/8 (E[q] = (1 + beta)/(1 + 2 beta)); normal_icdf Phi(1/sqrt 2) = 0.760 -> 1.
    Transforms that decrease somewhere are refused: their E[q] need not be monotone in beta.
    """
    transform = get_transform(transform)
    target = _positive_float(target_quantile, "target_quantile")
    if not 0.5 < target < 1.0:
        raise InputError(
            f"target_quantile must lie in (1/2, 1): 1/2 is pi_ref's own expected quantile (beta -> inf) and "
            f"1 is reached only as beta -> 0; got {target_quantile!r}"
        )
    if type(transform) not in _CLOSED_FORMS and not _non_decreasing(transform):
        raise InputError(
            f"beta_for_quantile needs a non-decreasing transform (its E_pi*[q] is then monotone in beta); "
            f"{transform.name!r} decreases somewhere on (0, 1): use beta_for_kl instead"
        )
    expected_quantile = lambda beta: optimum_stats(transform, beta).expected_quantile  # noqa: E731
    low, high = expected_quantile(BETA_MAX), expected_quantile(BETA_MIN)
    if not low < target < high:
        raise InputError(
            f"target_quantile={target:g} is out of reach for transform {transform.name!r}: for beta in "
            f"[{BETA_MIN:g}, {BETA_MAX:g}] its optimum's E[q] ranges over ({low:.8g}, {high:.8g}); "
            "choose a target inside that range"
        )
    return _solve_log_beta(expected_quantile, target)
