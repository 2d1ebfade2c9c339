"""The eval section: seeds as a Hydra list or a count, halves seed, AlpacaEval keys; bad values are one InputError."""

import pytest

from flows.config import compose_config
from flows.validate import validate
from qrpo.config import EvalConfig, build_section
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
