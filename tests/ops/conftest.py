"""Real local services for the operations tests: moto's stand-alone S3 server and a Prefect API."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # the server answers
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's stand-alone S3 server on 127.0.0.1; yields its endpoint URL. Credentials are dummies."""
    moto = shutil.which("moto_server", path=str(BIN)) or shutil.which("moto_server")
    if moto is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(endpoint, 60, proc)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The environment a user sets for an S3-compatible store (here: moto)."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "QRPO_S3_ENDPOINT_URL": s3_server,
                        "MLFLOW_S3_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return s3_server


def make_bucket(endpoint: str, name: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=name)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real local Prefect API (Prefect's test harness: a temporary server and database)."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@contextlib.contextmanager
def prefect_server_process(env: dict, log_path: Path, ui: bool = False, database: str | None = None):
    """`prefect server start` on a free 127.0.0.1 port (its database: `database`, else SQLite under the
    env's PREFECT_HOME); yields the API URL (…/api) once /api/health answers, and stops it after."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    extra = {"PREFECT_API_DATABASE_CONNECTION_URL": database} if database else {}
    if ui:  # the UI's browser code calls this URL (its default is port 4200)
        extra["PREFECT_UI_API_URL"] = api
    log = open(log_path, "w")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port),
                               "--ui" if ui else "--no-ui"], env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"{api}/health", 180, server)
        yield api
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        log.close()
