"""The bubblewrap command line for one sandboxed command (pure: paths and policy in, argv out).

Inside: a read-only view of the host's system directories (``/usr`` and its merged-usr links, a
few ``/etc`` files programs need), a private ``/proc``, a minimal ``/dev``, the job's work dir at
``/work`` and its own ``/tmp`` (both on the job's size-capped tmpfs) as the only writable places.
Its own user, PID, IPC, UTS and cgroup namespaces; its own network namespace unless the policy is
``full``; no capabilities, no new privileges (bubblewrap sets ``PR_SET_NO_NEW_PRIVS``), no
further user namespaces, a new session (no terminal to inject keystrokes into), the seccomp
filter, and ``--die-with-parent`` so killing bubblewrap tears the namespace (and so every process
of the job, ``setsid`` or not) down. The environment is not on the command line, where any host
user could read it in ``ps``: bubblewrap passes its own environment on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from dspy_pylon.sandbox.schema import NetworkPolicy

WORK = "/work"
UID = 1000  # the job's uid and gid inside its user namespace
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt")
ETC_FILES = (
    "alternatives", "ca-certificates", "ca-certificates.conf", "gai.conf", "host.conf", "hosts",
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "mime.types", "nsswitch.conf",
    "os-release", "protocols", "services", "ssl", "timezone",
)  # fmt: skip
PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"


@dataclass(frozen=True)
class HostView:
    """How the host's system directories look: which are links (merged /usr) and which exist.
    :func:`host_view` reads it; tests build one by hand."""

    links: dict[str, str] = field(default_factory=dict)
    dirs: tuple[str, ...] = ()
    etc: tuple[str, ...] = ()


def host_view(
    exists: Callable[[str], bool] = os.path.lexists,
    islink: Callable[[str], bool] = os.path.islink,
    readlink: Callable[[str], str] = os.readlink,
) -> HostView:
    """This host's view (the file checks are injectable)."""
    links = {d: readlink(d) for d in SYSTEM_DIRS if islink(d)}
    dirs = tuple(d for d in SYSTEM_DIRS if d not in links and exists(d))
    etc = tuple(name for name in ETC_FILES if exists(f"/etc/{name}"))
    return HostView(links, dirs, etc)


@dataclass(frozen=True)
class BwrapPlan:
    """One command's sandbox."""

    work_dir: str  # host path bound at /work
    tmp_dir: str  # host path bound at /tmp
    cmd: str
    workdir: str = "."  # relative to /work (validated by SandboxCommand)
    network: NetworkPolicy = NetworkPolicy.NONE
    seccomp_fd: int | None = None
    bwrap: str = "bwrap"
    hostname: str = "sandbox"


def inside(workdir: str) -> str:
    """The absolute path of a job-relative work dir inside the sandbox."""
    return str(PurePosixPath(WORK, workdir))


def bwrap_argv(plan: BwrapPlan, view: HostView, *, shell: str = "/bin/sh") -> list[str]:
    """The argv that runs ``plan.cmd`` with ``shell -c`` under bubblewrap."""
    argv = [plan.bwrap, "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if plan.network is not NetworkPolicy.FULL:
        argv.append("--unshare-net")
    argv += ["--disable-userns", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    argv += ["--uid", str(UID), "--gid", str(UID), "--hostname", plan.hostname]
    for directory in view.dirs:
        argv += ["--ro-bind", directory, directory]
    for link, target in view.links.items():
        argv += ["--symlink", target, link]
    for name in view.etc:
        argv += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    if plan.network is NetworkPolicy.FULL:
        argv += ["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--bind", plan.work_dir, WORK, "--bind", plan.tmp_dir, "/tmp", "--chdir", inside(plan.workdir)]
    argv += ["--remount-ro", "/"]  # bubblewrap's own root is a writable tmpfs otherwise (uncounted by the disk limit)
    if plan.seccomp_fd is not None:
        argv += ["--seccomp", str(plan.seccomp_fd)]
    return [*argv, "--", shell, "-c", plan.cmd]


def job_environment(env: dict[str, str], extra: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
    """The environment a command sees: a fixed base (nothing of the provider's own), then the
    request's variables (which may override the base, PATH included)."""
    base = {"PATH": PATH, "HOME": WORK, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "USER": "sandbox"}
    return {**base, **dict(extra), **env}
