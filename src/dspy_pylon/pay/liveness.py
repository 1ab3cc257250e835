"""Whether the process that opened a job is still running, robust to PID reuse.

A process is named by its pid *and* its start time (psutil reads it from ``/proc`` on
Linux and from the kernel on macOS): after a reboot or a wrap-around the same pid is
another process, which must not keep a dead call's jobs open.
"""

from __future__ import annotations

import os

# psutil reports start times rounded to the kernel's clock tick (10 ms on Linux).
_SAME_START_S = 1.0


def this_process() -> tuple[int, float]:
    """This process's pid and start time (Unix seconds)."""
    import psutil  # here, not at the top: `pylon spend` imports the ledger and rarely opens one

    pid = os.getpid()
    return pid, psutil.Process(pid).create_time()


def alive(pid: int, started: float | None) -> bool:
    """Whether process ``pid``, started at ``started`` (None: unknown, pid alone decides), still runs."""
    import psutil

    if pid <= 0:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(process.create_time() - started) < _SAME_START_S
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # someone else's process, alive
        return True
