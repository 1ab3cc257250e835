"""Control groups for sandbox jobs: memory, CPU and process-count limits the kernel enforces,
the OOM counter and CPU time a job's status and bill are decided from, and a way to kill every
process a job started (a grandchild that called ``setsid`` included).

bubblewrap has no resource limits of its own, so these are the limits. Both layouts are
supported: cgroup v2 (one unified hierarchy, ordinary hosts) and v1 or hybrid (a mount per
controller; the machines this project is tested on). Where a job's group would go is planned
from ``/proc/self/mountinfo`` and ``/proc/self/cgroup`` by pure functions; :class:`JobCgroup`
is the thin file I/O on top. A limit that cannot be set, or that reads back different from what
was written, is a :class:`SandboxRefused`: a job is never run with weaker limits than it asked.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dspy_pylon.plain_errors import SandboxRefused

#: Controllers a job needs: memory (limit and OOM counter), pids (fork bombs), cpu (a quota).
NEEDED = ("memory", "pids", "cpu")
#: Under v1 CPU time is read from cpuacct, often a mount of its own (it is here).
NEEDED_V1 = (*NEEDED, "cpuacct")
CPU_PERIOD_US = 100_000
#: A job's own groups sit in a group of this name below the supervisor's.
PARENT_NAME = "pylon-sandbox"


class CgroupVersion(enum.StrEnum):
    """Which hierarchy a controller is used through."""

    V1 = "v1"
    V2 = "v2"


@dataclass(frozen=True)
class CgroupMount:
    """A mounted cgroup hierarchy: v2 (``controllers`` empty: read from its cgroup.controllers)
    or v1 with the controllers it carries."""

    version: CgroupVersion
    mountpoint: str
    controllers: frozenset[str] = frozenset()


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup hierarchies in ``/proc/self/mountinfo``."""
    mounts: list[CgroupMount] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, after = left.split(), right.split()
        if len(fields) < 5 or len(after) < 3:
            continue
        mountpoint = fields[4].replace("\\040", " ")
        if after[0] == "cgroup2":
            mounts.append(CgroupMount(CgroupVersion.V2, mountpoint))
        elif after[0] == "cgroup":
            options = set(after[2].split(","))
            controllers = frozenset(options & {*NEEDED_V1, "freezer", "cpuset", "blkio", "devices"})
            if controllers:
                mounts.append(CgroupMount(CgroupVersion.V1, mountpoint, controllers))
    return mounts


def parse_membership(text: str) -> dict[str, str]:
    """``/proc/self/cgroup`` as controller -> path (``""`` for the v2 hierarchy)."""
    member: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for name in controllers.split(",") if controllers else [""]:
            member[name] = path
    return member


@dataclass(frozen=True)
class CgroupPlan:
    """Where a job's groups go: per controller, the version used and the parent directory."""

    parents: Mapping[str, tuple[CgroupVersion, str]]

    @property
    def version(self) -> CgroupVersion:
        """v2 when every needed controller is used through the unified hierarchy."""
        return CgroupVersion.V2 if all(v is CgroupVersion.V2 for v, _ in self.parents.values()) else CgroupVersion.V1

    def directories(self) -> list[str]:
        """Distinct parent directories (v2 controllers share one)."""
        return sorted({path for _, path in self.parents.values()})


def plan_cgroups(
    mounts: Iterable[CgroupMount],
    membership: Mapping[str, str],
    v2_enabled: frozenset[str] = frozenset(),
    *,
    parent: str | None = None,
) -> CgroupPlan:
    """Where to put a job's groups: through v2 for the controllers ``v2_enabled`` (the ones
    enabled for our own group's children), through the v1 mount otherwise, below our own group
    (or below ``parent``, an operator-delegated v2 group). :class:`SandboxRefused` names every
    controller with neither."""
    mounts = list(mounts)
    unified = next((m for m in mounts if m.version is CgroupVersion.V2), None)
    parents: dict[str, tuple[CgroupVersion, str]] = {}
    missing: list[str] = []
    for name in NEEDED_V1:
        v1 = next((m for m in mounts if name in m.controllers), None)
        if name != "cpuacct" and unified is not None and name in v2_enabled:
            base = parent or _join(unified.mountpoint, membership.get("", "/"), PARENT_NAME)
            parents[name] = (CgroupVersion.V2, base)
        elif name == "cpuacct" and parents.get("cpu", (None,))[0] is CgroupVersion.V2:
            continue  # v2 reports CPU time in cpu.stat
        elif v1 is not None:
            parents[name] = (CgroupVersion.V1, _join(v1.mountpoint, membership.get(name, "/"), PARENT_NAME))
        else:
            missing.append(f"the {name} cgroup controller (neither a v1 mount nor enabled in v2)")
    if missing:
        raise SandboxRefused(
            "this host cannot enforce a sandbox job's limits: " + "; ".join(missing), missing=tuple(missing)
        )
    return CgroupPlan(parents)


