"""The temporary local Prefect API of a CLI run, started as early as possible and in its own process.

Without PREFECT_API_URL, Prefect starts a temporary API server (uvicorn serving
`prefect.server.api.server:create_app`, its database under PREFECT_HOME) on its first client call, and its
client code imports the server's whole package first (~3.5 s on 2 cores) just to start a subprocess. A
cached re-run is mostly that kind of fixed cost. So the CLI starts the same server itself, the same way
Prefect does (same command, same environment: the server's UI off, the `ephemeral` and `final` switches
on, the profile's settings exported), before the flow's modules import: the server boots on the other
core while this process imports (and, on a QRPO_HOME whose Prefect database exists already, while it
validates the config: `start_early`; a first run starts it only once the config is valid, so that bad
input on a new QRPO_HOME writes nothing), and the flow then runs with PREFECT_API_URL pointing at
it for this process only (`prefect.settings.temporary_settings`). Its history is the one `prefect server
start` opens with the same PREFECT_HOME (what the run's summary prints). The server is stopped when the
process exits, as Prefect stops its own.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

STARTUP_FAILED = 3  # uvicorn's exit status when the app cannot start: its port taken, or the app failed


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_taken(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


class LocalAPI:
    """One temporary Prefect API server on 127.0.0.1 for this process (`LocalAPI.get()`)."""

    _instance: "LocalAPI | None" = None

    def __init__(self) -> None:
        self.port, self.attempts = 0, 0
        self.process: subprocess.Popen | None = None
        self.ready = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @classmethod
    def start_early(cls) -> None:
        """Start the server now if this PREFECT_HOME has a database already (a QRPO_HOME that has run before):
        its boot (~5 s) then overlaps the config's validation. On bad input the process exits and stops it."""
        if (Path(os.environ["PREFECT_HOME"]).expanduser() / "prefect.db").is_file():
            cls.get()

    @classmethod
    def get(cls) -> "LocalAPI | None":
        """This process's server, started on first use; None when Prefect should not start one (PREFECT_API_URL is
        set, or the temporary server is switched off in Prefect's settings)."""
        from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

        if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
            return None
        if cls._instance is None:
            cls._instance = cls()
            cls._instance._spawn()
            atexit.register(cls._instance.stop)
        return cls._instance

    def _spawn(self) -> None:
        import prefect
        from prefect.settings import get_current_settings

        get_current_settings().home.mkdir(parents=True, exist_ok=True)  # its database lives there
        self.port = _free_port()
        self.attempts += 1
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
               **get_current_settings().to_environment_variables(exclude_unset=True)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"],
            env=env,
        )

    def wait(self) -> None:
        """Block until the server answers its health check (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS at most)."""
        from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

        deadline = time.monotonic() + PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
        with httpx.Client() as client:
            while not self.ready:
                if self.process.poll() == STARTUP_FAILED and self.attempts < 3 and _port_taken(self.port):
                    self._spawn()  # another process took the port between our check and the server's bind
                elif self.process.poll() is not None:
                    raise RuntimeError(f"the temporary Prefect API server exited with status {self.process.returncode} "
                                       "before it answered; its error is above")
                elif time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the temporary Prefect API server did not answer on {self.url} within "
                                       f"{PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value():.0f} s; raise "
                                       "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS or start a server and set PREFECT_API_URL")
                with contextlib.suppress(httpx.TransportError):
                    self.ready = client.get(f"{self.url}/health").status_code == 200
                if not self.ready:
                    time.sleep(0.05)

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """This process's Prefect client talks to the server inside the block. Flow-run heartbeats are off there:
        they let a server mark a run whose process died as crashed, and this server dies with the process (while
        the engine, at the end of each flow run, waits up to 1 s for its heartbeat thread)."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        self.wait()
        with temporary_settings({PREFECT_API_URL: self.url, "flows.heartbeat_frequency": None}):
            yield

    def settle(self, quiet_s: float = 0.3, limit_s: float = 10.0) -> None:
        """Wait until the server has recorded the task runs this process reported. Prefect records task runs from
        the events its client streams (each state change one event, written one by one), so at the end of a fast
        flow the server may still be writing a backlog, and a server stopped then loses task runs. The task runs'
        counts (all, running, finished) unchanged for `quiet_s` (the server writes an event in milliseconds)
        means the backlog is written; `limit_s` bounds the wait."""
        finals = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]
        queries = [{}, {"task_runs": {"state": {"type": {"any_": ["RUNNING"]}}}}, {"task_runs": {"state": {"type": {"any_": finals}}}}]
        deadline, seen, quiet_since = time.monotonic() + limit_s, None, time.monotonic()
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                try:
                    counts = [client.post(f"{self.url}/task_runs/count", json=query).json() for query in queries]
                except (httpx.HTTPError, ValueError):
                    return  # the server is gone or not answering: nothing to wait for
                if counts != seen:
                    seen, quiet_since = counts, time.monotonic()
                elif time.monotonic() - quiet_since >= quiet_s:
                    return
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (after `settle`); it is stopped even when a SIGTERM interrupts the wait."""
        if self.process is not None:
            try:
                if self.ready and self.process.poll() is None:
                    self.settle()
            finally:
                self.process.terminate()
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
                self.process = None
        self.ready = False
        if LocalAPI._instance is self:
            LocalAPI._instance = None
