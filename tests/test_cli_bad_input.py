"""Every CLI option refuses a malformed value with a one-line usage error, never a traceback
(in-process through click's CliRunner: rejected before any command runs)."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from dspy_pylon.cli import main


def _commands(group: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, group
    if isinstance(group, click.Group):
        for name, command in group.commands.items():
            yield from _commands(command, (*path, name))


def _bad_values(param: click.Parameter) -> list[str]:
    kind = param.type
    if isinstance(kind, click.IntRange | click.FloatRange):
        values = ["abc"]
        if kind.min is not None:
            values.append(str(int(kind.min) - 1))
        if kind.max is not None:
            values.append(str(int(kind.max) + 1))
        return values
    if isinstance(kind, click.types.IntParamType | click.types.FloatParamType):
        return ["abc"]
    if isinstance(kind, click.Choice):
        return ["no-such-choice"]
    return []


CASES = [
    pytest.param([*path, option.opts[0], value], id=" ".join([*path, option.opts[0], value]))
    for path, command in _commands(main)
    for option in command.params
    if isinstance(option, click.Option) and not option.is_flag
    for value in _bad_values(option)
]


def test_there_are_cases() -> None:
    assert len(CASES) >= 8


@pytest.mark.parametrize("argv", CASES)
def test_bad_option_values_are_usage_errors(argv: list[str]) -> None:
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "Invalid value" in result.output


def test_unknown_options_and_commands_are_usage_errors() -> None:
    for argv in (["--no-such-flag"], ["no-such-command"], ["local", "serve", "--no-such"]):
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 2 and "Traceback" not in result.output
