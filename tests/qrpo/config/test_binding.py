"""`_target_` binding of models, samplers and rewards (qrpo/config/binding.py): conf/ names the built-in of each
choice, your own importable function replaces it, a bad path is one InputError naming the key, and a
`_target_` that only repeats the built-in leaves artifact cache keys as they were."""

import sys
import textwrap

import pytest

from flows.config import compose_config
from qrpo.config.binding import build, build_algorithm, cache_section, declares, locate, target_of
from qrpo.config.sections import MODEL_TARGETS, REWARD_TARGETS, SAMPLER_TARGETS, ModelConfig, RewardConfig, build_section
from qrpo.errors import InputError, UnknownKeyError
from qrpo.rewards import VaderReward, build_reward


@pytest.mark.parametrize("table", [MODEL_TARGETS, SAMPLER_TARGETS, REWARD_TARGETS])
def test_every_built_in_target_imports_and_is_callable(table):
    for target in table.values():
        assert callable(locate("x._target_", target))


@pytest.mark.parametrize("group, section, choice, table", [
    ("model", "model", "source", MODEL_TARGETS), ("sampler", "sampler", "backend", SAMPLER_TARGETS),
    ("reward", "reward", "kind", REWARD_TARGETS),
])
def test_every_config_file_names_the_built_in_of_its_choice(group, section, choice, table):
    from flows.config import CONFIG_DIR

    for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
        overrides = [f"{group}={path.stem}"] + (["model.path=/tmp"] if path.stem == "pretrained" else [])
        values = compose_config(overrides)[section]
        assert values["_target_"] == table[values[choice]], path


@pytest.mark.parametrize("target, message", [
    ("no_such_package.f", "reward._target_='no_such_package.f': no module 'no_such_package'"),
    ("qrpo.rewards.vader.Missing", "qrpo.rewards.vader has no attribute 'Missing'"),
    ("qrpo.rewards.vader.np", "is not a class or function"),
    ("", "must be a dotted path"),
])
def test_a_bad_target_is_one_input_error_naming_the_key(target, message):
    with pytest.raises(InputError, match=message):
        locate("reward._target_", target)


def test_a_target_of_your_own_replaces_the_built_in(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent("""
        from qrpo.rewards.vader import VaderReward

        class Shouty(VaderReward):
            def __init__(self, cfg):
                super().__init__()
                self.cfg = cfg
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = build_section(RewardConfig, {"name": "mine", "kind": "vader", "_target_": "my_rewards.Shouty"})
    reward = build_reward(cfg)
    assert type(reward).__name__ == "Shouty" and reward.cfg is cfg
    sys.modules.pop("my_rewards", None)


def test_an_empty_target_means_the_built_in_of_the_choice():
    assert target_of("reward", RewardConfig(name="v", kind="vader")) == REWARD_TARGETS["vader"]
    assert isinstance(build("reward", RewardConfig(name="v", kind="vader")), VaderReward)
    model, tokenizer = build("model", ModelConfig(name="t", source="config", architecture={
        "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}))
    assert model.config.hidden_size == 16 and tokenizer.chat_template


def test_a_built_in_target_must_match_its_choice():
    with pytest.raises(InputError, match="builds reward.kind=judge, not vader"):
        build_section(RewardConfig, {"name": "x", "kind": "vader", "_target_": REWARD_TARGETS["judge"]})


def test_naming_the_built_in_target_keeps_the_cache_key_of_the_section():
    section = compose_config(["reward=tiny_classifier"])["reward"]
    without = {k: v for k, v in section.items() if k != "_target_"}
    assert cache_section("reward", section) == without
    mine = {**section, "_target_": "my_rewards.Shouty"}
    assert cache_section("reward", mine) == mine
    model = compose_config(["model=tiny"])["model"]
    assert "_target_" not in cache_section("model", model) and "_target_" in model


class _Scaled:
    def __init__(self, beta: float, scale: float = 1.0):
        self.beta, self.scale = beta, scale


class _Open:
    def __init__(self, beta: float, **extra):
        self.beta, self.extra = beta, extra


def test_an_unknown_algorithm_key_is_named_with_the_valid_keys_of_its_class():
    target = f"{__name__}._Scaled"
    with pytest.raises(UnknownKeyError) as err:
        build_algorithm({"_target_": target, "beta": 0.1, "scal": 2.0})
    assert str(err.value) == "unknown key algorithm.scal; valid keys: beta, scale"
    assert build_algorithm({"_target_": target, "beta": 0.1, "scale": 2.0}).scale == 2.0


def test_a_class_taking_any_keyword_gets_every_key_and_a_missing_argument_names_the_target():
    built = build_algorithm({"_target_": f"{__name__}._Open", "beta": 0.1, "anything": 3})
    assert built.extra == {"anything": 3}
    with pytest.raises(InputError) as err:
        build_algorithm({"_target_": f"{__name__}._Scaled", "scale": 2.0})
    assert str(err.value).startswith(f"algorithm ({__name__}._Scaled): ") and "beta" in str(err.value)
    assert not isinstance(err.value, UnknownKeyError)


class _PassRateReward:
    yields_pass_rates = True

    @classmethod
    def from_config(cls, cfg):
        return cls()


def test_a_reward_declares_pass_rates_on_its_class_and_evaluation_reads_it_without_building():
    assert declares("reward", RewardConfig(name="r", kind="code_tests"), "yields_pass_rates") is True
    assert declares("reward", RewardConfig(name="r", kind="vader"), "yields_pass_rates") is False
    assert declares("reward", RewardConfig(name="r", kind="sequence_classifier"), "yields_pass_rates") is False  # a plain function
    own = RewardConfig(name="r", kind="callable", _target_=f"{__name__}._PassRateReward.from_config")
    assert declares("reward", own, "yields_pass_rates") is True, "a reward of your own gets LeetCode metrics by declaring it"
