"""The eval section: seeds as a Hydra list or a count, halves seed, AlpacaEval keys; bad values are one InputError."""

import pytest

from flows.config import compose_config
from flows.validate import validate
from qrpo.config.sections import EvalConfig, build_section
from qrpo.errors import InputError


def test_seeds_as_a_hydra_list_or_a_count():
    assert build_section(EvalConfig, compose_config(["eval.seeds=[1,2]"])["eval"]).seed_list == [1, 2]
    assert build_section(EvalConfig, compose_config(["eval.seeds=3", "eval.seed=10"])["eval"]).seed_list == [11, 12, 13]
    assert build_section(EvalConfig, compose_config([])["eval"]).seed_list == [1235]


@pytest.mark.parametrize("override, message", [
    ("eval.seeds=[1,1]", "distinct"), ("eval.seeds=[]", "non-empty"), ("eval.seeds=0", "non-empty"),
    ("eval.seeds=[a,b]", "integers"), ("eval.lc_fit_on=policy", "lc_fit_on"),
    ("+eval.alpaca_eval.judge=x", "eval.alpaca_eval.judge"), ("eval.alpaca_eval.max_new_tokens=0", "max_new_tokens"),
])
def test_bad_eval_settings_are_one_input_error(override, message):
    with pytest.raises(InputError, match=message):
        validate(compose_config(["experiment=smoke", override]))


def test_alpaca_eval_enabled_needs_instructions():
    with pytest.raises(InputError, match="instructions"):
        validate(compose_config(["eval.alpaca_eval.enabled=true", "eval.alpaca_eval.instructions="]))


def test_method_label_and_summary_wording():
    from flows.cli import format_summary
    from qrpo.config.sections import algorithm_section

    assert algorithm_section(compose_config(["algorithm=dpo", "algorithm.beta=0.1"])["algorithm"]).label == "DPO (β=0.1)"
    assert algorithm_section(compose_config(["algorithm=sft"])["algorithm"]).label == "SFT"
    metrics = {"reward_mean": 0.3, "ref_reward_mean": 0.1, "reward_gain": 0.2, "win_rate_vs_ref": 0.6, "kl_k1": 0.1,
               "kl_k3": 0.09, "length_mean": 20.0, "ref_length_mean": 19.0, "num_prompts": 1}
    summary = {"label": "DPO (β=0.1)", "metrics": {**metrics, "reward_gain_ci_low": float("nan"), "reward_gain_ci_high": float("nan")},
               "tracking_uri": "sqlite:///x.db", "mlflow_run_id": "r", "flow_run_id": "f", "cached_steps": []}
    text = format_summary(summary)
    assert text.splitlines()[1].startswith("DPO (β=0.1) finished") and "no interval" in text
    summary["metrics"].update(reward_gain_ci_low=0.05, reward_gain_ci_high=0.35)
    assert "95% interval [+0.0500, +0.3500]   a real gain" in format_summary(summary)
