"""Compose the Hydra config from a list of overrides: the one path shared by the CLI, `--multirun`
jobs and Prefect deployment runs (which receive the overrides as their parameter)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from qrpo.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "conf"
CONFIG_NAME = "config"

if not OmegaConf.has_resolver("repo_root"):
    OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT))


def compose_config(overrides: list[str], resolve: bool = True) -> dict:
    """The resolved experiment config (a plain dict, `hydra` section dropped) for these overrides; with
    `resolve=False`, regime=auto stays as composed (`resolve_auto_regime` reads the algorithm's class)."""
    try:
        if GlobalHydra.instance().is_initialized():  # inside `qrpo-pipeline` (hydra.main) already
            cfg = compose(config_name=CONFIG_NAME, overrides=list(overrides))
        else:
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                cfg = compose(config_name=CONFIG_NAME, overrides=list(overrides))
        config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except (HydraException, OmegaConfBaseException) as err:
        message = " ".join(str(err).split()).split(" Config search path")[0]
        raise InputError(f"bad config override in {list(overrides)}: {message}") from None
    config.pop("hydra", None)
    return resolve_auto_regime(config) if resolve else config


def resolve_auto_regime(config: dict) -> dict:
    """regime=auto (the default): pointwise for a method that learns from single completions (QRPO), with
    `leave_one_out` as set; best_worst for the pair methods (DPO, SimPO, REBEL, SFT), `leave_one_out` off.
    Resolved here, at compose time, so every step, artifact key and MLflow param sees the concrete regime."""
    regime, algorithm = config.get("regime") or {}, config.get("algorithm") or {}
    if regime.get("name") != "auto":
        return config
    from qrpo.config.binding import locate

    needs_pairs = getattr(locate("algorithm._target_", algorithm.get("_target_")), "needs_pairs", True)
    leave_one_out = regime.get("leave_one_out", False)
    if needs_pairs and isinstance(leave_one_out, bool):  # anything but a bool stays, for the type check to name
        leave_one_out = False
    name = "best_worst" if needs_pairs else "pointwise"
    target = OmegaConf.load(CONFIG_DIR / "regime" / f"{name}.yaml")["_target_"]  # as regime=<name> would compose it
    config["regime"] = {**regime, "name": name, "_target_": target, "leave_one_out": leave_one_out}
    return config