def _join(mountpoint: str, *parts: str) -> str:
    path = Path(mountpoint)
    for part in parts:
        path = path / part.lstrip("/")
    return str(path)


@dataclass(frozen=True)
class CgroupLimits:
    """What the kernel holds a job to."""

    memory_bytes: int
    cpus: int
    pids: int


def limit_writes(plan: CgroupPlan, limits: CgroupLimits) -> list[tuple[str, str, str]]:
    """(controller, file, value) to write into a job's groups, in order (v1's memsw limit may
    not go below its memory limit, so memory first; swap is not allowed: memsw = memory)."""
    quota = limits.cpus * CPU_PERIOD_US
    if plan.parents["memory"][0] is CgroupVersion.V2:
        memory = [("memory", "memory.max", str(limits.memory_bytes)), ("memory", "memory.swap.max", "0")]
    else:
        memory = [
            ("memory", "memory.limit_in_bytes", str(limits.memory_bytes)),
            ("memory", "memory.memsw.limit_in_bytes", str(limits.memory_bytes)),
        ]
    pids = [("pids", "pids.max", str(limits.pids))]
    if plan.parents["cpu"][0] is CgroupVersion.V2:
        cpu = [("cpu", "cpu.max", f"{quota} {CPU_PERIOD_US}")]
    else:
        cpu = [("cpu", "cpu.cfs_period_us", str(CPU_PERIOD_US)), ("cpu", "cpu.cfs_quota_us", str(quota))]
    return memory + pids + cpu


#: Files that need not exist (no swap accounting on this kernel): a missing one is not a refusal.
OPTIONAL_FILES = frozenset({"memory.memsw.limit_in_bytes", "memory.swap.max"})


