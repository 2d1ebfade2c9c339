"""Each task receives the typed sections it reads (never the whole config), and its artifact key hashes exactly
the config the step reads, as composed. Keys changed deliberately twice: the train key holds the precision
`precision=auto` resolved to (qrpo/precision.py), and every key with the one-name-per-step change (issue 17:
artifact folders named after their step, `_target_` always in the key)."""

import typing

import pytest

from flows import tasks
from flows.config import CONFIG_DIR, compose_config
from flows.step import config_arguments, config_parameters
from qrpo.store.artifacts import ArtifactStore, artifact_key
from qrpo.config.binding import build_algorithm
from qrpo.config.sections import (
    AlgorithmConfig, DatasetConfig, DistributedConfig, EvalConfig, ModelConfig, QuantileConfig, RegimeConfig, RewardConfig,
    SamplerConfig, Sections, TrainConfig, build_section, composed, typed_sections,
)
from qrpo.data import fingerprint
from qrpo.precision import resolve

TASKS = {name: obj for name, obj in vars(tasks).items() if hasattr(obj, "fn") and hasattr(obj, "submit")}
SECTION_PARAMETERS = {"model": ModelConfig, "dataset": DatasetConfig, "sampler": SamplerConfig, "reward": RewardConfig,
                      "quantiles": QuantileConfig, "regime": RegimeConfig, "train": TrainConfig, "distributed": DistributedConfig,
                      "evals": EvalConfig, "algorithm": AlgorithmConfig}
INPUT_DICTS = {"source", "params", "scored_by_seed"}  # artifact references and sampling numbers, not config


def test_every_task_takes_its_typed_sections_and_the_store_never_the_config():
    assert {"prepare_model", "load_dataset", "sample", "sample_shard", "score", "offline_samples", "training_data", "ref_logps",
            "train", "eval_logps", "evaluate", "load_alpaca_eval", "alpaca_eval", "report"} <= set(TASKS)
    for name, task in TASKS.items():
        hints = {k: v for k, v in typing.get_type_hints(task.fn).items() if k != "return"}
        for parameter, hint in hints.items():
            assert parameter != "config", f"{name} takes the whole config again"
            assert hint is not Sections, f"{name}.{parameter}: a task takes its own sections, not the bundle"
            if parameter in SECTION_PARAMETERS:
                assert hint is SECTION_PARAMETERS[parameter], f"{name}.{parameter} is {hint}, not {SECTION_PARAMETERS[parameter]}"
            elif typing.get_origin(hint) is dict or hint is dict:
                assert parameter in INPUT_DICTS, f"{name}.{parameter}: a dict parameter (config again?)"
        config_params = config_parameters(task.fn)
        assert ArtifactStore in config_params.values() and len(config_params) >= 2, f"{name}: {config_params}"


def test_a_remote_step_sends_only_json_and_its_worker_fills_the_sections_back_in(qrpo_home):
    sections, store = typed_sections(compose_config(["experiment=smoke"])), ArtifactStore()
    filled = config_arguments(tasks.train.fn, sections, store)
    assert filled == {"algorithm": sections.algorithm, "train": sections.train, "distributed": sections.distributed, "store": store,
                      "executor": sections.executor}  # issue 20: distributed.launcher=ray reaches the cluster of executor.address
    assert set(config_arguments(tasks.evaluate.fn, sections, store)) == {"evals", "reward", "store"}


def expected_subsets(config: dict) -> dict:
    """What each step's key should hash, written out from the composed config."""
    evals, regime = config["eval"], build_section(RegimeConfig, config["regime"])
    sampler, ties = build_section(SamplerConfig, config["sampler"]), build_section(QuantileConfig, config["quantiles"]).ties
    pass_rates = config["reward"]["kind"] == "code_tests"  # the one built-in reward that yields pass rates
    return {
        "prepare_model": config["model"],
        "load_dataset": {**config["dataset"], "path": None, "data_files": None},  # + the data's sha256
        "score": config["reward"],
        "offline_samples": {"offline": [regime.chosen_column, regime.rejected_column]},
        "training_data": {"regime": config["regime"], "num_train_samples": sampler.num_train_samples,
                          "num_ref_samples": sampler.num_ref_samples, "ties": ties},
        # conf/distributed/ gained `launcher: accelerate` with issue 20; the train key leaves that default out
        "train": {"algorithm": config["algorithm"], "train": config["train"],
                  "distributed": {k: v for k, v in config["distributed"].items() if k != "launcher"},
                  "precision": resolve(config["train"]["mixed_precision"])},
        "evaluate": {k: evals.get(k) for k in ("split_seed", "lc_fit_on")} | {"pass_rates": pass_rates},
    }


class Recorded(Exception):
    pass


class RecordingStore(ArtifactStore):
    """Records what a task asks the store for, and stops the task there (no model, no data)."""

    def get_or_build(self, step, version, config, inputs, build):
        raise Recorded(step, version, config, inputs)


def requested(call) -> tuple:
    with pytest.raises(Recorded) as info:
        call()
    return info.value.args


