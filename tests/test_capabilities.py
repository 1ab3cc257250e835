"""What each backend declares and what a provider announces (pure)."""

from __future__ import annotations

import pytest
from dspy import lm15

from dspy_pylon import capabilities as caps
from dspy_pylon.errors import UnsupportedRequest

TOOL = lm15.FunctionTool(name="f")
SCHEMA = lm15.Config(response_format={"type": "json_schema", "schema": {"type": "object"}})
JSON_MODE = lm15.Config(response_format={"type": "json_object"})


def _request(**fields: object) -> lm15.Request:
    return lm15.Request(model="m", messages=(lm15.Message.user("x"),), **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("backend", "template_tools", "features"),
    [
        ("llamacpp", True, ("json_schema", "json_object", "tools")),
        ("llamacpp", False, ("json_schema", "json_object")),
        ("ollama", True, ("json_schema", "json_object", "tools")),
        ("apple-fm", True, ()),
    ],
)
def test_features_announced_per_backend(backend: str, template_tools: bool, features: tuple[str, ...]) -> None:
    assert caps.feature_names(caps.local_capabilities(backend, template_tools=template_tools)) == features


@pytest.mark.parametrize(
    ("request_fields", "feature"),
    [
        ({"tools": (TOOL,)}, "tools"),
        ({"config": SCHEMA}, "response_format"),
        ({"config": JSON_MODE}, "response_format"),
    ],
)
def test_unmet_names_what_a_plain_chat_backend_cannot_honour(request_fields: dict[str, object], feature: str) -> None:
    refusal = caps.unmet(_request(**request_fields), caps.local_capabilities("apple-fm"))
    assert isinstance(refusal, UnsupportedRequest) and refusal.feature == feature
    assert caps.unmet(_request(**request_fields), caps.local_capabilities("llamacpp")) is None


def test_the_swarm_declares_what_its_v2_transcript_carries() -> None:
    assert caps.SWARM.function_calling and caps.SWARM.response_schema and caps.SWARM.json_mode
    assert {"response_format", "tools", "tool_choice"} <= caps.SWARM.params
    assert not caps.SWARM.options and not caps.SWARM.reasoning_effort
