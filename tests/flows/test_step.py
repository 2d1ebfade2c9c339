"""The one-step flow's dispatch table and the `dispatch` section's checks (no Prefect server here; the
real two-pool run is tests/ops/test_step_dispatch.py)."""

import inspect
import re

import pytest

from flows import tasks
from flows.cli import run
from flows.config import compose_config
from flows.step import STEPS, check_shared_store, dispatch_section, qrpo_step, step_runners
from qrpo.errors import InputError


def test_the_dispatch_table_is_exactly_the_steps_dispatch_steps_may_name():
    default = compose_config([])["dispatch"]
    assert default == {"pool": None, "steps": ["sample", "score", "ref_logps", "train", "eval_logps"]}
    assert list(STEPS) == default["steps"]
    assert all(STEPS[name] is getattr(tasks, name) for name in STEPS)  # the pipeline's own tasks, no copies
    for name in STEPS:  # each one accepted on its own
        assert dispatch_section({"dispatch": {"pool": "gpu", "steps": [name]}}) == ("gpu", [name])
    for name in ("prepare_model", "training_data", "evaluate", "sample_shard", "report"):
        with pytest.raises(InputError, match=re.escape(f"dispatch.steps: {name!r} is not one of")):
            dispatch_section({"dispatch": {"pool": "gpu", "steps": [name]}})


def test_without_a_pool_the_pipeline_runs_its_own_tasks_and_with_one_same_named_remote_tasks():
    config = compose_config(["experiment=smoke"])
    local = step_runners(config, ["experiment=smoke"])
    assert all(getattr(local, name) is task for name, task in STEPS.items())
    config["dispatch"] = {"pool": "gpu", "steps": ["train", "eval_logps"]}
    remote = step_runners(config, ["experiment=smoke", "dispatch.pool=gpu"])
    for name, task in STEPS.items():
        runner = getattr(remote, name)
        if name in ("train", "eval_logps"):
            assert runner is not task and runner.name == task.name  # same task name in the pipeline's graph
            assert inspect.signature(runner.fn) == inspect.signature(task.fn)  # upstream states bind to the same names
        else:
            assert runner is task


def test_dispatch_pool_without_a_prefect_server_is_one_line_and_exit_2(qrpo_home, capsys, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}), pytest.raises(SystemExit) as exit_info:
        run(["experiment=smoke", "dispatch.pool=gpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: dispatch.pool=gpu needs a Prefect server") and "PREFECT_API_URL is not set" in err
    assert "\n" not in err and not qrpo_home.exists()


def test_dispatch_pool_with_an_unreachable_server_is_one_line(qrpo_home, capsys):
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from tests.ops.conftest import free_port

    api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    with temporary_settings({PREFECT_API_URL: api, PREFECT_CLIENT_MAX_RETRIES: 0}), pytest.raises(SystemExit) as exit_info:
        run(["experiment=smoke", "dispatch.pool=gpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: dispatch.pool=gpu: cannot read deployment qrpo-step/qrpo-step-gpu from the Prefect server at {api}")
    assert "\n" not in err and not qrpo_home.exists()


def test_the_step_flow_refuses_an_unknown_step_before_composing_anything(qrpo_home):
    with pytest.raises(InputError, match=r"^step='prepare_model' is not one of sample, score, ref_logps, train, eval_logps$"):
        qrpo_step.fn("prepare_model", ["experiment=smoke"], {})
    assert not qrpo_home.exists()


def test_a_step_made_on_a_worker_with_another_artifact_store_is_one_clear_error(tmp_path):
    """dispatch.pool with a local artifact_root the step's worker does not share: the pipeline says so
    where it reads the step's key back, not with a missing file in some later step."""
    from qrpo.store.artifacts import ArtifactStore

    artifact, _ = ArtifactStore(tmp_path / "shared").get_or_build("train", 2, {}, {}, lambda out, _: {"steps": 1})
    check_shared_store(ArtifactStore(str(tmp_path / "shared")), "train", artifact.key, "a run")  # there: no error
    with pytest.raises(InputError, match=re.escape(f"step train ran as a run and made artifact train/{artifact.key}, but this "
                                                   f"process's artifact store {tmp_path / 'elsewhere'} does not have it")):
        check_shared_store(ArtifactStore(str(tmp_path / "elsewhere")), "train", artifact.key, "a run")
