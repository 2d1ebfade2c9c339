"""Shared fixtures: every test runs with its own QRPO_HOME (artifacts, MLflow SQLite) and offline."""

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the caches the code writes (datasets' Arrow files and locks, matplotlib's font list) go to one folder of
# this session, removed at its end, not to ~/.cache (a run puts them under QRPO_HOME: flows/__init__.py)
_CACHE = tempfile.mkdtemp(prefix="qrpo-tests-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.setdefault("HF_DATASETS_CACHE", os.path.join(_CACHE, "huggingface", "datasets"))
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_CACHE, "matplotlib"))


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need a CUDA device: without one each is skipped, saying so (run them with `make gpu-check`)."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False); `make gpu-check` runs it on a GPU machine")
        for item in gpu:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _torch_global_state_is_left_as_found():
    """A test that switches torch's global grad mode off (and leaves it so) would make every later training
    test fail far from the cause; this names the test that did it."""
    torch = sys.modules.get("torch")
    before = torch.is_grad_enabled() if torch else True
    yield
    torch = sys.modules.get("torch")
    if torch is not None and torch.is_grad_enabled() != before:
        torch.set_grad_enabled(before)
        pytest.fail(f"this test left torch's global grad mode {'off' if before else 'on'} (it was {'on' if before else 'off'}): "
                    "use `with torch.no_grad():` rather than torch.set_grad_enabled(...)")


@pytest.fixture
def qrpo_home(tmp_path, monkeypatch):
    """A private QRPO_HOME: artifacts under it, MLflow in sqlite under it."""
    home = tmp_path / "qrpo_home"
    monkeypatch.setenv("QRPO_HOME", str(home))
    monkeypatch.delenv("QRPO_ARTIFACT_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


@contextlib.contextmanager
def _transformers_serve(model_dir, log_path=None, env=None):
    """`transformers serve` (the CLI of this venv) on a free 127.0.0.1 port, serving `model_dir` offline;
    yields the OpenAI-compatible base URL (…/v1) once /health answers, and stops the server after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = Path(sys.executable).with_name("transformers")
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    server = subprocess.Popen([str(cli), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                              stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    tail = Path(log_path).read_text()[-2000:] if log_path else ""
                    raise RuntimeError(f"transformers serve did not start: {tail}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        server.wait(timeout=30)
        if log_path:
            log.close()


@pytest.fixture(scope="session")
def transformers_server():
    """A context manager that serves a saved model with `transformers serve` (usable from any fixture scope)."""
    return _transformers_serve


RAY_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ray_worker"


@pytest.fixture(scope="session")
def ray_cluster():
    """A real Ray cluster on this machine: a head with no CPUs (it schedules nothing) and two worker nodes of one CPU
    each, every node a raylet process of its own (ray.cluster_utils.Cluster, Ray's own multi-node test harness; the
    nodes bind this machine's own address, nothing leaves it), with this process connected as a driver. Yields
    (cluster, [worker node, worker node]); a test that removes a node puts a new one in its place. Skipped, with the
    reason, where Ray is missing or cannot start."""
    ray = pytest.importorskip("ray", reason="executor=ray needs Ray: pip install '.[ray]'")
    from ray.cluster_utils import Cluster

    # the worker processes inherit the raylets' environment: the repository (qrpo), and the tests' Ray fixtures
    root = str(Path(__file__).resolve().parents[1])
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, str(RAY_FIXTURES), saved) if p)
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": True})
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="qrpo")
    except Exception as err:  # no shared memory, ports refused, ...
        pytest.skip(f"a local Ray cluster cannot start here: {' '.join(str(err).split())[:300]}")
    finally:  # the raylets have it and pass it to their worker processes (a node added later needs it set again)
        os.environ.pop("PYTHONPATH") if saved is None else os.environ.__setitem__("PYTHONPATH", saved)
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()