def flat_keyed(text: str) -> dict[str, int]:
    """A cgroup "flat keyed" file (``key value`` lines) as a dict."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[key] = int(value)
    return values


def detect_plan(*, proc: str = "/proc/self", parent: str | None = None) -> CgroupPlan:
    """The plan for this process, from its mountinfo and cgroup files (``proc`` is injectable)."""
    try:
        mounts = parse_mountinfo(Path(proc, "mountinfo").read_text())
        membership = parse_membership(Path(proc, "cgroup").read_text())
    except OSError as exc:
        raise SandboxRefused(f"cannot read this process's cgroups: {exc}", missing=("/proc cgroup files",)) from None
    unified = next((m for m in mounts if m.version is CgroupVersion.V2), None)
    enabled: frozenset[str] = frozenset()
    if unified is not None:
        # Children of our group can use what its subtree_control enables (or a delegated parent's).
        own = Path(parent) if parent else Path(_join(unified.mountpoint, membership.get("", "/")))
        with contextlib.suppress(OSError):
            enabled = frozenset((own / "cgroup.subtree_control").read_text().split())
        if not parent:
            with contextlib.suppress(OSError):
                # Our own group may not have enabled them yet: the pylon-sandbox group can, if offered.
                offered = frozenset((own / "cgroup.controllers").read_text().split())
                enabled = enabled | (offered if _can_enable(own / PARENT_NAME, offered) else frozenset())
    return plan_cgroups(mounts, membership, enabled, parent=parent)


def _can_enable(group: Path, offered: frozenset[str]) -> bool:
    # A v2 group with processes cannot hand domain controllers to children ("no internal
    # processes"), but the empty pylon-sandbox group below it can, once they are enabled for it.
    try:
        group.mkdir(exist_ok=True)
        wanted = " ".join(f"+{c}" for c in NEEDED if c in offered)
        (group.parent / "cgroup.subtree_control").write_text(wanted)
        (group / "cgroup.subtree_control").write_text(wanted)
    except OSError:
        return False
    return True


@dataclass
class JobCgroup:
    """One job's groups (file I/O only; the decisions are above). Create with :meth:`create`."""

    plan: CgroupPlan
    name: str
    dirs: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def create(cls, plan: CgroupPlan, name: str, limits: CgroupLimits, *, swap: bool | None = None) -> JobCgroup:
        """Make the job's groups and set its limits, each read back; :class:`SandboxRefused`
        (after removing what was made) if one cannot be set. Without a swap limit file (no swap
        accounting) a host that has swap (``swap``: read from /proc/swaps unless given) is
        refused too: the memory limit would not hold."""
        if swap is None:
            swap = host_has_swap()
        group = cls(plan, name)
        try:
            made: set[Path] = set()
            for controller, (_, parent) in plan.parents.items():
                path = Path(parent, name)
                if path not in made:  # v2 controllers share one group
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.mkdir(exist_ok=False)
                    made.add(path)
                group.dirs[controller] = path
            if plan.parents["memory"][0] is CgroupVersion.V2:
                _enable_v2(Path(plan.parents["memory"][1]))
            for controller, filename, value in limit_writes(plan, limits):
                target = group.dirs[controller] / filename
                if filename in OPTIONAL_FILES and not target.exists():
                    if swap:
                        raise OSError(f"{target.name} is missing and this host has swap: memory could spill into it")
                    continue
                target.write_text(value)
                if not _reads_back(target.read_text(), value):
                    raise OSError(f"{target} reads {target.read_text().strip()!r} after writing {value!r}")
        except OSError as exc:
            group.remove()
            raise SandboxRefused(
                f"cannot set a sandbox job's cgroup limits: {exc}", missing=(f"a writable cgroup ({exc})",)
            ) from None
        return group

    def procs_files(self) -> list[Path]:
        """Each group's ``cgroup.procs`` (a process joins by writing its pid to all of them)."""
        return [d / "cgroup.procs" for d in sorted(set(self.dirs.values()))]

    def join(self, pid: int) -> None:
        """Put ``pid`` in every group of the job."""
        for procs in self.procs_files():
            procs.write_text(str(pid))

    def oom_kills(self) -> int:
        """How many processes the kernel killed for memory in this job."""
        mem = self.dirs["memory"]
        name = "memory.events" if self.plan.parents["memory"][0] is CgroupVersion.V2 else "memory.oom_control"
        return flat_keyed(_read(mem / name)).get("oom_kill", 0)

    def cpu_ns(self) -> int:
        """CPU time used by the job's processes, in nanoseconds."""
        if self.plan.parents["cpu"][0] is CgroupVersion.V2:
            return flat_keyed(_read(self.dirs["cpu"] / "cpu.stat")).get("usage_usec", 0) * 1000
        return int(_read(self.dirs["cpuacct"] / "cpuacct.usage").strip() or 0)

    def pids_limit_hits(self) -> int:
        """How many forks the process limit refused."""
        return flat_keyed(_read(self.dirs["pids"] / "pids.events")).get("max", 0)

    def memory_peak(self) -> int:
        """Highest memory use seen, in bytes (0 where the kernel does not keep it)."""
        v2 = self.plan.parents["memory"][0] is CgroupVersion.V2
        text = _read(self.dirs["memory"] / ("memory.peak" if v2 else "memory.max_usage_in_bytes")).strip()
        return int(text) if text.isdigit() else 0

    def pids(self) -> set[int]:
        """Processes still in the job."""
        found: set[int] = set()
        for procs in self.procs_files():
            found.update(int(p) for p in _read(procs).split() if p.isdigit())
        return found

    def kill(self, *, within_s: float = 2.0) -> bool:
        """Kill every process in the job (v2's cgroup.kill, else SIGKILL to each until none is
        left: a fork between reading and killing is caught on the next pass). True when empty."""
        pids_dir = self.dirs.get("pids")
        if pids_dir is not None and self.plan.parents["pids"][0] is CgroupVersion.V2:
            kill_file = pids_dir / "cgroup.kill"
            with contextlib.suppress(OSError):
                if kill_file.exists():
                    kill_file.write_text("1")
        deadline = time.monotonic() + within_s
        while True:
            left = self.pids()
            if not left:
                return True
            if time.monotonic() > deadline:
                return False
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    def remove(self) -> None:
        """Remove the job's groups (killing what is left first)."""
        if not self.dirs:
            return
        self.kill()
        for path in sorted(set(self.dirs.values()), reverse=True):
            for _ in range(50):  # a killed process leaves its group a moment after it dies
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
        self.dirs.clear()


def host_has_swap(swaps: str = "/proc/swaps") -> bool:
    """Whether any swap area is active (``/proc/swaps`` lists more than its header)."""
    return len(_read(Path(swaps)).strip().splitlines()) > 1


def _enable_v2(parent: Path) -> None:
    with contextlib.suppress(OSError):
        (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in NEEDED))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _reads_back(text: str, written: str) -> bool:
    # A kernel rounds limits to pages and reports "max" for unlimited; a limit that silently did
    # not apply reads back as something else.
    got = text.split()
    want = written.split()
    if not got:
        return False
    if want[0].isdigit() and got[0].isdigit():
        page = 4096
        return abs(int(got[0]) - int(want[0])) < page and got[1:] == want[1:]
    return got == want
