"""A tiny seccomp-BPF filter, handed to bubblewrap with `--seccomp FD`: no new processes or threads.

RLIMIT_NPROC counts processes per real user and the kernel does not apply it to root, so on a
machine where the platform runs as root a fork or thread bomb would not be stopped by rlimits.
This filter makes fork, vfork, clone and clone3 fail with EPERM inside the sandbox (a test
solution needs neither processes nor threads), as well as the kernel surface a solution never
needs (new namespaces, mounts, ptrace, bpf, perf events, userfaultfd, keyrings, io_uring), and kills any syscall made through a foreign ABI
(32-bit or x32 entry points) so the filter cannot be side-stepped. Format: `struct sock_filter`
(linux/filter.h), constants from linux/seccomp.h and linux/audit.h.
"""

from __future__ import annotations

import errno
import platform
import struct

_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_ALLOW, _KILL_PROCESS, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_ARCHES = {  # machine -> (AUDIT_ARCH_*, denied syscall numbers)
    # clone fork vfork clone3 | unshare setns mount umount2 pivot_root chroot | ptrace bpf perf_event_open
    # userfaultfd | keyctl add_key request_key | init_module finit_module kexec_load | io_uring_setup
    "x86_64": (0xC000003E, (56, 57, 58, 435, 272, 308, 165, 166, 155, 161, 101, 321, 298, 323, 250, 248, 249, 175, 313, 246, 425)),
    "aarch64": (0xC00000B7, (220, 435, 97, 268, 40, 39, 41, 51, 117, 280, 241, 282, 219, 217, 218, 105, 273, 104, 425)),
}


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def sandbox_filter(machine: str | None = None) -> bytes | None:
    """The compiled filter for this machine, or None where its syscall numbers are not known here."""
    machine = machine or platform.machine()
    if machine not in _ARCHES:
        return None
    arch, denied = _ARCHES[machine]
    n = len(denied)
    # layout: 0 load arch; 1 check arch; 2 load nr; 3 x32 check (x86_64 only); then one jeq per denied
    # syscall; then ALLOW, ERRNO(EPERM), KILL.
    prog = [_insn(_LD_W_ABS, 0, 0, 4), None, _insn(_LD_W_ABS, 0, 0, 0)]
    x32 = machine == "x86_64"
    body_len = n + (1 if x32 else 0)
    allow_at = 3 + body_len
    if x32:  # x32 syscall numbers have bit 30 set
        prog.append(_insn(_JGE_K, allow_at + 2 - 4, 0, 0x40000000))
    for i, nr in enumerate(denied):
        here = len(prog)
        prog.append(_insn(_JEQ_K, allow_at + 1 - here - 1, 0, nr))
    prog.append(_insn(_RET_K, 0, 0, _ALLOW))
    prog.append(_insn(_RET_K, 0, 0, _ERRNO | errno.EPERM))
    prog.append(_insn(_RET_K, 0, 0, _KILL_PROCESS))
    prog[1] = _insn(_JEQ_K, 0, allow_at + 2 - 1 - 1, arch)  # foreign ABI -> KILL
    return b"".join(prog)
