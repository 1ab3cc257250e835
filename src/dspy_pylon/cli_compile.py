"""``pylon compile SCRIPT.py:PROGRAM``: compile a program from the command line and save it as an artifact.

Registered on the ``pylon`` group by :mod:`dspy_pylon.cli`. The script is the user's own code
(it defines the program and the metric); the sets are JSON Lines files. Everything else is
:func:`dspy_pylon.compile` and :func:`dspy_pylon.save_compiled`.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import click

from dspy_pylon.plain_errors import ConfigError, PylonError


def _from_script(target: str, what: str, loaded: dict[Path, dict[str, Any]]) -> tuple[Path, Any]:
    script, sep, name = target.rpartition(":")
    if not sep or not script or not name:
        raise ConfigError(f"{what} must be SCRIPT.py:NAME, got {target!r}")
    path = Path(script)
    if not path.is_file():
        raise ConfigError(f"{what}: {script} is not a file")
    key = path.resolve()
    if key not in loaded:  # each script runs once, however many names are taken from it
        loaded[key] = runpy.run_path(str(path), run_name="__pylon_compile__")
    namespace = loaded[key]
    if name not in namespace:
        defined = ", ".join(sorted(k for k in namespace if not k.startswith("_"))) or "nothing"
        raise ConfigError(f"{what}: {script} defines no {name!r} (it defines {defined})")
    return path, namespace[name]


def _program(value: Any, target: str) -> Any:
    import inspect

    import dspy

    if callable(value) and not isinstance(value, dspy.Module):  # a class or a factory: called with nothing
        try:
            inspect.signature(value).bind()
        except TypeError:
            raise ConfigError(
                f"{target} needs arguments; give a dspy.Module, or a class or function taking none"
            ) from None
        except ValueError:  # no signature to read (a builtin): let the call say
            pass
        value = value()
    if not isinstance(value, dspy.Module):
        raise ConfigError(f"{target} is a {type(value).__name__}, not a dspy.Module (or a callable returning one)")
    return value


def read_examples(path: Path, inputs: tuple[str, ...]) -> list[Any]:
    """A JSON Lines file as ``dspy.Example``s whose ``inputs`` are the given fields."""
    import dspy

    examples = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number} is not JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{number} is a JSON {type(row).__name__}, not an object")
        missing = [field for field in inputs if field not in row]
        if missing:
            raise ConfigError(f"{path}:{number} has no input field {', '.join(missing)}")
        examples.append(dspy.Example(**row).with_inputs(*inputs))
    if not examples:
        raise ConfigError(f"{path} holds no examples")
    return examples


def _optimizer(name: str, metric: Any, options: tuple[str, ...]) -> Any:
    import inspect

    import dspy
    from dspy.teleprompt import Teleprompter

    cls = getattr(dspy, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Teleprompter)):
        raise ConfigError(f"{name!r} is not a DSPy optimizer (e.g. BootstrapFewShot, LabeledFewShot, MIPROv2, GEPA)")
    settings: dict[str, Any] = {}
    for option in options:
        key, sep, raw = option.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option takes KEY=VALUE, got {option!r}")
        try:
            settings[key] = json.loads(raw)
        except json.JSONDecodeError:
            settings[key] = raw
    if "metric" in inspect.signature(cls).parameters:
        settings.setdefault("metric", metric)
    try:
        return cls(**settings)
    except TypeError as exc:
        raise ConfigError(f"{name} does not take these settings: {exc}") from None


@click.command("compile")
@click.argument("target")
@click.option("--trainset", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--valset", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option("--inputs", required=True, help="Comma-separated input fields of the examples (the rest are labels).")
@click.option(
    "--metric", "metric_target", default=None, help="SCRIPT.py:NAME of the metric [default: SCRIPT.py:metric]."
)
@click.option("--optimizer", default="BootstrapFewShot", show_default=True, help="A dspy optimizer class name.")
@click.option("--option", "options", multiple=True, help="Optimizer setting KEY=VALUE (JSON value); repeatable.")
@click.option("--lm", "model", default="pylon:local", show_default=True, help="The pylon model string to compile with.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--rollouts", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Directory to write.")
@click.option("--sign", is_flag=True, help="Sign the manifest with this machine's identity (pylon init).")
def compile_cmd(
    target: str,
    trainset: Path,
    valset: Path | None,
    inputs: str,
    metric_target: str | None,
    optimizer: str,
    options: tuple[str, ...],
    model: str,
    max_tokens: int,
    rollouts: int,
    out: Path | None,
    sign: bool,
) -> None:
    """Compile SCRIPT.py:PROGRAM (a dspy.Module, or a class making one) and save it with its manifest."""
    try:
        import dspy

        import dspy_pylon as pylon
        from dspy_pylon.cli_manifest import console, manifest_table

        loaded: dict[Path, dict[str, Any]] = {}
        script, value = _from_script(target, "the program", loaded)
        program = _program(value, target)
        _, metric = _from_script(metric_target or f"{script}:metric", "the metric", loaded)
        fields = tuple(f.strip() for f in inputs.split(",") if f.strip())
        train = read_examples(trainset, fields)
        val = read_examples(valset, fields) if valset is not None else None
        identity = pylon.load_identity() if sign else None
        lm = pylon.LM(model, max_tokens=max_tokens)
        with dspy.context(lm=lm):
            compiled, manifest = pylon.compile(
                program, _optimizer(optimizer, metric, options), train, val, metric=metric, rollouts=rollouts
            )
        directory = pylon.save_compiled(compiled, manifest, out or Path(f"{script.stem}-compiled"), identity=identity)
    except PylonError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    console.print(manifest_table(manifest, identity.public_key_hex if identity is not None else None))
    click.echo(f"saved {directory}/ (program.json, manifest.json)")
