"""The seccomp filter at work: a child process loads it (prctl, as bubblewrap does) and makes the calls."""

import json
import platform
import signal
import subprocess
import sys
import textwrap

import pytest

from qrpo.sandbox.seccomp import DENIED, sandbox_filter

POLICY = {"clone", "fork", "vfork", "clone3", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "ptrace",
          "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key", "init_module", "finit_module",
          "kexec_load", "io_uring_setup"}

LOAD = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
def load(program):
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    prog = Prog(len(program) // 8, program)
    assert libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0, os.strerror(ctypes.get_errno())  # PR_SET_SECCOMP, FILTER
"""

# Arguments the kernel rejects before doing anything (bad flags, NULL pointers, fd -1), so a syscall the
# filter failed to deny does no harm here; a fork or vfork child exits at once.
PROBE = LOAD + """
import json
numbers, args = json.loads(sys.argv[1]), {"clone": [-1], "unshare": [-1], "setns": [-1, -1], "ptrace": [-1, -1],
                                          "finit_module": [-1], "kexec_load": [0, 0, 0, -1], "userfaultfd": [-1]}
load(sys.stdin.buffer.read())
out = {}
for name, nr in numbers.items():
    ctypes.set_errno(0)
    r = libc.syscall(nr, *[ctypes.c_long(a) for a in args.get(name, [0] * 6)])
    if r == 0 and name in ("fork", "vfork"):
        os._exit(0)
    out[name] = os.strerror(ctypes.get_errno()) if r == -1 else "ok"
out["getppid"] = "ok" if os.getppid() > 1 else "failed"
with open(os.devnull, "w") as f:
    out["open_write"] = "ok" if f.write("x") == 1 else "failed"
print(json.dumps(out))
"""


def _run(script, program, *argv):
    return subprocess.run([sys.executable, "-I", "-c", textwrap.dedent(script), *argv], input=program,
                          capture_output=True, timeout=60)


@pytest.mark.skipif(sandbox_filter() is None, reason="no filter for this machine")
def test_every_denied_syscall_fails_with_eperm_and_the_rest_are_allowed():
    import pyseccomp

    assert set(DENIED) == POLICY and len(DENIED) == len(POLICY)
    numbers = {name: pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name) for name in DENIED}
    numbers = {name: nr for name, nr in numbers.items() if nr >= 0}  # fork and vfork do not exist on aarch64
    proc = _run(PROBE, sandbox_filter(), json.dumps(numbers))
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)
    assert {name: result[name] for name in numbers} == {name: "Operation not permitted" for name in numbers}
    assert result["getppid"] == result["open_write"] == "ok"
    # and from Python: a new process or a new thread is refused
    proc = _run(LOAD + "load(sys.stdin.buffer.read())\nimport threading\n"
                "try: os.fork()\nexcept PermissionError: print('fork refused')\n"
                "try: threading.Thread(target=print).start()\nexcept RuntimeError as e: print(e)\n", sandbox_filter())
    assert proc.stdout.decode().splitlines() == ["fork refused", "can't start new thread"], proc.stderr.decode()


# The foreign call runs in a second thread that loads the filter itself: the whole process is killed
# (KILL_PROCESS), not only that thread, or the main thread would print "survived".
FOREIGN = LOAD + """
import mmap, threading
code = bytes.fromhex(sys.argv[1])
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
call = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
program = sys.stdin.buffer.read()
def foreign():
    load(program)
    print("returned", call(), flush=True)
thread = threading.Thread(target=foreign, daemon=True)
thread.start()
thread.join(5)
print("survived", flush=True)
os._exit(0)
"""


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 entry points")
@pytest.mark.parametrize("abi, code", [("i386", "b814000000cd80c3"),  # mov eax, 20 (getpid); int 0x80; ret
                                       ("x32", "b827000040" "0f05" "c3")])  # mov eax, 0x40000000|39 (getpid); syscall; ret
def test_a_syscall_through_a_foreign_abi_kills_the_process(abi, code):
    proc = _run(FOREIGN, sandbox_filter(), code)
    assert proc.returncode == -signal.SIGSYS, (abi, proc.returncode, proc.stdout, proc.stderr.decode()[-500:])
    assert b"returned" not in proc.stdout and b"survived" not in proc.stdout


def test_the_filter_is_built_per_machine_and_none_where_unknown():
    assert sandbox_filter("sparc") is None
    x86, arm = sandbox_filter("x86_64"), sandbox_filter("aarch64")
    assert x86 and arm and len(x86) % 8 == 0 and len(arm) % 8 == 0 and x86 != arm
