"""Per-example losses of QRPO and its baselines, written as the equations below.

Every function takes sequence log-probabilities summed over completion tokens ([B] tensors), returns
the per-example loss [B] plus detached diagnostics, and leaves the averaging to the caller.

QRPO (Matrenok et al. 2025, "Alignment with Pointwise Regression and Exact Partition Functions",
arXiv 2507.08068, §3): with q = quantile of the reward among reference rewards and R = f(q),

    L = ( f(q) - beta log Z_f(beta) - beta (log pi_theta(y|x) - log pi_ref(y|x)) )^2       ("mse")
      | ... |                                                                                ("mae")

DPO (Rafailov et al. 2023, arXiv 2305.18290, Eq. 7):  -log sigmoid(beta [(pi_w - ref_w) - (pi_l - ref_l)])
SimPO (Meng et al. 2024, arXiv 2405.14734, Eq. 6):    -log sigmoid(beta (mean pi_w - mean pi_l) - gamma)   (no pi_ref)
REBEL (Gao et al. 2024, arXiv 2404.16767; the regression divided by beta^2, so that beta plays the role it has in DPO):
                                    ((r_w - r_l)/beta - [(pi_w - ref_w) - (pi_l - ref_l)])^2
where pi_w = log pi_theta(y_w|x), ref_w = log pi_ref(y_w|x), "mean" = per-token average.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from qrpo.objective.quantiles import quantile_rewards
from qrpo.objective.transforms import Transform, check_beta, get_transform

LOSS_TYPES = ("mse", "mae")


class QRPOLossOutput(NamedTuple):
    losses: torch.Tensor  # [B] per-example loss (carries the gradient)
    quantiles: torch.Tensor  # [B] q fed to the transform (after clamping, if the transform needs it)
    transformed_rewards: torch.Tensor  # [B] f(q)
    beta_log_partition: float  # beta * log Z_f(beta), one number for every prompt
    implicit_rewards: torch.Tensor  # [B] beta * (log pi_theta - log pi_ref), detached
    residuals: torch.Tensor  # [B] f(q) - beta log Z - implicit reward, detached


class PairLossOutput(NamedTuple):
    losses: torch.Tensor  # [B]
    chosen_rewards: torch.Tensor  # [B] implicit reward of y_w, detached
    rejected_rewards: torch.Tensor  # [B] implicit reward of y_l, detached


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1 or any(len(s) != 1 for s in shapes.values()):
        raise ValueError(f"expected 1-D tensors of one shape [B]; got {shapes}")


def qrpo_loss_from_quantiles(
    policy_logps: torch.Tensor,  # [B] log pi_theta(y|x)
    ref_logps: torch.Tensor,  # [B] log pi_ref(y|x)
    quantiles: torch.Tensor,  # [B] in the transform's domain
    beta: float,
    transform: str | Transform = "identity",
    loss_type: str = "mse",
) -> QRPOLossOutput:
    """QRPO regression of beta * log(pi_theta / pi_ref) onto f(q) - beta log Z_f(beta)."""
    _check_same_shape(policy_logps=policy_logps, ref_logps=ref_logps, quantiles=quantiles)
    beta = check_beta(beta)
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")
    transform = get_transform(transform)

    transformed = transform(quantiles.detach()).to(policy_logps.dtype)  # [B] f(q)
    beta_log_z = beta * transform.log_partition(beta)
    implicit = beta * (policy_logps - ref_logps)  # [B] beta log(pi_theta / pi_ref)
    residuals = transformed - beta_log_z - implicit  # [B]
    losses = residuals.square() if loss_type == "mse" else residuals.abs()
    return QRPOLossOutput(losses, quantiles.detach(), transformed, beta_log_z, implicit.detach(), residuals.detach())


def qrpo_loss(
    policy_logps: torch.Tensor,  # [B]
    ref_logps: torch.Tensor,  # [B]
    rewards: torch.Tensor,  # [B] raw reward of each completion
    ref_rewards: torch.Tensor,  # [B, M] raw rewards of M reference completions of the same prompt
    beta: float,
    transform: str | Transform = "identity",
    loss_type: str = "mse",
    ties: str = "le",
) -> QRPOLossOutput:
    """QRPO loss from raw rewards: q = empirical quantile among the reference rewards (moved half a
    grid step inside only at an end where the transform is infinite), then the regression."""
    transform = get_transform(transform)
    quantiles = transform.clamp(quantile_rewards(rewards, ref_rewards, ties=ties), ref_rewards.shape[1])  # [B]
    return qrpo_loss_from_quantiles(policy_logps, ref_logps, quantiles, beta, transform, loss_type)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,  # [B]
    policy_rejected_logps: torch.Tensor,  # [B]
    ref_chosen_logps: torch.Tensor,  # [B]
    ref_rejected_logps: torch.Tensor,  # [B]
    beta: float,
) -> PairLossOutput:
    """DPO: -log sigmoid(beta * (chosen log-ratio - rejected log-ratio))."""
    _check_same_shape(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    beta = check_beta(beta)
    chosen = beta * (policy_chosen_logps - ref_chosen_logps)  # [B]
    rejected = beta * (policy_rejected_logps - ref_rejected_logps)  # [B]
    losses = -F.logsigmoid(chosen - rejected)
    return PairLossOutput(losses, chosen.detach(), rejected.detach())


def simpo_loss(
    policy_chosen_logps: torch.Tensor,  # [B] summed over tokens
    policy_rejected_logps: torch.Tensor,  # [B]
    chosen_lengths: torch.Tensor,  # [B] completion tokens
    rejected_lengths: torch.Tensor,  # [B]
    beta: float,
    gamma: float,
) -> PairLossOutput:
    """SimPO: -log sigmoid(beta * (mean-token log pi_w - mean-token log pi_l) - gamma); reference-free."""
    _check_same_shape(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        chosen_lengths=chosen_lengths,
        rejected_lengths=rejected_lengths,
    )
    beta = check_beta(beta)
    if bool((chosen_lengths <= 0).any() or (rejected_lengths <= 0).any()):
        raise ValueError("simpo_loss needs every completion to have at least one token")
    chosen = beta * policy_chosen_logps / chosen_lengths  # [B]
    rejected = beta * policy_rejected_logps / rejected_lengths  # [B]
    losses = -F.logsigmoid(chosen - rejected - gamma)
    return PairLossOutput(losses, chosen.detach(), rejected.detach())


def rebel_loss(
    policy_chosen_logps: torch.Tensor,  # [B]
    policy_rejected_logps: torch.Tensor,  # [B]
    ref_chosen_logps: torch.Tensor,  # [B]
    ref_rejected_logps: torch.Tensor,  # [B]
    chosen_rewards: torch.Tensor,  # [B] raw reward r_w
    rejected_rewards: torch.Tensor,  # [B] raw reward r_l
    beta: float,
) -> PairLossOutput:
    """REBEL: regress the log-ratio difference onto the reward difference / beta (squared error)."""
    _check_same_shape(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
        chosen_rewards=chosen_rewards,
        rejected_rewards=rejected_rewards,
    )
    beta = check_beta(beta)
    chosen = policy_chosen_logps - ref_chosen_logps  # [B] log-ratio of y_w
    rejected = policy_rejected_logps - ref_rejected_logps  # [B]
    losses = ((chosen_rewards - rejected_rewards) / beta - (chosen - rejected)).square()
    return PairLossOutput(losses, beta * chosen.detach(), beta * rejected.detach())
