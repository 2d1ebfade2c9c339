"""Every config composes, every section validates, every algorithm builds, every module imports."""

import importlib
import pkgutil

import pytest

import flows
import qrpo
from flows.config import CONFIG_DIR, compose_config
from flows.tasks import build_algorithm
from flows.validate import SECTIONS
from qrpo.config import build_section

GROUP_OPTIONS = [(group.name, option.stem) for group in sorted(CONFIG_DIR.iterdir()) if group.is_dir()
                 for option in sorted(group.glob("*.yaml"))]
NEEDS_PATH = {("model", "pretrained"): ["model.path=/some/folder"]}


@pytest.mark.parametrize("group, option", GROUP_OPTIONS, ids=lambda x: str(x))
def test_every_config_option_composes_and_its_sections_validate(group, option):
    config = compose_config([f"{group}={option}", *NEEDS_PATH.get((group, option), [])])
    for name, cls in SECTIONS.items():
        build_section(cls, config[name])
    assert build_algorithm(config["algorithm"]).name in {"qrpo", "dpo", "simpo", "rebel", "sft"}


def test_every_yaml_starts_with_the_command_that_runs_it():
    for path in CONFIG_DIR.rglob("*.yaml"):
        first = path.read_text().splitlines()[0]
        if first.startswith("# @package"):
            first = path.read_text().splitlines()[1]
        assert first.startswith("# qrpo-pipeline"), path


@pytest.mark.parametrize("package", [qrpo, flows], ids=lambda p: p.__name__)
def test_every_module_imports(package):
    for module in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
        importlib.import_module(module.name)


def test_library_never_imports_prefect_or_hydra():
    for path in (CONFIG_DIR.parent / "qrpo").rglob("*.py"):
        text = path.read_text()
        assert "import prefect" not in text and "from prefect" not in text, path
        assert "import hydra" not in text and "from hydra" not in text, path
