"""Training objectives as the trainer sees them: one class per method, one shared contract.

The trainer computes policy log-probs of each pair and hands the algorithm a `PreferenceBatch`; the
algorithm returns per-pair losses [B] and detached scalar diagnostics. It never knows which method
it runs. A method is chosen by `conf/algorithm/<name>.yaml`, whose `_target_` names a class here.
The mathematics lives in `qrpo.losses`; these classes only pick the inputs each method needs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from qrpo.losses import LOSS_TYPES, dpo_loss, qrpo_loss_from_quantiles, rebel_loss, simpo_loss
from qrpo.quantiles import clamp_quantiles
from qrpo.transforms import check_beta, get_transform


@dataclass
class PreferenceBatch:
    policy_chosen_logps: torch.Tensor  # [B] summed over completion tokens
    policy_rejected_logps: torch.Tensor  # [B]
    ref_chosen_logps: torch.Tensor  # [B]
    ref_rejected_logps: torch.Tensor  # [B]
    chosen_lengths: torch.Tensor  # [B] completion tokens
    rejected_lengths: torch.Tensor  # [B]
    chosen_rewards: torch.Tensor  # [B] raw rewards
    rejected_rewards: torch.Tensor  # [B]
    chosen_quantiles: torch.Tensor  # [B] empirical quantiles among num_ref reference rewards
    rejected_quantiles: torch.Tensor  # [B]
    num_ref: torch.Tensor  # [B] M per example


class Algorithm(ABC):
    name: str
    needs_reference: bool = True  # False: the trainer may skip reference log-probs

    @abstractmethod
    def __call__(self, batch: PreferenceBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """(per-pair losses [B], diagnostics averaged over the batch)."""

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


def _mean(x: torch.Tensor) -> float:
    return float(x.detach().float().mean())


class QRPO(Algorithm):
    """Pointwise regression on both completions of each pair (the pair is just two data points)."""

    name = "qrpo"

    def __init__(self, beta: float, transform: str = "identity", loss_type: str = "mse", **transform_params):
        self.beta = check_beta(beta)
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"algorithm.loss_type={loss_type!r} is not one of {', '.join(LOSS_TYPES)}")
        self.transform_name, self.loss_type = transform, loss_type
        self._transform = get_transform(transform, **transform_params)

    def _pointwise(self, policy_logps, ref_logps, quantiles, num_ref):
        if self._transform.open_interval:
            quantiles = clamp_quantiles(quantiles, num_ref)
        return qrpo_loss_from_quantiles(policy_logps, ref_logps, quantiles, self.beta, self._transform, self.loss_type)

    def __call__(self, batch):
        chosen = self._pointwise(batch.policy_chosen_logps, batch.ref_chosen_logps, batch.chosen_quantiles, batch.num_ref)
        rejected = self._pointwise(batch.policy_rejected_logps, batch.ref_rejected_logps, batch.rejected_quantiles, batch.num_ref)
        losses = 0.5 * (chosen.losses + rejected.losses)  # [B]
        return losses, {
            "chosen_implicit_reward": _mean(chosen.implicit_rewards),
            "rejected_implicit_reward": _mean(rejected.implicit_rewards),
            "chosen_target": _mean(chosen.transformed_rewards) - chosen.beta_log_partition,
            "rejected_target": _mean(rejected.transformed_rewards) - rejected.beta_log_partition,
            "beta_log_partition": chosen.beta_log_partition,
            "residual_abs": 0.5 * (_mean(chosen.residuals.abs()) + _mean(rejected.residuals.abs())),
        }


class DPO(Algorithm):
    name = "dpo"

    def __init__(self, beta: float):
        self.beta = check_beta(beta)

    def __call__(self, batch):
        out = dpo_loss(batch.policy_chosen_logps, batch.policy_rejected_logps, batch.ref_chosen_logps, batch.ref_rejected_logps, self.beta)
        return out.losses, _pair_metrics(out)


class SimPO(Algorithm):
    name = "simpo"
    needs_reference = False

    def __init__(self, beta: float, gamma_beta_ratio: float = 0.5):
        self.beta = check_beta(beta)
        self.gamma_beta_ratio = float(gamma_beta_ratio)

    def __call__(self, batch):
        out = simpo_loss(
            batch.policy_chosen_logps, batch.policy_rejected_logps, batch.chosen_lengths, batch.rejected_lengths,
            self.beta, self.gamma_beta_ratio * self.beta,
        )
        return out.losses, _pair_metrics(out)


class REBEL(Algorithm):
    name = "rebel"

    def __init__(self, beta: float):
        self.beta = check_beta(beta)

    def __call__(self, batch):
        out = rebel_loss(
            batch.policy_chosen_logps, batch.policy_rejected_logps, batch.ref_chosen_logps, batch.ref_rejected_logps,
            batch.chosen_rewards, batch.rejected_rewards, self.beta,
        )
        return out.losses, _pair_metrics(out)


class SFT(Algorithm):
    """Supervised fine-tuning on the chosen completions (mean token negative log-likelihood)."""

    name = "sft"
    needs_reference = False

    def __init__(self, beta: float | None = None):  # beta is accepted, and unused, so sweeps compose
        self.beta = beta

    def __call__(self, batch):
        losses = -batch.policy_chosen_logps / batch.chosen_lengths
        return losses, {"chosen_nll_per_token": _mean(losses)}


def _pair_metrics(out) -> dict[str, float]:
    margin = out.chosen_rewards - out.rejected_rewards
    return {
        "chosen_implicit_reward": _mean(out.chosen_rewards),
        "rejected_implicit_reward": _mean(out.rejected_rewards),
        "implicit_margin": _mean(margin),
        "implicit_accuracy": _mean((margin > 0).float()),
    }
