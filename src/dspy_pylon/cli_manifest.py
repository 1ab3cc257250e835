"""The ``pylon manifest`` commands: the JSON Schema, and showing, verifying and comparing compiled programs.

Registered on the ``pylon`` group by :mod:`dspy_pylon.cli`. None of them imports DSPy: a
directory is checked from its files (``program.json``, ``manifest.json``) alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dspy_pylon.plain_errors import PylonError

console = Console()

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.group()
def manifest() -> None:
    """Compiled programs: program.json + manifest.json directories written by pylon.save_compiled."""


@manifest.command("schema")
def manifest_schema() -> None:
    """Print the JSON Schema of manifest.json."""
    from dspy_pylon.contract.manifest import manifest_json_schema

    click.echo(json.dumps(manifest_json_schema(), indent=2))


@manifest.command("verify")
@click.argument("directory", type=_DIR)
@click.option("--signer", "signers", multiple=True, help="Require a signature by this npub (or hex key); repeatable.")
@click.option("--require-signature", is_flag=True, help="Refuse an unsigned manifest.")
def manifest_verify(directory: Path, signers: tuple[str, ...], require_signature: bool) -> None:
    """Check a compiled program: program.json's digest and compiled_id, and the signature. Exit 0 or 1."""
    from dspy_pylon.contract.files import verify_compiled
    from dspy_pylon.nip06 import npub

    try:
        verified = verify_compiled(directory, trusted_signers=signers, require_signature=require_signature)
    except PylonError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    who = f"signed by {npub(verified.signer)}" if verified.signer else "unsigned (hashes checked, publisher unknown)"
    click.echo(f"ok: {directory} is compiled program {verified.manifest.compiled_id}, {who}")


@manifest.command("show")
@click.argument("directory", type=_DIR)
def manifest_show(directory: Path) -> None:
    """Show a compiled program's manifest as a table (after verifying its files)."""
    from dspy_pylon.contract.files import verify_compiled

    try:
        verified = verify_compiled(directory)
    except PylonError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    console.print(manifest_table(verified.manifest, verified.signer))


def manifest_table(m: Any, signer: str | None) -> Table:
    """A manifest as a rich table (also used by ``pylon demo``)."""
    from dspy_pylon.nip06 import npub

    # Every value comes from a file someone sent: escaped, so "[/]" or "[link=...]" is text, not markup.
    table = _Escaped(title=f"compiled program {escape(m.signature_name)}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("compiled_id", m.compiled_id)
    table.add_row("signed by", npub(signer) if signer else "unsigned")
    table.add_row("optimizer", f"{m.optimizer or '-'} (seed {m.seed if m.seed is not None else '-'})")
    table.add_row("predictors", ", ".join(f"{p.name} ({p.kind})" for p in m.structure))
    table.add_row("trainset", _set(m.trainset_id, m.trainset_size))
    table.add_row("valset", _set(m.valset_id, m.valset_size))
    for label, card in (("score before", m.baseline_scorecard), ("score", m.scorecard)):
        if card is not None:
            table.add_row(
                label,
                f"median {card.median_score:.3f} over {card.rollouts} rollout(s) of {card.examples} example(s), "
                f"p_fail {card.p_fail:.3f}",
            )
    if m.scorecard is not None and m.scorecard.truth_metrics:
        table.add_row("truth metrics", ", ".join(f"{k} {v:.3f}" for k, v in m.scorecard.truth_metrics.items()))
    c = m.compatibility
    table.add_row("tools", ", ".join(c.required_tools) or "none")
    table.add_row("lanes", ", ".join(lane.value for lane in c.required_lanes) or "any")
    table.add_row("privacy", ", ".join(mode.value for mode in c.privacy_modes_allowed))
    table.add_row(
        "min reputation", f"{c.min_provider_reputation:.2f}" if c.min_provider_reputation is not None else "none"
    )
    table.add_row("models", ", ".join(_model(r) for r in m.models) or "-")
    table.add_row("versions", f"dspy {m.dspy_version}, dspy-pylon {m.dspy_pylon_version}")
    table.add_row("created", m.created_at.isoformat())
    return table


class _Escaped(Table):
    """A table whose cells are plain text: rich markup in them is escaped."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        super().add_row(*(escape(r) if isinstance(r, str) else r for r in renderables), **kwargs)


def _set(set_id: str | None, size: int | None) -> str:
    return "-" if set_id is None else f"{size} example(s), id {set_id[:16]}…"


def _model(ref: Any) -> str:
    text: str = ref.model
    if ref.served_model:
        text += f" (served: {ref.served_model})"
    if ref.gguf_sha256:
        text += f" gguf {ref.gguf_sha256[:12]}…"
    return text


@manifest.command("diff")
@click.argument("before", type=_DIR)
@click.argument("after", type=_DIR)
def manifest_diff(before: Path, after: Path) -> None:
    """What changed between two compiled programs: instructions, demos, fields, scores. Exit 0 either way."""
    from dspy_pylon.contract.diffing import diff_programs
    from dspy_pylon.contract.files import verify_compiled

    try:
        a, b = verify_compiled(before), verify_compiled(after)
    except PylonError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    changes = diff_programs(a.manifest, a.artifact, b.manifest, b.artifact)
    if not changes:
        click.echo("no differences")
        return
    table = _Escaped(title=escape(f"{before} → {after}"))
    table.add_column("where", style="bold")
    table.add_column("before")
    table.add_column("after")
    for change in changes:
        table.add_row(change.where, _short(change.before), _short(change.after))
    console.print(table)


def _short(value: Any, limit: int = 160) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"
