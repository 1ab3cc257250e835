"""Run ``pylon`` commands in this process through click's ``CliRunner``.

A fresh interpreter per command costs a second of imports; the CLI's own behaviour (exit
codes, what goes to stdout and stderr, no traceback) is the same in-process. A few
subprocess smoke tests (``tests/test_cli.py``, the benchmarks, the process tests) still run
the real ``python -m dspy_pylon.cli`` entry point.

An exception escaping a command would be a traceback for a user: it is appended to
``stderr`` here, so the suite's "no traceback" checks see it exactly as they would see the
real one.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

from click.testing import CliRunner

from dspy_pylon.cli import main


@dataclass(frozen=True)
class Ran:
    """What a command did: the shape of ``subprocess.CompletedProcess`` the tests read."""

    returncode: int
    stdout: str
    stderr: str


def run_pylon(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Ran:
    """Run ``pylon *args`` in-process with ``env`` added to the environment and ``stdin`` as input."""
    result = CliRunner().invoke(main, list(args), input=stdin, env=env, catch_exceptions=True)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        stderr += "".join(traceback.format_exception(*result.exc_info))  # starts "Traceback (most recent..."
    return Ran(result.exit_code, result.stdout, stderr)