@pytest.mark.parametrize("overrides", [
    ["experiment=smoke"],
    ["experiment=smoke", "algorithm=dpo"],
    ["experiment=smoke", "regime=offline", "regime.chosen_column=good"],
    ["experiment=code", "algorithm=simpo", "distributed=ddp", "quantiles.ties=mid", "eval.split_seed=3"],
    ["algorithm=rebel", "reward=judge", "sampler=vllm", "train.mixed_precision=no"],
    ["experiment=smoke", "reward._target_=qrpo.rewards.vader.VaderReward.from_config", "reward.kind=vader"],
], ids=lambda o: " ".join(o))
def test_each_task_hashes_exactly_the_config_its_step_reads(overrides, qrpo_home):
    config = compose_config(overrides)
    s, store, expected_of = typed_sections(config), RecordingStore(qrpo_home / "a"), expected_subsets(config)
    run = "no-run"
    calls = {  # the store refuses every input read, so each call stops at the key (RecordingStore)
        "prepare_model": lambda: tasks.prepare_model.fn(s.model, store, run),
        "load_dataset": lambda: tasks.load_dataset.fn(s.dataset, store, run),
        "score": lambda: tasks.score.fn(s.reward, store, "samples-key", "dataset-key", run, "train"),
        "offline_samples": lambda: tasks.offline_samples.fn(s.regime, store, "model-key", "dataset-key", "samples-key", run),
        "training_data": lambda: tasks.training_data.fn(s.sampler, s.regime, s.quantiles, store, "rewards-key", run),
        "train": lambda: tasks.train.fn(s.algorithm, s.train, s.distributed, store, "model-key", "ref_logps", "ref-key", run),
        "evaluate": lambda: tasks.evaluate.fn(s.eval, s.reward, store, "logps-key", "ref-key", "dataset-key", run),
    }
    for name, call in calls.items():
        step, version, subset, inputs = requested(call)
        expected = dict(expected_of[name], sha256=fingerprint(s.dataset)) if name == "load_dataset" else expected_of[name]
        assert step == name and subset == expected, name
    # the sections the keys read are the composed mappings themselves, defaults not filled in
    for field in ("model", "dataset", "sampler", "reward", "quantiles", "regime", "train", "distributed", "eval", "algorithm"):
        assert composed(getattr(s, field)) == config[field], field


def test_the_smoke_keys_of_the_config_only_steps_do_not_drift(qrpo_home):
    """Frozen from `qrpo-pipeline experiment=smoke` after the one-name-per-step change: a key that moves
    makes every user's cache miss, so it moves only on purpose (a step's version)."""
    s = typed_sections(compose_config(["experiment=smoke"]))
    store = RecordingStore(qrpo_home / "a")
    assert artifact_key(*requested(lambda: tasks.prepare_model.fn(s.model, store, "r"))) == "a8721efc7d60a1a6"
    assert artifact_key(*requested(lambda: tasks.load_dataset.fn(s.dataset, store, "r"))) == "ee39a1e31e0e0db2"


@pytest.mark.parametrize("group, option", [(g.name, o.stem) for g in sorted(CONFIG_DIR.iterdir()) if g.is_dir()
                                           for o in sorted(g.glob("*.yaml"))], ids=str)
def test_every_config_option_types_its_sections_and_gives_back_the_composed_mapping(group, option):
    config = compose_config([f"{group}={option}", *(["model.path=/some/folder"] if (group, option) == ("model", "pretrained") else [])])
    sections = typed_sections(config)
    for field in ("model", "dataset", "sampler", "reward", "quantiles", "regime", "train", "distributed", "eval", "algorithm"):
        assert composed(getattr(sections, field)) == config[field], field
    assert composed(sections.model) is not composed(sections.model)  # a copy: a task cannot change the next one's key


def test_a_section_made_by_hand_hashes_all_its_fields_and_the_algorithm_its_target_and_arguments():
    assert composed(RegimeConfig("offline", _target_="qrpo.data.regimes.Offline")) == {
        "name": "offline", "leave_one_out": False, "seed": 0, "chosen_column": "chosen", "rejected_column": "rejected",
        "_target_": "qrpo.data.regimes.Offline"}
    algorithm = AlgorithmConfig("qrpo.objective.algorithms.DPO", {"beta": 0.1})
    assert composed(algorithm) == {"_target_": "qrpo.objective.algorithms.DPO", "beta": 0.1}
    assert (algorithm.name, algorithm.method, algorithm.label) == ("dpo", "dpo", "DPO (β=0.1)")
    assert build_algorithm(algorithm).name == "dpo"


def test_the_algorithm_is_built_once_per_run(monkeypatch):
    """Validation builds it (to check its arguments and that it fits the regime); the pipeline (needs_reference),
    the train step and the summary (its optimum) ask for it again and get that same object."""
    import functools

    from flows.validate import load_config
    from qrpo.objective.algorithms import QRPO

    built, original = [], QRPO.__init__

    @functools.wraps(original)
    def counting(self, *args, **kwargs):
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(QRPO, "__init__", counting)
    _, sections = load_config(["experiment=smoke"])
    assert len(built) == 1
    assert build_algorithm(sections.algorithm) is built[0] and build_algorithm(sections.algorithm) is built[0]
    assert len(built) == 1
