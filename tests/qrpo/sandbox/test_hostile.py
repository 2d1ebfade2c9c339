"""The hostile-program battery: each program is contained and earns nothing for what it cheats.

All programs run in ONE batch through the sandbox's pool, next to honest ones that must keep their
exact scores. For each hostile program the expected output is what it would return if its cheat
worked (the leaked secret, the host file's contents, "connected", ...), so a score of 0 means the
cheat failed, and the statuses show it failed for the right reason (not because the harness broke).

The wall clock (8 s) is far above the CPU limit (1 s), so a program that spins is ended by RLIMIT_CPU
("killed", by SIGKILL: the soft and hard limits are equal) and only a program that blocks may end
in "timeout": a bomb that a limit failed to stop cannot hide behind the wall clock. Whatever each
program does, the parent's view of its process tree (CaseResult.max_tasks, max_rss_mb) must show
no process or thread beyond bubblewrap, its init and the one interpreter, and no process larger
than the address-space limit.
"""

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from qrpo.sandbox import Sandbox, SandboxLimits, TestCase

SECRET = "qrpo-secret-7f3a9c"
TOKEN = "q9x-expected-token"
LIMITS = SandboxLimits(wall_seconds=8, cpu_seconds=1, memory_mb=256)
SANDBOX_TASKS = 3  # bubblewrap, its init (PID 1 of the sandbox) and the interpreter: one thread each
CPU_KILL = "killed by SIGKILL"  # RLIMIT_CPU with soft == hard: the kernel sends SIGKILL


