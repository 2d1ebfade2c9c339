"""SIGTERM (a scheduler, `kill`, docker stop) closes every MLflow run the CLI opened, even where the
exception its handler raised is dropped (flows/termination.py). Signal handlers are process-wide, so each
case runs in its own process."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.flows.test_sweep import ROOT, cli_env

# A SIGTERM that lands inside a finaliser: CPython prints "Exception ignored in ..." and drops the
# exception the handler raised, as it drops any exception raised in a __del__.
DROP_A_SIGTERM_IN = """
import os, signal, sys

class Finaliser:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(10_000))  # the handler has run by now (os.kill checks for signals on return)

def dropping(function):
    def wrapper(*args, **kwargs):
        Finaliser()  # collected at once
        return function(*args, **kwargs)
    return wrapper
"""


@pytest.mark.slow
def test_a_sigterm_dropped_in_a_finaliser_still_stops_the_run_after_its_step(prefect_server, tmp_path):
    """The first step (prepare_model) receives a SIGTERM whose exception Python drops; the run must still
    stop once that step's artifact is complete: exit 143, its MLflow run FAILED, no later step started.
    Without the noting of the signal inside the flow (Prefect's own handler is in charge there), the
    run went on to the end and exited 0."""
    home = tmp_path / "home"
    script = DROP_A_SIGTERM_IN + textwrap.dedent("""
        import qrpo.models
        qrpo.models.prepare_model = dropping(qrpo.models.prepare_model)
        sys.argv = ["qrpo-pipeline", "experiment=smoke"]
        from flows.cli import main
        main()
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=cli_env(home), capture_output=True, text=True,
                          timeout=600)
    assert "Exception ignored in" in proc.stderr, proc.stderr[-3000:]  # the case under test: the exception was dropped
    assert proc.returncode == 143, proc.stdout[-2000:] + proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("qrpo").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    steps = sorted(p.name for p in (home / "artifacts").iterdir() if p.is_dir() and any(p.iterdir()))
    assert steps == ["prepare_model"], steps  # the step the signal hit completed its artifact; nothing after it started


def test_sigterm_handling_in_one_process(tmp_path):
    """exit_on_sigterm: SystemExit(143), and a second SIGTERM during the clean-up ends the process at once.
    noting_sigterm: records the signal, hands it to the handler installed before, restores that handler.
    A handler someone else installed is left alone. (Two processes: the first SIGTERM is never forgotten.)"""
    noting = textwrap.dedent("""
        import os, signal
        from flows.termination import exit_on_sigterm, noting_sigterm, stop_if_terminated, terminated

        seen = []
        signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
        exit_on_sigterm()  # someone else's handler is installed: left alone
        assert not terminated()
        with noting_sigterm():
            os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM] and terminated(), seen
        assert signal.getsignal(signal.SIGTERM).__name__ == "<lambda>"  # restored
        try:
            stop_if_terminated()
        except SystemExit as stop:
            print("stopped", stop.code, flush=True)
    """)
    exiting = textwrap.dedent("""
        import os, signal, time
        from flows.termination import exit_on_sigterm

        exit_on_sigterm()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except SystemExit as first:
            print("first", first.code, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)  # a second one while cleaning up
            time.sleep(5)
        print("survived", flush=True)
    """)
    noted, proc = (subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
                   for script in (noting, exiting))
    assert [noted.stdout.strip(), proc.stdout.split("\n")[0]] == ["stopped 143", "first 143"], noted.stderr + proc.stdout + proc.stderr
    assert noted.returncode == 0, noted.stderr
    assert "survived" not in proc.stdout
    assert proc.returncode == -signal.SIGTERM, proc.stderr
