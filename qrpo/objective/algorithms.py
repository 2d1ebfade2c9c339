"""Training objectives as the trainer sees them: one class per method, one shared contract.

The trainer computes the policy's log-probs of every completion in a micro-batch in one forward pass
and hands the algorithm either a `PairBatch` (chosen/rejected pairs) or a `PointwiseBatch` (single
completions, QRPO's native regime). The algorithm returns per-example losses [B] and per-example
detached diagnostics ({name: [B]}); the trainer averages both, so it never knows which method it runs.

A method is chosen by `conf/algorithm/<name>.yaml`, whose `_target_` names a class here. The
mathematics lives in `qrpo.objective.losses`; these classes only pick the inputs each method needs and declare
what it needs (`needs_reference`, `needs_pairs`), which the pipeline checks before any work.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields

import torch

from qrpo.config.binding import keyword_parameters
from qrpo.errors import UnknownKeyError
from qrpo.objective.losses import LOSS_TYPES, dpo_loss, qrpo_loss_from_quantiles, rebel_loss, simpo_loss
from qrpo.objective.optimum import beta_for_kl, beta_for_quantile, optimum_stats
from qrpo.objective.transforms import check_beta, get_transform, transform_parameters


@dataclass
class PairBatch:
    """B pairs (y_w preferred to y_l) of the same prompt. Every tensor is [B] on the policy's device."""

    policy_chosen_logps: torch.Tensor  # log pi_theta(y_w|x), summed over completion tokens
    policy_rejected_logps: torch.Tensor
    ref_chosen_logps: torch.Tensor | None  # log pi_ref(y_w|x); None when the method is reference-free
    ref_rejected_logps: torch.Tensor | None
    chosen_lengths: torch.Tensor  # completion tokens
    rejected_lengths: torch.Tensor
    chosen_rewards: torch.Tensor  # raw rewards
    rejected_rewards: torch.Tensor
    chosen_quantiles: torch.Tensor  # empirical quantiles among num_ref reference rewards
    rejected_quantiles: torch.Tensor
    num_ref: torch.Tensor  # M per example

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}



@dataclass
class PointwiseBatch:
    """B single completions, each with its own reward and quantile. Every tensor is [B] on the policy's device."""

    policy_logps: torch.Tensor  # log pi_theta(y|x)
    ref_logps: torch.Tensor | None  # log pi_ref(y|x)
    lengths: torch.Tensor
    rewards: torch.Tensor
    quantiles: torch.Tensor
    num_ref: torch.Tensor

    tensors = PairBatch.tensors


