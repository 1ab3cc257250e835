"""Where a job's cgroups go and what is written into them, for both layouts: v1/hybrid (this
machine) and v2 (ordinary hosts; no v2 controllers are delegated here, so v2 is checked on a
directory tree laid out like cgroupfs: the same files, written and read back)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import dspy_pylon as pylon
from dspy_pylon.sandbox import cgroups
from dspy_pylon.sandbox.bwrap import (
    COMMAND_VAR,
    ENTER,
    HOST_ENV,
    BwrapPlan,
    HostView,
    bwrap_args,
    bwrap_command,
    job_environment,
)
from dspy_pylon.sandbox.cgroups import (
    CgroupLimits,
    CgroupMount,
    CgroupVersion,
    JobCgroup,
    detect_plan,
    flat_keyed,
    limit_writes,
    parse_membership,
    parse_mountinfo,
    plan_cgroups,
)
from dspy_pylon.sandbox.outcome import CappedOutput, decide_status
from dspy_pylon.sandbox.schema import PREVIEW_BYTES, Evidence, NetworkPolicy, SandboxStatus

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_MEMBER = "8:pids:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n"
V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V2_MEMBER = "0::/user.slice/user-1000.slice/session-2.scope\n"
LIMITS = CgroupLimits(memory_bytes=256 << 20, cpus=2, pids=128)


def test_a_hybrid_host_uses_each_v1_mount_below_its_own_group() -> None:
    plan = plan_cgroups(parse_mountinfo(HYBRID), parse_membership(HYBRID_MEMBER))
    assert plan.version is CgroupVersion.V1
    assert plan.parents["memory"] == (CgroupVersion.V1, "/sys/fs/cgroup/memory/process_api/abc/pylon-sandbox")
    assert plan.parents["pids"] == (CgroupVersion.V1, "/sys/fs/cgroup/pids/pylon-sandbox")
    assert plan.parents["cpuacct"][1] == "/sys/fs/cgroup/cpuacct/pylon-sandbox"


def test_a_v2_host_puts_every_controller_in_one_group() -> None:
    plan = plan_cgroups(parse_mountinfo(V2), parse_membership(V2_MEMBER), frozenset({"memory", "pids", "cpu"}))
    assert plan.version is CgroupVersion.V2
    assert plan.directories() == ["/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope/pylon-sandbox"]
    assert "cpuacct" not in plan.parents  # v2 reports CPU time in cpu.stat


def test_a_v2_host_without_delegated_controllers_is_refused_naming_each() -> None:
    with pytest.raises(pylon.SandboxRefused) as caught:
        plan_cgroups(parse_mountinfo(V2), parse_membership(V2_MEMBER), frozenset({"cpu"}))
    assert [m.split()[1] for m in caught.value.missing] == ["memory", "pids"]
    assert isinstance(caught.value, pylon.SandboxError)


def test_this_hosts_plan_is_detected() -> None:
    plan = detect_plan()
    assert {"memory", "pids", "cpu"} <= set(plan.parents)


def test_v1_limits_set_memsw_after_memory_and_a_cfs_quota() -> None:
    plan = plan_cgroups(parse_mountinfo(HYBRID), parse_membership(HYBRID_MEMBER))
    assert limit_writes(plan, LIMITS) == [
        ("memory", "memory.limit_in_bytes", str(256 << 20)),
        ("memory", "memory.memsw.limit_in_bytes", str(256 << 20)),
        ("pids", "pids.max", "128"),
        ("cpu", "cpu.cfs_period_us", "100000"),
        ("cpu", "cpu.cfs_quota_us", "200000"),
    ]


def _fake_v2(tmp_path: Path) -> Path:
    root = tmp_path / "cgroup"
    (root / "pylon-sandbox").mkdir(parents=True)
    (root / "pylon-sandbox" / "cgroup.subtree_control").write_text("")
    return root


def test_a_v2_job_group_gets_its_limits_counters_and_is_removed(tmp_path: Path) -> None:
    root = _fake_v2(tmp_path)
    plan = plan_cgroups([CgroupMount(CgroupVersion.V2, str(root))], {"": "/"}, frozenset({"memory", "pids", "cpu"}))
    group = JobCgroup.create(plan, "job-1", LIMITS)
    where = root / "pylon-sandbox" / "job-1"
    assert (where / "memory.max").read_text() == str(256 << 20)
    assert not (where / "memory.swap.max").exists()  # no swap accounting on this "kernel": not required
    assert (where / "cpu.max").read_text() == "200000 100000"
    assert (where / "pids.max").read_text() == "128"
    (where / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (where / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\n")
    (where / "cgroup.procs").write_text("")
    assert (group.oom_kills(), group.cpu_ns()) == (1, 1_500_000)
    for name in ("memory.max", "cpu.max", "pids.max", "memory.events", "cpu.stat", "cgroup.procs"):
        (where / name).unlink()
    group.remove()
    assert not where.exists()


def test_a_limit_that_does_not_read_back_is_refused_and_nothing_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _fake_v2(tmp_path)
    plan = plan_cgroups([CgroupMount(CgroupVersion.V2, str(root))], {"": "/"}, frozenset({"memory", "pids", "cpu"}))
    monkeypatch.setattr(cgroups, "_reads_back", lambda text, written: False)  # the kernel ignored the limit
    with pytest.raises(pylon.SandboxRefused, match="cgroup limits") as caught:
        JobCgroup.create(plan, "job-2", LIMITS)
    assert "writable cgroup" in caught.value.missing[0]
    # (Removing the half-made group is checked on real cgroupfs, where rmdir takes the control
    # files with it: test_executor's fixture finds no job group left after any test.)


def test_read_back_allows_page_rounding_only() -> None:
    assert cgroups._reads_back("268435456\n", "268435456")
    assert cgroups._reads_back("268435456\n", "268435457")  # rounded down to a page
    assert not cgroups._reads_back("max\n", "268435456")
    assert not cgroups._reads_back("9223372036854771712\n", "268435456")
    assert cgroups._reads_back("200000 100000\n", "200000 100000")


def test_flat_keyed_files_parse() -> None:
    assert flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 4\nbad x\n") == {
        "oom_kill_disable": 0,
        "under_oom": 0,
        "oom_kill": 4,
    }


def test_the_bwrap_arguments_isolate_and_carry_the_environment_and_command() -> None:
    view = HostView(links={"/bin": "usr/bin"}, dirs=("/usr",), etc=("hosts",))
    env = job_environment({"A": "1", "PATH": "/opt/bin"})
    plan = BwrapPlan("/j/work", "/j/tmp", "/j/shm", "make test", "sub", NetworkPolicy.NONE, 7, env)
    argv = bwrap_args(plan, view)
    assert argv[-3:] == ["--setenv", COMMAND_VAR, "make test"]
    assert bwrap_command(plan) == ["--", "/bin/sh", "-c", ENTER, "sh", "/work/sub"]
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session", "--disable-userns"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL" and argv[argv.index("--seccomp") + 1] == "7"
    assert argv.index("--clearenv") < argv.index("--setenv")
    assert argv[argv.index("A") - 1 : argv.index("A") + 2] == ["--setenv", "A", "1"]
    assert argv[argv.index("/j/shm") - 1 : argv.index("/j/shm") + 2] == ["--bind", "/j/shm", "/dev/shm"]
    assert argv.index("--remount-ro") > argv.index("--dev")
    full = bwrap_args(BwrapPlan("/j/work", "/j/tmp", "/j/shm", "x", network=NetworkPolicy.FULL), view)
    assert "--unshare-net" not in full and "/etc/resolv.conf" in full
    assert dict(env)["PATH"] == "/opt/bin" and dict(env)["HOME"] == "/work"
    assert "LD_PRELOAD" not in HOST_ENV and set(HOST_ENV) == {"PATH", "LANG"}


def test_output_is_hashed_up_to_the_cap_and_previewed() -> None:
    out = CappedOutput(cap=10_000)
    assert out.feed(b"a" * 6000)
    assert not out.feed(b"b" * 6000)
    assert out.kept == 10_000 and out.capped
    assert out.sha256 == hashlib.sha256(b"a" * 6000 + b"b" * 4000).hexdigest()
    assert out.preview == "a" * PREVIEW_BYTES


@pytest.mark.parametrize(
    ("evidence", "status"),
    [
        ({"setup_error": "bad tarball", "timed_out": True}, SandboxStatus.ERROR),
        ({"cancelled": True, "timed_out": True}, SandboxStatus.CANCELLED),
        ({"timed_out": True, "oom_kills": 1}, SandboxStatus.TIMEOUT),
        ({"oom_kills": 2, "failed_command": 0}, SandboxStatus.OOM),
        ({"output_capped": True}, SandboxStatus.FAILED),
        ({"failed_command": 3}, SandboxStatus.FAILED),
        ({}, SandboxStatus.SUCCESS),
    ],
)
def test_the_status_comes_from_the_evidence_in_order(evidence: dict[str, object], status: SandboxStatus) -> None:
    assert decide_status(Evidence(wall_ms=1, **evidence)) is status  # type: ignore[arg-type]
