"""The seccomp filter a sandbox job runs under, compiled to the BPF bubblewrap loads (``--seccomp``).

Allow by default and refuse (``EPERM``) what a job has no business doing and what widens the
kernel's attack surface: loading kernel modules and BPF, mounting, new namespaces, tracing other
processes, keyrings, io_uring, clocks, reboot, swap, performance counters. The list follows
Docker's and Flatpak's default profiles. Under network policy ``none`` a job may only open Unix
sockets, so not even its own loopback is reachable (``localhost`` leaves it its loopback).

Built with libseccomp (through ``pyseccomp``, a ctypes binding to Debian's ``libseccomp2``)
rather than hand-assembled BPF: the per-architecture syscall tables and the architecture check at
the top of the program are what a hand-written filter gets wrong.
"""

from __future__ import annotations

import errno
import functools
import os
import tempfile

from dspy_pylon.plain_errors import SandboxRefused
from dspy_pylon.sandbox.schema import NetworkPolicy

DENIED = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
    "finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "init_module",
    "io_uring_enter", "io_uring_register", "io_uring_setup", "ioperm", "iopl", "kcmp",
    "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mount", "mount_setattr",
    "move_mount", "name_to_handle_at", "nfsservctl", "open_by_handle_at", "open_tree",
    "perf_event_open", "pivot_root", "process_vm_readv", "process_vm_writev", "ptrace",
    "query_module", "quotactl", "quotactl_fd", "reboot", "request_key", "setns", "settimeofday",
    "stime", "swapoff", "swapon", "sysfs", "_sysctl", "umount", "umount2", "unshare", "uselib",
    "userfaultfd", "ustat", "vm86", "vm86old",
)  # fmt: skip
AF_UNIX = 1
TIOCSTI = 0x5412  # pushes keystrokes into a terminal: a classic escape from a shared tty


@functools.cache
def filter_bpf(network: NetworkPolicy) -> bytes:
    """The compiled filter for ``network`` (cached: building it takes a few milliseconds).

    :class:`SandboxRefused` when libseccomp cannot be loaded: a job is not run without it."""
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError) as exc:  # pyseccomp raises OSError when libseccomp.so.2 is missing
        raise SandboxRefused(
            f"cannot build the sandbox's seccomp filter (libseccomp): {exc}", missing=("libseccomp2",)
        ) from None
    refuse = seccomp.ERRNO(errno.EPERM)
    program = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in DENIED:
        try:
            program.add_rule(refuse, name)
        except (RuntimeError, ValueError, OSError):
            continue  # not a syscall on this architecture
    program.add_rule(refuse, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, TIOCSTI))
    if network is NetworkPolicy.NONE:
        program.add_rule(seccomp.ERRNO(errno.EACCES), "socket", seccomp.Arg(0, seccomp.NE, AF_UNIX))
    # export_bpf writes to a real file object; a temporary file is the one it accepts everywhere.
    with tempfile.TemporaryFile() as out:
        program.export_bpf(out)
        out.seek(0)
        return out.read()


def filter_fd(network: NetworkPolicy) -> int:
    """A pipe's read end holding the filter, for ``bwrap --seccomp FD`` (the caller closes it
    after starting bwrap; the filter is far below a pipe's buffer, so writing cannot block)."""
    program = filter_bpf(network)
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, program)
    finally:
        os.close(write_end)
    return read_end