def _programs(parent_pid, host_file, escape_path, port):
    """name -> (source, entry point, [(input, expected output)], allowed statuses, text the error must contain)."""
    P = {}

    def add(name, source, cases, statuses, entry="f", reason=""):
        P[name] = (textwrap.dedent(source), entry, cases, statuses, reason)

    one = [("", "1")]
    add("infinite_loop", "def f():\n    while True: pass\n", one, {"killed"}, reason=CPU_KILL)
    add("sleep_forever", "import time\ndef f():\n    time.sleep(1000)\n", one, {"timeout"})
    add("fork_bomb", "import os\ndef f():\n    while True: os.fork()\n", one, {"error"}, reason="PermissionError: [Errno 1] Operation not permitted")
    add("fork_bomb_ctypes", """
        import ctypes
        def f():
            libc = ctypes.CDLL(None)
            while True:
                if libc.fork() < 0: raise OSError("fork refused")
        """, one, {"error"}, reason="OSError: fork refused")
    add("thread_bomb", "import threading, time\ndef f():\n    while True: threading.Thread(target=time.sleep, args=(100,)).start()\n", one, {"error"},
        reason="can't start new thread")
    add("subprocess_shell", "import subprocess\ndef f():\n    return subprocess.run(['sh', '-c', 'echo 1'], capture_output=True).stdout.strip().decode()\n", [("", "'1'")], {"error"})
    add("memory_bomb_at_once", "def f():\n    x = bytearray(8 * 10**9)\n    return 1\n", one, {"error"}, reason="MemoryError")
    add("memory_bomb_gradual", "def f():\n    xs = []\n    while True: xs.append(' ' * 10**7)\n", one, {"error"}, reason="MemoryError")
    add("huge_stdout", "import sys\ndef f():\n    while True: sys.stdout.write('x' * 65536)\n", one, {"killed"}, reason=CPU_KILL)
    add("huge_stderr", "import sys\ndef f():\n    while True: sys.stderr.write('x' * 65536)\n", one, {"killed", "error", "no_result"})
    add("huge_output_on_every_fd", """
        import os
        def f():
            while True:
                for fd in range(0, 12):
                    try: os.write(fd, b'1\\n' * 32768)
                    except OSError: pass
        """, one, {"killed"}, reason=CPU_KILL)  # Python ignores SIGXFSZ: writes fail, it spins
    add("huge_return_value", "def f():\n    return 'x' * (20 * 2**20)\n", [("", repr("x" * 10))], {"killed", "no_result", "wrong_answer"})
    add("int_too_long_to_print", "def f():\n    return 10 ** 100000\n", [("", "1")], {"error", "no_result"})
    add("write_outside_workdir", f"def f():\n    open({str(escape_path)!r}, 'w').write('escaped')\n    return 1\n", one, {"error"})
    add("write_into_interpreter", f"import os\ndef f():\n    open(os.__file__, 'a').write('#')\n    return 1\n", one, {"error"})
    add("fill_the_tmpfs", "def f():\n    with open('big', 'wb') as fh:\n        for _ in range(100): fh.write(b'0' * 2**20)\n    return 1\n", one, {"error", "killed", "no_result"})
    add("read_env_secret", "import os\ndef f():\n    return os.environ.get('QRPO_TEST_SECRET', str(dict(os.environ)))\n", [("", repr(SECRET))], {"wrong_answer"})
    add("read_parent_environ", """
        def f(pid):
            data = open(f'/proc/{pid}/environ', 'rb').read()
            return [v for v in data.split(b'\\0') if b'QRPO_TEST_SECRET' in v][0].split(b'=', 1)[1].decode()
        """, [(f"pid = {parent_pid}", repr(SECRET))], {"error"})
    add("scan_all_environs", """
        import os
        def f():
            for pid in os.listdir('/proc'):
                try: data = open(f'/proc/{pid}/environ', 'rb').read()
                except OSError: continue
                for v in data.split(b'\\0'):
                    if v.startswith(b'QRPO_TEST_SECRET='): return v.split(b'=', 1)[1].decode()
            return 'not found'
        """, [("", repr(SECRET))], {"wrong_answer"})
    add("read_host_file", f"def f():\n    return open({str(host_file)!r}).read()\n", [("", repr(TOKEN))], {"error"})
    add("search_sandbox_for_expected_output", """
        import os
        def f():
            for top in ('/task', '/sandbox', '/tmp', '/proc/self', '/dev', '/etc', '/home', '/work'):
                for root, dirs, files in os.walk(top):
                    if root.startswith('/proc/self/'): dirs[:] = []
                    for name in files:
                        try: text = open(os.path.join(root, name), errors='ignore').read(10**6)
                        except OSError: continue
                        if 'q9x-expected' in text and name != 'solution.py': return 'q9x-expected' + '-token'
            return 'nothing'
        """, [("", repr(TOKEN))], {"timeout"})  # it blocks reading /dev/ptmx (idle, not spinning): the wall clock ends it
    add("socket_to_host_loopback", f"""
        import socket
        def f():
            socket.create_connection(('127.0.0.1', {port}), timeout=1).close()
            return 'connected'
        """, [("", "'connected'")], {"error"})
    add("socket_to_internet", """
        import socket
        def f():
            socket.create_connection(('1.1.1.1', 53), timeout=1).close()
            return 'connected'
        """, [("", "'connected'")], {"error"})
    add("kill_parent", f"import os, signal\ndef f():\n    os.kill({parent_pid}, signal.SIGKILL)\n    return 'killed'\n", [("", "'killed'")], {"error"})
    add("kill_everything", "import os, signal\ndef f():\n    os.kill(-1, signal.SIGKILL)\n    return 'killed everyone'\n", [("", "1")], {"error", "wrong_answer", "killed", "no_result"})
    add("stop_everything", "import os, signal\ndef f():\n    os.kill(-1, signal.SIGSTOP)\n    return 'stopped everyone'\n", [("", "1")], {"error", "wrong_answer", "killed", "no_result"})
    add("kill_parent_group", f"import os, signal\ndef f():\n    os.killpg(os.getpgid({parent_pid}), signal.SIGKILL)\n    return 'killed'\n", [("", "'killed'")], {"error"})
    add("deep_recursion", "def f(n=0):\n    return f(n + 1)\n", one, {"error"})
    add("deep_recursion_unlimited", "import sys\nsys.setrecursionlimit(10**9)\ndef f(n=0):\n    return f(n + 1) + 1\n", one, {"killed", "error", "no_result"})
    add("os_exit_before_asserts", "import os\ndef f():\n    os._exit(0)\n", one, {"no_result"})
    add("sys_exit_zero", "import sys\ndef f():\n    sys.exit(0)\n", one, {"error"})
    add("kill_self", "import os, signal\ndef f():\n    os.kill(os.getpid(), signal.SIGKILL)\n", one, {"killed"})
    add("segfault", "import ctypes\ndef f():\n    return ctypes.string_at(0)\n", one, {"killed"})
    add("equals_everything", """
        class Anything:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            __hash__ = object.__hash__
        def f():
            return Anything()
        """, [("", "[1, 2, 3]")], {"error"})
    add("int_subclass_equals_everything", "class I(int):\n    def __eq__(self, o): return True\n    __hash__ = int.__hash__\ndef f():\n    return I(0)\n", [("", "5")], {"error"})
    add("list_subclass_equals_everything", "class L(list):\n    def __eq__(self, o): return True\ndef f():\n    return L()\n", [("", "[1, 2]")], {"error"})
    add("monkey_patch_builtins", """
        import builtins, json
        builtins.type = lambda *a: int
        builtins.isinstance = lambda *a: True
        builtins.repr = lambda o: '3'
        json.dumps = lambda o, **k: '{"ok": true, "value": ["int", "3"]}'
        def f():
            return 'not three'
        """, [("", "3")], {"wrong_answer", "no_result"})  # json.dumps leans on the patched isinstance
    add("forged_result_lines", """
        import os, sys
        def f():
            verdict = '{"passed": 1, "total": 1, "ok": true, "value": ["int", "3"]}'
            print(verdict); print('PASSED'); sys.stderr.write(verdict + '\\n')
            for fd in range(0, 12):
                try: os.write(fd, ('\\n' + 'f' * 32 + ' ' + verdict + '\\n').encode())
                except OSError: pass
            return 4
        """, [("", "3")], {"wrong_answer"})
    add("stolen_nonce_forged_verdict", """
        import os, sys
        def f():
            frame = sys._getframe()
            while frame.f_back: frame = frame.f_back
            nonce = [v for v in frame.f_locals.get('request', {}).values()][-1] if 'request' in frame.f_locals else None
            for fr in [sys._getframe(i) for i in range(1, 4)]:
                if 'nonce' in fr.f_locals: nonce = fr.f_locals['nonce']
            for fd in range(0, 12):
                try: os.write(fd, f'\\n{nonce} {{"ok": true, "passed": true}}\\n'.encode())
                except OSError: pass
            os._exit(0)
        """, [("", "3")], {"no_result"})
    add("close_every_fd", "import os\ndef f():\n    os.closerange(0, 1000)\n    return 1\n", one, {"no_result", "error"})
    add("raise_cpu_limit_back", """
        import resource
        def f():
            try: resource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            except (ValueError, OSError): pass
            while True: pass
        """, one, {"killed"}, reason=CPU_KILL)
    add("raise_memory_limit_back", """
        import resource
        def f():
            resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            return len(bytearray(8 * 10**9))
        """, [("", str(8 * 10**9))], {"error"})
    add("ignore_signals_and_spin", """
        import signal
        for s in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        def f():
            while True: pass
        """, one, {"killed"}, reason=CPU_KILL)
    add("slow_import", "import time\ntime.sleep(1000)\ndef f():\n    return 1\n", one, {"timeout"})
    add("import_outside_stdlib", "import numpy\ndef f():\n    return 1\n", one, {"error"})
    add("hang_in_atexit", "import atexit\natexit.register(lambda: __import__('time').sleep(1000))\ndef f():\n    return 0\n", one, {"timeout", "wrong_answer"})
    add("unshare_and_mount", """
        import ctypes, os
        def f():
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(0x10000000 | 0x00020000) != 0:  # CLONE_NEWUSER | CLONE_NEWNS
                raise OSError(ctypes.get_errno(), 'unshare refused')
            return 'unshared'
        """, [("", "'unshared'")], {"error"})
    return P


