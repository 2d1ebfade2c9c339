"""Transforms f of the quantile reward and their exact log-partition functions.

QRPO (arXiv 2507.08068, §3-4) regresses on R = f(q) where q ~ Uniform(0, 1) under pi_ref. The
partition function of the KL-regularised optimum is then the same for every prompt:

    Z_f(beta) = E_{q ~ U(0,1)}[exp(f(q) / beta)] = integral_0^1 exp(f(t) / beta) dt

| name                | f(t)            | Z_f(beta)                                 |
|---------------------|-----------------|-------------------------------------------|
| identity            | t               | beta * (e^{1/beta} - 1)                   |
| log                 | log t           | beta / (beta + 1)                         |
| square              | t^2             | (sqrt(pi beta) / 2) * erfi(1 / sqrt(beta)) |
| sqrt                | sqrt(t)         | 2 beta [beta + (1 - beta) e^{1/beta}]     |
| normal_icdf         | Phi^{-1}(t)     | exp(1 / (2 beta^2))                       |
| scaled_normal_icdf  | mu + s Phi^-1(t)| exp(mu / beta + s^2 / (2 beta^2))         |

Every log Z below is written to stay finite and accurate (relative error < 1e-6 against
high-precision quadrature) for beta from 1e-4 to 1e4: no exp(1/beta) is ever formed, and the
cancellations that appear for large beta go through series. A user transform without a closed form
(`register_transform`) gets log Z by adaptive quadrature, once per beta.

Each transform says where it is infinite: `log` at q = 0 only (log 1 = 0 is a perfectly good target),
`normal_icdf` at both ends, identity/square/sqrt nowhere. It refuses quantiles where it is infinite
instead of silently clamping; `Transform.clamp(q, num_ref)` moves exactly those end points (and only
those) half a grid step inside, so no finite target is ever moved.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Callable

import numpy as np
import torch

from qrpo.config.binding import keyword_parameters
from qrpo.objective.quantiles import clamp_quantiles


def check_beta(beta: float) -> float:
    beta = float(beta)
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a positive finite number; got {beta!r}")
    return beta


def _series(x: float, coefficient: Callable[[int], float], terms: int = 12) -> float:
    """sum_{k=1..terms} coefficient(k) * x^k, for |x| small enough that the tail is negligible."""
    return sum(coefficient(k) * x**k for k in range(1, terms + 1))


def _log_expm1_over_x(x: float) -> float:
    """log((e^x - 1) / x) for x > 0, without overflow (large x) or cancellation (small x)."""
    if x > 1.0:
        return x + math.log(-math.expm1(-x)) - math.log(x)
    # (e^x - 1)/x = 1 + sum_k x^k / (k+1)!  -> log1p of the small sum
    return math.log1p(_series(x, lambda k: 1.0 / math.factorial(k + 1), terms=20))


class Transform(ABC):
    """f: quantiles in [0, 1] -> transformed rewards, with log Z_f(beta)."""

    name: str = ""
    infinite_at_zero: bool = False  # f(0) = -inf (log, normal_icdf)
    infinite_at_one: bool = False  # f(1) = +inf (normal_icdf)

    @property
    def open_interval(self) -> bool:
        """True when f is infinite at either end of [0, 1]."""
        return self.infinite_at_zero or self.infinite_at_one

    @abstractmethod
    def f(self, q: torch.Tensor) -> torch.Tensor:
        """The transform itself, elementwise, on quantiles already checked to lie in its domain."""

    @abstractmethod
    def log_partition(self, beta: float) -> float:
        """log Z_f(beta) = log integral_0^1 exp(f(t)/beta) dt."""

    @property
    def domain(self) -> str:
        return f"{'(' if self.infinite_at_zero else '['}0, 1{')' if self.infinite_at_one else ']'}"

    def __call__(self, quantiles: torch.Tensor) -> torch.Tensor:
        low_ok = quantiles > 0 if self.infinite_at_zero else quantiles >= 0
        high_ok = quantiles < 1 if self.infinite_at_one else quantiles <= 1
        if not bool((low_ok & high_ok).all()):
            hint = "; clamp them with transform.clamp(q, num_ref)" if self.open_interval else ""
            raise ValueError(f"transform {self.name!r} needs quantiles in {self.domain}{hint}")
        return self.f(quantiles)

    def clamp(self, quantiles: torch.Tensor, num_ref) -> torch.Tensor:
        """Move q only at the ends where f is infinite, half a grid step (1/(2M)) inside; identity elsewhere."""
        if not self.open_interval:
            return quantiles
        return clamp_quantiles(quantiles, num_ref, low=self.infinite_at_zero, high=self.infinite_at_one)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Identity(Transform):
    """f(t) = t; Z = beta (e^{1/beta} - 1), so log Z = log((e^x - 1)/x) with x = 1/beta."""

    name = "identity"

    def f(self, q):
        return q

    def log_partition(self, beta):
        return _log_expm1_over_x(1.0 / check_beta(beta))


class Log(Transform):
    """f(t) = log t; Z = integral t^{1/beta} dt = beta / (beta + 1)."""

    name = "log"
    infinite_at_zero = True

    def f(self, q):
        return torch.log(q)

    def log_partition(self, beta):
        beta = check_beta(beta)
        return math.log(beta) - math.log1p(beta)


class Square(Transform):
    """f(t) = t^2; Z = (sqrt(pi beta)/2) erfi(1/sqrt(beta)) = sqrt(beta) e^{1/beta} D(1/sqrt(beta)).

    D is Dawson's function (erfi(x) = 2/sqrt(pi) e^{x^2} D(x)), finite for every x, so
    log Z = log(beta)/2 + 1/beta + log D(1/sqrt(beta)) never overflows.
    """

    name = "square"

    def f(self, q):
        return q.square()

    def log_partition(self, beta):
        from scipy import special  # imported where used: the identity and log transforms run without scipy

        beta = check_beta(beta)
        return 0.5 * math.log(beta) + 1.0 / beta + math.log(special.dawsn(1.0 / math.sqrt(beta)))


class Sqrt(Transform):
    """f(t) = sqrt(t); Z = 2 beta [beta + (1 - beta) e^{1/beta}] = 2 beta e^{1/beta} g(beta) with

    g = (1 - beta) + beta e^{-1/beta}  (= 1 - beta (1 - e^{-x}), x = 1/beta). For beta > 10 the two
    terms of g cancel; there g = x/2 - x^2/6 + ... = sum_{k>=1} (-1)^{k+1} x^k / (k+1)! (series).
    """

    name = "sqrt"

    def f(self, q):
        return torch.sqrt(q)

    def log_partition(self, beta):
        beta = check_beta(beta)
        x = 1.0 / beta
        if x < 0.1:
            g = _series(x, lambda k: (-1.0) ** (k + 1) / math.factorial(k + 1), terms=12)
        else:
            g = (1.0 - beta) + beta * math.exp(-x)
        return math.log(2.0 * beta) + x + math.log(g)


class ScaledNormalIcdf(Transform):
    """f(t) = mu + sigma Phi^{-1}(t); q ~ U(0,1) makes f(q) ~ N(mu, sigma^2), whose moment generating
    function gives log Z = mu/beta + sigma^2 / (2 beta^2)."""

    name = "scaled_normal_icdf"
    infinite_at_zero = True
    infinite_at_one = True

    def __init__(self, mu: float = 0.0, sigma: float = 1.0):
        if not (sigma > 0 and math.isfinite(sigma) and math.isfinite(mu)):
            raise ValueError(f"scaled_normal_icdf needs finite mu and sigma > 0; got mu={mu}, sigma={sigma}")
        self.mu, self.sigma = float(mu), float(sigma)

    def f(self, q):
        return self.mu + self.sigma * torch.special.ndtri(q)

    def log_partition(self, beta):
        beta = check_beta(beta)
        return self.mu / beta + self.sigma**2 / (2.0 * beta**2)

    def __repr__(self):
        return f"ScaledNormalIcdf(mu={self.mu}, sigma={self.sigma})"


class NormalIcdf(ScaledNormalIcdf):
    """f(t) = Phi^{-1}(t), the standard normal quantile function; log Z = 1 / (2 beta^2)."""

    name = "normal_icdf"

    def __init__(self):
        super().__init__(mu=0.0, sigma=1.0)

    def __repr__(self):
        return "NormalIcdf()"


class QuadratureTransform(Transform):
    """A user transform f with log Z by adaptive quadrature, cached per beta.

    Stable for small beta: with c = max_t f(t)/beta (found on a grid, refined by the quadrature's
    break point), log Z = c + log integral exp(f(t)/beta - c) dt, whose integrand is at most 1.
    `f` must map a float64 torch tensor of quantiles to a tensor of the same shape, increasing or not.
    """

    def __init__(self, name: str, f: Callable[[torch.Tensor], torch.Tensor], open_interval: bool = False,
                 infinite_at_zero: bool | None = None, infinite_at_one: bool | None = None):
        self.name, self._f = name, f
        self.infinite_at_zero = open_interval if infinite_at_zero is None else infinite_at_zero
        self.infinite_at_one = open_interval if infinite_at_one is None else infinite_at_one
        self._cache: dict[float, float] = {}

    def f(self, q):
        return self._f(q)

    def _f_numpy(self, t: np.ndarray) -> np.ndarray:
        return self._f(torch.as_tensor(t, dtype=torch.float64)).numpy()

    def log_partition(self, beta):
        from scipy import integrate

        beta = check_beta(beta)
        if beta not in self._cache:
            grid = np.linspace(1e-12 if self.infinite_at_zero else 0.0, 1 - 1e-12 if self.infinite_at_one else 1.0, 100_001)
            values = self._f_numpy(grid) / beta
            peak = int(np.argmax(values))
            c = float(values[peak])

            def integrand(t: float) -> float:
                # near an end where f = +inf the quadrature's nodes can round onto the end itself: a
                # single point, no mass (exp(+inf) there would make log Z = inf)
                exponent = float(self._f_numpy(np.array([t]))[0]) / beta - c
                return 0.0 if exponent == math.inf else math.exp(exponent)

            t_peak = float(grid[peak])
            pieces = [(0.0, t_peak), (t_peak, 1.0)]
            total = sum(
                integrate.quad(integrand, a, b, limit=500, epsabs=0.0, epsrel=1e-11)[0] for a, b in pieces if b > a
            )
            self._cache[beta] = c + math.log(total)
        return self._cache[beta]

    def __repr__(self):
        return f"QuadratureTransform({self.name!r})"


_REGISTRY: dict[str, Callable[..., Transform]] = {
    "identity": Identity,
    "log": Log,
    "square": Square,
    "sqrt": Sqrt,
    "normal_icdf": NormalIcdf,
    "scaled_normal_icdf": ScaledNormalIcdf,
}


def register_transform(
    name: str, f: Callable[[torch.Tensor], torch.Tensor], open_interval: bool = False,
    infinite_at_zero: bool | None = None, infinite_at_one: bool | None = None,
) -> None:
    """Make `get_transform(name)` return f with its log Z computed by numerical quadrature.

    Say where f is infinite with `infinite_at_zero` / `infinite_at_one` (`open_interval=True` is short
    for both), so that clamping moves only those ends."""
    if name in _REGISTRY:
        raise ValueError(f"transform {name!r} is already registered")
    transform = QuadratureTransform(name, f, open_interval, infinite_at_zero, infinite_at_one)  # one instance: a shared log Z cache
    _REGISTRY[name] = lambda: transform


def available_transforms() -> list[str]:
    return sorted(_REGISTRY)


def _check_known(name: str) -> None:
    if name not in _REGISTRY:
        raise ValueError(f"unknown transform {name!r}; choose one of {', '.join(available_transforms())}")


def transform_parameters(name: str) -> list[str]:
    """The keyword parameters transform `name` is built with (`scaled_normal_icdf`: mu, sigma; most: none)."""
    _check_known(name)
    return keyword_parameters(_REGISTRY[name])[0]


def get_transform(name: str | Transform, **params) -> Transform:
    """The transform called `name` (built with `params`, e.g. mu and sigma), or `name` if it is one."""
    if isinstance(name, Transform):
        return name
    _check_known(name)
    try:
        return _REGISTRY[name](**params)
    except TypeError as err:
        raise ValueError(f"transform {name!r} does not take parameters {sorted(params)}: {err}") from None