class Algorithm(ABC):
    name: str
    needs_reference: bool = True  # False: no reference log-probs are computed for it
    needs_pairs: bool = True  # False: it also trains on single completions (regime=pointwise)

    @abstractmethod
    def __call__(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(per-example losses [B] with gradient, per-example detached diagnostics {name: [B]})."""

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


def _pair_diagnostics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, torch.Tensor]:
    """Implicit rewards of both sides [B], their margin, and whether the margin is positive."""
    margin = chosen - rejected
    return {
        "chosen_implicit_reward": chosen,
        "rejected_implicit_reward": rejected,
        "implicit_margin": margin,
        "implicit_accuracy": (margin > 0).to(margin.dtype),
    }


class QRPO(Algorithm):
    """Pointwise regression of beta log(pi_theta/pi_ref) onto f(q) - beta log Z_f(beta).

    On a `PointwiseBatch` every completion is one example; on a `PairBatch` the pair is just two data
    points (loss = the mean of the two). Quantiles are moved inside (0, 1) only where f is infinite.
    """

    name = "qrpo"
    needs_pairs = False

    def __init__(self, beta: float | None = None, transform: str = "identity", loss_type: str = "mse",
                 kl_budget: float | None = None, target_quantile: float | None = None, **transform_params):
        """beta directly, or from a budget: `kl_budget` (nats: KL(pi* || pi_ref) of the optimum) or
        `target_quantile` (E_{pi*}[q] of the optimum), solved for the transform (qrpo.objective.optimum); either
        one, when given, replaces `beta`."""
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"algorithm.loss_type={loss_type!r} is not one of {', '.join(LOSS_TYPES)}")
        self.transform_name, self.loss_type = transform, loss_type
        if isinstance(transform, str):  # its parameters (mu, sigma) sit beside QRPO's own keys: a typo is neither
            known = transform_parameters(transform)
            if unknown := [key for key in transform_params if key not in known]:
                raise UnknownKeyError("algorithm", unknown, [*keyword_parameters(QRPO.__init__)[0], *known])
        self._transform = get_transform(transform, **transform_params)
        if kl_budget is not None and target_quantile is not None:
            raise ValueError("give algorithm.kl_budget or algorithm.target_quantile, not both")
        if kl_budget is not None:
            beta = beta_for_kl(self._transform, kl_budget)
        elif target_quantile is not None:
            beta = beta_for_quantile(self._transform, target_quantile)
        elif beta is None:
            raise ValueError("QRPO needs algorithm.beta, algorithm.kl_budget or algorithm.target_quantile")
        self.beta = check_beta(beta)
        self.kl_budget, self.target_quantile = kl_budget, target_quantile

    def optimum(self) -> dict[str, float]:
        """The optimum pi*'s KL to pi_ref and expected quantile at this beta: the same for every prompt,
        to report beside the measured KL and quantile (how far training got towards pi*)."""
        stats = optimum_stats(self._transform, self.beta)
        return {"beta": self.beta, "optimum_kl": stats.kl, "optimum_expected_quantile": stats.expected_quantile}

    def _pointwise(self, policy_logps, ref_logps, quantiles, num_ref, prefix=""):
        out = qrpo_loss_from_quantiles(
            policy_logps, ref_logps, self._transform.clamp(quantiles, num_ref), self.beta, self._transform, self.loss_type
        )
        target = out.transformed_rewards - out.beta_log_partition
        diagnostics = {
            f"{prefix}quantile": out.quantiles,
            f"{prefix}transformed_reward": out.transformed_rewards,
            f"{prefix}target": target,
            f"{prefix}implicit_reward": out.implicit_rewards,
            f"{prefix}residual": out.residuals,
            f"{prefix}residual_abs": out.residuals.abs(),
        }
        return out, diagnostics

    def __call__(self, batch):
        if isinstance(batch, PointwiseBatch):
            out, diagnostics = self._pointwise(batch.policy_logps, batch.ref_logps, batch.quantiles, batch.num_ref)
            losses = out.losses
        else:
            chosen, d_chosen = self._pointwise(
                batch.policy_chosen_logps, batch.ref_chosen_logps, batch.chosen_quantiles, batch.num_ref, "chosen_")
            rejected, d_rejected = self._pointwise(
                batch.policy_rejected_logps, batch.ref_rejected_logps, batch.rejected_quantiles, batch.num_ref, "rejected_")
            losses = 0.5 * (chosen.losses + rejected.losses)  # [B]
            diagnostics = {**d_chosen, **d_rejected, **_pair_diagnostics(chosen.implicit_rewards, rejected.implicit_rewards)}
            diagnostics["residual_abs"] = 0.5 * (d_chosen["chosen_residual_abs"] + d_rejected["rejected_residual_abs"])
            out = chosen
        diagnostics["beta_log_partition"] = torch.full_like(losses.detach(), out.beta_log_partition)
        return losses, diagnostics


class DPO(Algorithm):
    name = "dpo"

    def __init__(self, beta: float):
        self.beta = check_beta(beta)

    def __call__(self, batch):
        out = dpo_loss(batch.policy_chosen_logps, batch.policy_rejected_logps, batch.ref_chosen_logps, batch.ref_rejected_logps, self.beta)
        return out.losses, _pair_diagnostics(out.chosen_rewards, out.rejected_rewards)


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
        return out.losses, _pair_diagnostics(out.chosen_rewards, out.rejected_rewards)


class REBEL(Algorithm):
    name = "rebel"

    def __init__(self, beta: float):
        self.beta = check_beta(beta)

    def __call__(self, batch):
        out = rebel_loss(
            batch.policy_chosen_logps, batch.policy_rejected_logps, batch.ref_chosen_logps, batch.ref_rejected_logps,
            batch.chosen_rewards, batch.rejected_rewards, self.beta,
        )
        return out.losses, _pair_diagnostics(out.chosen_rewards, out.rejected_rewards)


class SFT(Algorithm):
    """Supervised fine-tuning on the chosen (best) completions: mean token negative log-likelihood."""

    name = "sft"
    needs_reference = False

    def __init__(self, beta: float | None = None):  # beta is accepted, and unused, so sweeps compose
        self.beta = beta

    def __call__(self, batch):
        losses = -batch.policy_chosen_logps / batch.chosen_lengths
        return losses, {"chosen_nll_per_token": losses.detach()}
