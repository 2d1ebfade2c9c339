"""The CLI's temporary Prefect API (flows/local_api.py) and its exit (flows.cli.exit_without_teardown), each
in a process of its own with a fresh PREFECT_HOME and no PREFECT_API_URL, as a user's first run has."""

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# a flow of many quick tasks: the client streams their state changes as events faster than the server writes
# them, so at the flow's end the server still has a backlog of task runs to record
MANY_TASKS = textwrap.dedent("""
    import json, sys
    import flows
    from flows.cli import exit_without_teardown
    from flows.local_api import LocalAPI
    from prefect import flow, task
    from prefect.settings import PREFECT_API_URL, get_current_settings

    @task
    def step(i):
        return i

    @flow
    def many(n):
        return sum(step(i) for i in range(n))

    api = LocalAPI.get()
    with api.serving():
        inside = [PREFECT_API_URL.value(), get_current_settings().flows.heartbeat_frequency]
        state = many(int(sys.argv[1]), return_state=True)
    print(json.dumps({"inside": inside, "url": api.url, "outside": PREFECT_API_URL.value(), "pid": api.process.pid,
                      "flow_run_id": str(state.state_details.flow_run_id), "result": state.result()}))
    exit_without_teardown()
""")


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "QRPO_", "MLFLOW_"))}
    env.update(QRPO_HOME=str(home), PYTHONPATH=str(ROOT), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def test_every_task_run_is_recorded_before_the_temporary_server_stops(tmp_path):
    """A server stopped while it still writes the task runs' events loses task runs (seen: 13 of a run's 14
    recorded); `LocalAPI.stop` waits for the backlog. The run's settings point at the server only inside
    `serving()`, with heartbeats off there; the server is gone when the process has exited."""
    import json

    home, n = tmp_path / "home", 60
    proc = subprocess.run([sys.executable, "-c", MANY_TASKS, str(n)], env=_env(home), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["result"] == sum(range(n))
    assert out["inside"] == [out["url"], None] and out["outside"] is None
    with sqlite3.connect(home / "prefect" / "prefect.db") as db:
        recorded = db.execute("select count(*) from task_run where flow_run_id = ?", (out["flow_run_id"],)).fetchone()[0]
        finished = db.execute("select count(*) from task_run where flow_run_id = ? and state_type = 'COMPLETED'",
                              (out["flow_run_id"],)).fetchone()[0]
    assert recorded == finished == n
    assert not Path(f"/proc/{out['pid']}").exists(), "the temporary server outlived the run"
    assert "Error flushing" not in proc.stderr, proc.stderr[-3000:]


def test_start_early_waits_for_a_home_that_has_run_before(tmp_path):
    """Before validation the server starts only where its database exists already: bad input on a new
    QRPO_HOME must write nothing (not even Prefect's database)."""
    code = textwrap.dedent("""
        import flows, os
        from flows.local_api import LocalAPI
        LocalAPI.start_early()
        print(LocalAPI._instance is None, os.path.exists(os.environ["PREFECT_HOME"]))
        os.makedirs(os.environ["PREFECT_HOME"])
        open(os.path.join(os.environ["PREFECT_HOME"], "prefect.db"), "w").close()
        LocalAPI.start_early()
        api = LocalAPI._instance
        print(api is not None and api.process.poll() is None)
        api.stop()
        print(api.process is None)
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True", "False", "True", "True"]


def test_exit_without_teardown_runs_what_a_normal_exit_runs_first(tmp_path):
    """The CLI's exit skips only the interpreter's finalisation: unflushed output, a non-daemon thread still
    working, the threading module's exit callbacks and atexit handlers all complete, and the status is 0."""
    code = textwrap.dedent(f"""
        import atexit, sys, threading, time
        from pathlib import Path
        from flows.cli import exit_without_teardown

        out = Path({str(tmp_path)!r})
        def late():
            time.sleep(0.5)
            (out / "thread").write_text("done")
        threading.Thread(target=late).start()
        threading._register_atexit(lambda: (out / "threading_atexit").write_text("done"))  # (runs before the join)
        atexit.register(lambda: (out / "atexit").write_text("done"))
        sys.stdout.write("no newline, not flushed")
        exit_without_teardown()
        (out / "after").write_text("never")
    """)
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "no newline, not flushed"
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"thread": "done", "threading_atexit": "done", "atexit": "done"}


def test_a_sigterm_while_the_server_settles_still_stops_it_and_exits_143(tmp_path):
    """SIGTERM during the exit's wait for the server (flows/termination.py turns it into SystemExit(143), which an
    atexit handler's caller prints and drops): the server is stopped all the same, and the status says SIGTERM."""
    import json

    code = textwrap.dedent("""
        import json, os, signal, time
        import flows
        from flows.cli import exit_without_teardown
        from flows.local_api import LocalAPI
        from flows.termination import exit_on_sigterm

        exit_on_sigterm()
        api = LocalAPI.get()
        api.wait()

        def settle(*args, **kwargs):  # the signal lands in the wait
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)

        api.settle = settle
        print(json.dumps({"pid": api.process.pid}), flush=True)
        exit_without_teardown()
    """)
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:  # files, not pipes: a surviving server would hold a pipe open
        proc = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path / "home"), stdout=stdout, stderr=stderr, timeout=300)
    pid = json.loads(out.read_text().strip().splitlines()[-1])["pid"]
    survived = Path(f"/proc/{pid}").exists()
    if survived:
        os.kill(pid, 9)
    assert proc.returncode == 143 and not survived, (proc.returncode, survived, err.read_text()[-3000:])
