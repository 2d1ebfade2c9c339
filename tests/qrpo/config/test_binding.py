"""`_target_` binding (qrpo/config/binding.py): every choice in conf/ is a `_target_` that imports and is of its
section's family, your own importable function replaces a built-in, and a bad path is one InputError
naming the key."""

import sys
import textwrap

import pytest

from flows.config import CONFIG_DIR, compose_config
from qrpo.config.binding import build, build_algorithm, check_target, declares, locate
from qrpo.config.sections import ModelConfig, RegimeConfig, RewardConfig, SamplerConfig, build_section
from qrpo.errors import InputError, UnknownKeyError
from qrpo.rewards import VaderReward, build_reward

FAMILIES = {"model": ModelConfig, "sampler": SamplerConfig, "reward": RewardConfig, "regime": RegimeConfig}


@pytest.mark.parametrize("group", sorted(FAMILIES))
def test_every_config_file_names_a_target_of_its_own_family(group):
    for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
        if path.stem == "auto":  # resolved to pointwise or best_worst when composed (tests/flows/test_regimes.py)
            continue
        overrides = [f"{group}={path.stem}"] + (["model.path=/tmp"] if path.stem == "pretrained" else [])
        section = build_section(FAMILIES[group], compose_config(overrides)[group])
        target = locate(f"{group}._target_", section._target_)
        owner = getattr(target, "__self__", target)
        assert callable(target) and getattr(owner, section.FAMILY) == getattr(section, section.FAMILY), path


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


def test_the_target_alone_chooses_what_is_built():
    assert isinstance(build("reward", RewardConfig(name="v", kind="vader", _target_="qrpo.rewards.vader.VaderReward.from_config")),
                      VaderReward)
    model, tokenizer = build("model", ModelConfig(name="t", source="config", _target_="qrpo.models.TinyModel.load", architecture={
        "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}))
    assert model.config.hidden_size == 16 and tokenizer.chat_template
    with pytest.raises(InputError, match="reward._target_ is empty"):
        build_section(RewardConfig, {"name": "v", "kind": "vader"})


def test_a_target_must_be_of_its_sections_family():
    judge = build_section(RewardConfig, {"name": "x", "kind": "vader", "_target_": "qrpo.rewards.judge.JudgeReward.from_config"})
    with pytest.raises(InputError, match="builds reward.kind=judge, not vader"):
        check_target("reward", judge)
    regime = build_section(RegimeConfig, {"name": "best_worst", "_target_": "qrpo.data.regimes.Pointwise"})
    with pytest.raises(InputError, match="builds regime.name=pointwise, not best_worst"):
        check_target("regime", regime)
    check_target("reward", build_section(RewardConfig, {"name": "x", "kind": "vader", "_target_": f"{__name__}._PassRateReward.from_config"}))


def test_a_target_runs_its_own_checks_before_any_work():
    gguf = build_section(ModelConfig, {"name": "m", "source": "gguf", "_target_": "qrpo.models.GGUFModel.load", "package": "no_such_pkg",
                                       "file": "x.gguf"})
    with pytest.raises(InputError, match="model.package='no_such_pkg' is not installed"):
        check_target("model", gguf)
    tiny = build_section(ModelConfig, {"name": "m", "source": "config", "_target_": "qrpo.models.TinyModel.load",
                                       "architecture": {"hidden_sze": 8}})
    with pytest.raises(InputError, match="model.architecture has no field 'hidden_sze'"):
        check_target("model", tiny)


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
    def reward(kind):
        return build_section(RewardConfig, compose_config([f"reward={kind}"])["reward"])

    assert declares("reward", reward("code_tests"), "yields_pass_rates") is True
    assert declares("reward", reward("vader"), "yields_pass_rates") is False
    assert declares("reward", reward("armorm"), "yields_pass_rates") is False  # a plain function
    own = RewardConfig(name="r", kind="callable", _target_=f"{__name__}._PassRateReward.from_config")
    assert declares("reward", own, "yields_pass_rates") is True, "a reward of your own gets LeetCode metrics by declaring it"