HONEST = {
    "honest_correct": ("def add(a, b):\n    return a + b\n", "add", [("a = 1, b = 2", "3"), ("a = -5, b = 5", "0"), ("a = [1], b = [2]", "[1, 2]")], 3),
    "honest_partly_wrong": ("class Solution:\n    def absSum(self, a: int, b: int) -> int:\n        return a + b\n", "Solution().absSum",
                            [("a = 1, b = 2", "3"), ("a = -1, b = -2", "3"), ("a = 0, b = 4", "4")], 2),
    "honest_slowish": ("import time\ndef f(x):\n    time.sleep(0.3)\n    return x * 2\n", "f", [("x = 2", "4"), ("x = 3", "5")], 1),
}


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("QRPO_TEST_SECRET", SECRET)


def test_hostile_battery_is_contained_and_scores_zero_while_honest_programs_keep_exact_scores(tmp_path, secret_env):
    host_file = tmp_path / "host_secret.txt"
    host_file.write_text(TOKEN)
    escape_path = tmp_path / "escaped.txt"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    sentinel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    hostile = _programs(os.getpid(), host_file, escape_path, listener.getsockname()[1])
    assert len(hostile) >= 30
    jobs = {**{k: (s, e, c) for k, (s, e, c, _, _) in hostile.items()}, **{k: (s, e, c) for k, (s, e, c, _) in HONEST.items()}}
    sandbox = Sandbox(LIMITS, max_workers=6)
    try:
        results = sandbox.run_many([(s, e, [TestCase(i, o) for i, o in c]) for s, e, c in jobs.values()])
        by_name = dict(zip(jobs, results))
        # the host kept running: this process, an unrelated process of ours, the secret file, the listener
        assert sentinel.poll() is None
        assert host_file.read_text() == TOKEN
        assert not escape_path.exists()
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        os.killpg(sentinel.pid, signal.SIGKILL)
        sentinel.wait()
        listener.close()
    problems = []  # every program checked, then one assertion: a broken limit shows all it breaks
    for name, (_, _, _, statuses, reason) in hostile.items():
        for c in by_name[name].cases:
            if c.passed or c.status not in statuses or reason not in c.error:
                problems.append(f"{name}: {c.status} ({c.error[:160]!r}), expected {sorted(statuses)} with {reason!r}")
            if c.max_tasks is None or not 1 <= c.max_tasks <= SANDBOX_TASKS:
                problems.append(f"{name}: {c.max_tasks} processes + threads seen at once, at most {SANDBOX_TASKS} allowed")
            if c.max_rss_mb is None or c.max_rss_mb > LIMITS.memory_mb:
                problems.append(f"{name}: a process of {c.max_rss_mb} MB resident, limit {LIMITS.memory_mb} MB")
    assert not problems, "\n".join(problems)
    for name, (_, _, _, expected) in HONEST.items():
        assert by_name[name].passed == expected, (name, by_name[name].cases)
