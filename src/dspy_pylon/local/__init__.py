"""Local backends: detection, the OpenAI-compatible chat client, and embedded llama.cpp."""

from dspy_pylon.local.detect import ProbeResult, detect
from dspy_pylon.local.embedded import EmbeddedLlama, default_model_path, embedded_available
from dspy_pylon.local.endpoints import Endpoint, endpoint_for

__all__ = [
    "EmbeddedLlama",
    "Endpoint",
    "ProbeResult",
    "default_model_path",
    "detect",
    "embedded_available",
    "endpoint_for",
]
