"""The README's compiled-program example runs as shown (on the bundled SmolLM2, like the demo)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import dspy_pylon as pylon

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text[text.index("## Compiled programs") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


@pytest.mark.smollm2
def test_the_readme_compile_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    pylon.init_identity()  # the example signs with the user's identity (`pylon init`)
    namespace: dict[str, object] = {}
    exec(compile(_example(), str(README), "exec"), namespace)
    manifest = namespace["manifest"]
    assert isinstance(manifest, pylon.CompiledModuleManifest)
    assert manifest.signature is not None and manifest.scorecard is not None
    assert pylon.verify_compiled(tmp_path / "qa-v1").signer == pylon.load_identity().public_key_hex
    assert manifest.compatibility.privacy_modes_allowed == (pylon.PrivacyMode.NO_PII,)
