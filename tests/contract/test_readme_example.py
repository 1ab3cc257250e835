"""The README's compiled-program example runs as shown (on the bundled SmolLM2, like the demo)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dspy
import pytest

import dspy_pylon as pylon

README = Path(__file__).resolve().parents[2] / "README.md"


def _example(heading: str = "## Compiled programs") -> str:
    text = README.read_text()
    section = text[text.index(heading) :]
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


@pytest.mark.smollm2
def test_the_readme_tracing_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {}
    exec(compile(_example("## Tracing a run"), str(README), "exec"), namespace)
    recorder = namespace["recorder"]
    assert isinstance(recorder, pylon.TraceRecorder)
    kinds = [node.type for node in recorder.graph]
    assert kinds.count(pylon.NodeType.EVALUATE) == 1 and kinds.count(pylon.NodeType.LM) >= 3
    lm_calls = [node for node in recorder.graph if node.type is pylon.NodeType.LM]
    assert all(
        node.usage and node.usage["prompt_tokens"] > 0 for node in lm_calls if not node.attributes.get("cache_hit")
    )
    assert "predictor question -> reasoning, answer" in capsys.readouterr().out


@pytest.mark.smollm2
def test_the_readme_hud_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {}
    exec(compile(_example("## The live HUD"), str(README), "exec"), namespace)
    hud = namespace["hud"]
    assert isinstance(hud, pylon.hud.Hud)
    assert re.search(r"pylon HUD: http://127\.0\.0\.1:\d+/", capsys.readouterr().err)
    kinds = [e.kind for e in hud.server.log.since(0)[0]]
    assert kinds.count(pylon.hud.EventKind.NODE_END) >= 4 and pylon.hud.EventKind.RUN_COMPLETE in kinds
    assert hud.callback not in (dspy.settings.get("callbacks") or [])  # closed: no longer recording


@pytest.mark.smollm2
def test_the_readme_receipts_example_runs(embedded_relay: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code = _example("## Receipts on Nostr").replace("ws://127.0.0.1:7777", embedded_relay.url)
    namespace: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), namespace)
    summary_id, ok = capsys.readouterr().out.split()[-2:]
    assert len(summary_id) == 64 and ok == "True"
    reader = pylon.NostrBridge([embedded_relay.url])
    try:
        recorder = namespace["recorder"]
        assert isinstance(recorder, pylon.TraceRecorder)
        assert reader.fetch_trace(summary_id).graph.to_json() == recorder.graph.to_json()
    finally:
        reader.close()


@pytest.mark.smollm2
def test_the_readme_refine_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {}
    exec(compile(_example("## Refine: retries"), str(README), "exec"), namespace)
    result = namespace["result"]
    assert isinstance(result, pylon.RefineResult) and 1 <= len(result.attempts) <= 4
    out = capsys.readouterr().out
    assert "attempt 1 (primary pylon:local)" in out
    # The fallback is reached only if both local attempts fall short; this machine has no swarm
    # on its default relays, so such an attempt fails, recorded, and the best is returned.
    assert all(a.fallback == (a.index > 2) for a in result.attempts)


def test_the_readme_sandbox_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {}
    exec(compile(_example("## Sandboxed code execution"), str(README), "exec"), namespace)
    first, second = capsys.readouterr().out.splitlines()
    assert first == "success 0 45"
    cpu_ms, digest, path = second.split()
    assert int(cpu_ms) >= 0 and len(digest) == 16 and path == "out.txt"
