"""The global budget of a ``PYLON_HOME``: ``<home>/budget.toml`` (no DSPy needed here)."""

from __future__ import annotations

from pathlib import Path

from dspy_pylon.plain_errors import ConfigError


def load_global_budget(home: Path) -> int:
    """The global budget in msats from ``<home>/budget.toml`` (``global_budget_sats = N``); 0 = none."""
    import tomllib

    path = home / "budget.toml"
    if not path.is_file():
        return 0
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    sats = data.get("global_budget_sats", 0)
    if isinstance(sats, bool) or not isinstance(sats, int) or sats < 0:
        raise ConfigError(f"{path}: global_budget_sats must be a non-negative integer, got {sats!r}")
    unknown = set(data) - {"global_budget_sats"}
    if unknown:
        raise ConfigError(f"{path}: unknown settings {sorted(unknown)}; allowed: ['global_budget_sats']")
    return sats * 1000


def save_global_budget(home: Path, sats: int) -> Path:
    """Write ``<home>/budget.toml`` (0 removes the global budget)."""
    path = home / "budget.toml"
    home.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# Most this PYLON_HOME may ever pay, all processes together (0 = no limit).\nglobal_budget_sats = {sats}\n"
    )
    return path
