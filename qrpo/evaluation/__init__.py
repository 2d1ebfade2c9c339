"""Evaluation of a trained policy, as the paper does it.

- `logratios`: the `eval_logps` step (log pi and log pi_ref of the policy's samples); `evaluate`: the
  `evaluate` step (metrics of both halves, the per-sample table); `report`: the `report` step (plots,
  summary, per-prompt means).
- `metrics`: reward, gain over the reference with its 95% interval, win rate and reference quantile,
  length, KL (k1, k3), length-controlled reward; mean and standard error over seeds and prompts, on a
  selection half and a reporting half of the eval prompts.
- `alpaca_eval`: AlpacaEval 2 (length-controlled and raw win rates) through the `alpaca_eval` library,
  with any OpenAI-compatible judge.
- `leetcode`: pass rate and full-pass rate of code solutions, overall and per difficulty.
- `paired`: arm against arm on the same prompts: paired differences with 95% intervals, Holm-adjusted
  p-values, and the minimum detectable difference at 80% power.
- `frontier`: each method's reward at one common KL along its sweep frontier, with a bootstrap interval.
"""

from qrpo.evaluation.evaluate import evaluate  # noqa: F401
from qrpo.evaluation.metrics import (  # noqa: F401
    evaluate_halves, evaluation_metrics, gain_in_words, kl_estimates, length_controlled_rewards, sample_quantiles, split_halves,
)
from qrpo.evaluation.leetcode import pass_rates, pass_rates_by_half as leetcode_metrics  # noqa: F401
from qrpo.evaluation.selection import select_run  # noqa: F401
