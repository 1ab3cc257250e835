"""The bubblewrap command line for one sandboxed command (pure: paths and policy in, argv out).

Inside: a read-only view of the host's system directories (``/usr`` and its merged-usr links, a
few ``/etc`` files programs need), a private ``/proc``, a minimal ``/dev``, the job's work dir at
``/work`` and its own ``/tmp`` (both on the job's size-capped tmpfs) as the only writable places.
Its own user, PID, IPC, UTS and cgroup namespaces; its own network namespace unless the policy is
``full``; no capabilities, no new privileges (bubblewrap sets ``PR_SET_NO_NEW_PRIVS``), no
further user namespaces, a new session (no terminal to inject keystrokes into), the seccomp
filter, and ``--die-with-parent`` so killing bubblewrap tears the namespace (and so every process
of the job, ``setsid`` or not) down. The job's environment and command reach bubblewrap through
``--args FD`` with ``--clearenv``: in no command line (``ps``), and never in the environment of
anything that runs on the host.
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
    shm_dir: str  # host path bound at /dev/shm (on the job's tmpfs: counted by the disk limit)
    cmd: str
    workdir: str = "."  # relative to /work (validated by SandboxCommand)
    network: NetworkPolicy = NetworkPolicy.NONE
    seccomp_fd: int | None = None
    env: tuple[tuple[str, str], ...] = ()
    hostname: str = "sandbox"


def inside(workdir: str) -> str:
    """The absolute path of a job-relative work dir inside the sandbox."""
    return str(PurePosixPath(WORK, workdir))


#: Where the command rides into the sandbox: an environment variable set through ``--args``
#: (bubblewrap wants the program itself on its real command line, which ``ps`` shows).
COMMAND_VAR = "PYLON_SANDBOX_COMMAND"
#: Run inside the sandbox, as the job's user: the work dir is made there (a path the job turned
#: into a file or a link fails as the job's own error, never as a root mkdir on the host), and
#: the command is taken out of the environment before it runs.
ENTER = f'mkdir -p -- "$1" && cd -- "$1" && c=${COMMAND_VAR} && unset {COMMAND_VAR} && exec /bin/sh -c "$c"'


def bwrap_args(plan: BwrapPlan, view: HostView) -> list[str]:
    """bubblewrap's options for ``plan`` (the environment and the command among them). They go
    to bubblewrap through ``--args FD``, so no process's command line holds them (``ps`` shows
    every host user those); :func:`bwrap_command` follows them on the real command line."""
    argv = ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if plan.network is not NetworkPolicy.FULL:
        argv.append("--unshare-net")
    argv += ["--disable-userns", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    argv += ["--uid", str(UID), "--gid", str(UID), "--hostname", plan.hostname, "--clearenv"]
    for name, value in plan.env:
        argv += ["--setenv", name, value]
    for directory in view.dirs:
        argv += ["--ro-bind", directory, directory]
    for link, target in view.links.items():
        argv += ["--symlink", target, link]
    for name in view.etc:
        argv += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    if plan.network is NetworkPolicy.FULL:
        argv += ["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--bind", plan.shm_dir, "/dev/shm"]
    argv += ["--bind", plan.work_dir, WORK, "--bind", plan.tmp_dir, "/tmp", "--chdir", WORK]
    # bubblewrap's own root and /dev are writable tmpfs otherwise, uncounted by the disk limit.
    argv += ["--remount-ro", "/dev", "--remount-ro", "/"]
    if plan.seccomp_fd is not None:
        argv += ["--seccomp", str(plan.seccomp_fd)]
    return [*argv, "--setenv", COMMAND_VAR, plan.cmd]  # last: a request's variable of that name loses


def bwrap_command(plan: BwrapPlan) -> list[str]:
    """What follows the options on bubblewrap's command line: the shell entering the work dir
    (nothing secret: the command itself is in the options)."""
    return ["--", "/bin/sh", "-c", ENTER, "sh", inside(plan.workdir)]


def job_environment(env: dict[str, str], extra: Iterable[tuple[str, str]] = ()) -> tuple[tuple[str, str], ...]:
    """The environment a command sees: a fixed base (nothing of the provider's own), then the
    request's variables (which may override the base, PATH included)."""
    base = {"PATH": PATH, "HOME": WORK, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "USER": "sandbox"}
    return tuple({**base, **dict(extra), **env}.items())


#: The environment of the gate shell and of bubblewrap itself, on the host: fixed, never the
#: customer's (an LD_PRELOAD there would run the customer's code outside every namespace).
HOST_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
