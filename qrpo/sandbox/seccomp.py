"""The sandbox's seccomp filter, handed to bubblewrap with `--seccomp FD`: no new processes or threads.

RLIMIT_NPROC counts processes per real user and the kernel does not apply it to root, so on a
machine where the platform runs as root a fork or thread bomb would not be stopped by rlimits.
This filter makes fork, vfork, clone and clone3 fail with EPERM inside the sandbox (a test
solution needs neither processes nor threads), as well as the kernel surface a solution never
needs (DENIED: new namespaces, mounts, ptrace, bpf, perf events, userfaultfd, keyrings, io_uring),
allows everything else, and kills the process on any syscall made through a foreign ABI (32-bit
or x32 entry points) so the filter cannot be side-stepped.

libseccomp compiles it (syscall names to each arch's numbers, the arch and x32 checks) through
`pyseccomp`, a pure-ctypes binding to the system's libseccomp.so.2 with the API of libseccomp's own
Python module: it installs from PyPI with no compiler, where the official binding ships only as a
distribution package (Debian's python3-seccomp) outside the virtualenv.
"""

from __future__ import annotations

import errno
import platform
import tempfile

DENIED = ("clone", "fork", "vfork", "clone3",  # new processes and threads
          "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",  # namespaces and mounts
          "ptrace", "bpf", "perf_event_open", "userfaultfd",
          "keyctl", "add_key", "request_key",  # keyrings
          "init_module", "finit_module", "kexec_load",
          "io_uring_setup")
_ARCHES = ("x86_64", "aarch64")  # machines the filter is built for (platform.machine() names)


def sandbox_filter(machine: str | None = None) -> bytes | None:
    """The compiled BPF program for this machine, or None where it cannot be built here (an unknown
    machine, or no libseccomp): the runner then starts bubblewrap without `--seccomp`."""
    machine = machine or platform.machine()
    if machine not in _ARCHES:
        return None
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError, RuntimeError):  # not installed, or no libseccomp.so on this machine
        return None
    arch = {"x86_64": seccomp.Arch.X86_64, "aarch64": seccomp.Arch.AARCH64}[machine]
    program = seccomp.SyscallFilter(seccomp.ALLOW)
    program.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    if arch != seccomp.system_arch():  # built for another machine: its arch replaces the native one
        program.add_arch(arch)
        program.remove_arch(seccomp.Arch.NATIVE)
    for name in DENIED:  # a name the arch lacks (fork and vfork on aarch64) matches no syscall there
        program.add_rule(seccomp.ERRNO(errno.EPERM), name)
    with tempfile.TemporaryFile() as out:
        program.export_bpf(out)
        out.seek(0)
        return out.read()
