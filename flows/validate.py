"""Check a composed config before any work starts: every section typed, each `_target_` importable,
the algorithm built, the dataset readable with its columns, the model source present, and (dispatch.pool
set) the Prefect server's step deployment. Raises one InputError; returns the typed sections
(`qrpo.config.sections.Sections`) that the flow hands its tasks."""

from __future__ import annotations

from typing import Callable, Optional

from flows.config import compose_config, resolve_auto_regime
from flows.dispatch import check_dispatch
from qrpo.config.binding import build_algorithm, check_target
from qrpo.config.sections import (
    DatasetConfig, DistributedConfig, EvalConfig, ModelConfig, QuantileConfig, RegimeConfig, RewardConfig, SamplerConfig,
    Sections, TrainConfig, build_section, check_precision, check_type, typed_sections,
)
from qrpo.errors import InputError

SECTIONS = {"model": ModelConfig, "dataset": DatasetConfig, "sampler": SamplerConfig, "reward": RewardConfig,
            "quantiles": QuantileConfig, "train": TrainConfig, "eval": EvalConfig,
            "regime": RegimeConfig, "distributed": DistributedConfig}


_handed: dict[tuple[str, ...], tuple[dict, Sections]] = {}  # checked by the front door, not yet run


def load_config(overrides: list[str], values_checked: Callable[[], None] | None = None) -> tuple[dict, Sections]:
    """The composed config and its typed sections for these overrides: the one function every way in
    (the CLI, a `--multirun` job, a deployment run, a `qrpo-step` run) composes and validates through.
    A config the front door has just checked and handed over (`hand_over`) is taken as it is, so a CLI
    run composes and validates once, not again inside the flow. `values_checked` is called once every
    value has its type and range (a bad override is answered before it), before the slower checks."""
    found = _handed.pop(tuple(overrides), None)
    if found is not None:
        return found
    config = compose_config(list(overrides), resolve=False)
    for name, cls in SECTIONS.items():  # the value checks first, before regime=auto imports the algorithm (and torch)
        if name != "regime":
            build_section(cls, config.get(name))
    if values_checked is not None:
        values_checked()
    config = resolve_auto_regime(config)
    return config, validate(config)


def hand_over(overrides: list[str], config: dict, sections: Sections) -> None:
    """Give the next `load_config(overrides)` in this process (the flow about to run) this checked config."""
    _handed[tuple(overrides)] = (config, sections)


def discard(overrides: list[str]) -> None:
    """Drop a handed-over config that no flow took (a sweep that stopped early)."""
    _handed.pop(tuple(overrides), None)


def _loaded_before(dataset: DatasetConfig, artifact_root: str | None) -> bool:
    """Whether the local artifact store holds the `load_dataset` artifact of exactly this data and dataset config
    (so it was read and checked when that artifact was made, and a re-run need not read it again)."""
    from qrpo import data
    from qrpo.store.artifacts import ArtifactStore

    store = ArtifactStore(artifact_root)
    if store.remote:
        return False
    try:
        request = data.load_dataset_request(dataset)
    except OSError:  # unreadable: reading the prompts says so in one line
        return False
    return store.lookup("load_dataset", data.LOAD_DATASET_VERSION, request, {}) is not None


def validate(config: dict) -> Sections:
    check_type("mlflow_experiment", config.get("mlflow_experiment"), str)
    if not config["mlflow_experiment"].strip():
        raise InputError("mlflow_experiment is empty; name the MLflow experiment (e.g. mlflow_experiment=qrpo)")
    check_type("artifact_root", config.get("artifact_root"), Optional[str])
    check_type("run_name", config.get("run_name"), Optional[str])
    check_precision("precision", config.get("precision"))
    sections = typed_sections(config)  # built once: the flow passes each task the sections it reads
    # the cheap checks first, and their imports here, not at the top: a bad value is answered before
    # transformers loads (the model, sampler and reward targets import it)
    from qrpo import data
    from qrpo.data.regimes import check_algorithm_fits

    check_algorithm_fits(sections.regime, build_algorithm(sections.algorithm))  # e.g. DPO on pointwise data
    if not _loaded_before(sections.dataset, config.get("artifact_root")):
        data.load_prompts(sections.dataset)  # columns, splits, JSON: all checked here
    for name in ("model", "sampler", "reward", "regime"):  # each `_target_` imports, is of its section's family, checks its keys
        check_target(name, getattr(sections, name))
    check_dispatch(config)  # dispatch.pool: the Prefect server and its step deployment, last (it asks the server)
    return sections
