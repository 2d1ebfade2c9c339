"""Every config composes, every section validates, every algorithm builds, every module imports."""

import importlib
import json
import math
import pkgutil
import re

import pytest

import flows
import qrpo
from flows.config import CONFIG_DIR, CONFIG_NAME, compose_config
from flows.sweep import sweep_jobs
from flows.tasks import build_algorithm
from flows.validate import SECTIONS, validate
from qrpo.config.sections import build_section
from qrpo.errors import InputError

GROUP_OPTIONS = [(group.name, option.stem) for group in sorted(CONFIG_DIR.iterdir()) if group.is_dir()
                 for option in sorted(group.glob("*.yaml"))]
NEEDS_PATH = {("model", "pretrained"): ["model.path=/some/folder"]}


@pytest.mark.parametrize("group, option", GROUP_OPTIONS, ids=lambda x: str(x))
def test_every_config_option_composes_and_its_sections_validate(group, option):
    config = compose_config([f"{group}={option}", *NEEDS_PATH.get((group, option), [])])
    for name, cls in SECTIONS.items():
        build_section(cls, config[name])
    assert build_algorithm(config["algorithm"]).name in {"qrpo", "dpo", "simpo", "rebel", "sft"}


SWEEP_PRESETS = sorted(path.stem for path in (CONFIG_DIR / "sweep").glob("*.yaml"))
_validated: dict[str, str] = {}  # a composed config (JSON) -> the error validating it raised ("" if none): each validated once


def sweeper_params(preset: str) -> dict[str, str]:
    """`hydra.sweeper.params` of `sweep=<preset>`, as Hydra composes it (compose_config drops the hydra section)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=CONFIG_NAME, overrides=[f"sweep={preset}"], return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=False) if cfg.hydra.sweeper.get("params") else {}


@pytest.fixture
def no_model_loading(monkeypatch):
    """Validation checks a model's source but never loads one: any load here fails the test."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError(f"config validation loaded a model or tokenizer: {args[:2]}")

    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        monkeypatch.setattr(cls, "from_pretrained", refuse)


@pytest.mark.parametrize("preset", SWEEP_PRESETS)
def test_every_sweep_job_composes_and_validates(preset, no_model_loading):
    """Every job of every conf/sweep/ grid (Hydra's own parser and BasicSweeper expand hydra.sweeper.params,
    as `--multirun sweep=<preset>` does), composed and validated as the sweep's front door does."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = sweeper_params(preset)
    assert params, f"conf/sweep/{preset}.yaml has no hydra.sweeper.params grid"
    parsed = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    sizes = {o.get_key_element(): len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1 for o in parsed}
    jobs = sweep_jobs([f"sweep={preset}"], params)
    assert len(jobs) == math.prod(sizes.values()) and len({tuple(job) for job in jobs}) == len(jobs), (preset, sizes, jobs)
    stated = re.search(r"(\d+) jobs", (CONFIG_DIR / "sweep" / f"{preset}.yaml").read_text().splitlines()[1])
    assert stated is None or int(stated.group(1)) == len(jobs), f"conf/sweep/{preset}.yaml says {stated.group(0)}; its grid has {len(jobs)}"
    for job in jobs:
        config, error = None, ""
        try:
            config = compose_config(job)
        except InputError as err:
            error = f"does not compose: {err}"
        if config is not None:
            key = json.dumps(config, sort_keys=True, default=str)
            if key not in _validated:
                try:
                    validate(config)
                    _validated[key] = ""
                except InputError as err:
                    _validated[key] = f"does not validate: {err}"
            error = _validated[key]
        if error:
            pytest.fail(f"conf/sweep/{preset}.yaml: job {job} {error}", pytrace=False)


def test_every_yaml_starts_with_the_command_that_runs_it():
    for path in CONFIG_DIR.rglob("*.yaml"):
        first = path.read_text().splitlines()[0]
        if first.startswith("# @package"):
            first = path.read_text().splitlines()[1]
        assert first.startswith(("# qrpo-pipeline", "# qrpo-plan")), path


@pytest.mark.parametrize("package", [qrpo, flows], ids=lambda p: p.__name__)
def test_every_module_imports(package):
    for module in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
        importlib.import_module(module.name)


def test_library_never_imports_prefect_or_hydra():
    for path in (CONFIG_DIR.parent / "qrpo").rglob("*.py"):
        text = path.read_text()
        assert "import prefect" not in text and "from prefect" not in text, path
        assert "import hydra" not in text and "from hydra" not in text, path
