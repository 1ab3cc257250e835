"""dspy-pylon: run DSPy programs on local models or a paid Nostr compute swarm.

>>> import dspy, dspy_pylon as pylon
>>> dspy.configure(lm=pylon.LM("pylon:local"))
"""

from dspy_pylon.config import (
    BACKENDS,
    Hybrid,
    Local,
    ModelSpec,
    PylonConfig,
    Swarm,
    parse_model_string,
)
from dspy_pylon.errors import (
    BackendConnectionError,
    BackendRequestError,
    BackendServerError,
    BackendTimeout,
    ConfigError,
    ContextTooLong,
    EmbeddedUnavailable,
    InvalidModelString,
    JobFailed,
    MalformedEvent,
    NoLocalBackend,
    PylonError,
    RelayUnavailable,
    ResultTooLarge,
    SwarmTimeout,
    UnknownModel,
    UnsupportedRequest,
)
from dspy_pylon.lm import LM, AsyncPylonEngine, PylonEngine, PylonLM, model_string
from dspy_pylon.local.embedded import EmbeddedLlama
from dspy_pylon.route import Route
from dspy_pylon.swarm.discovery import ProviderRecord, discover
from dspy_pylon.swarm.reputation import ProviderStats, Reputation
from dspy_pylon.usage import LmUsage, msats_to_sats

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "LM",
    "AsyncPylonEngine",
    "BackendConnectionError",
    "BackendRequestError",
    "BackendServerError",
    "BackendTimeout",
    "ConfigError",
    "ContextTooLong",
    "EmbeddedLlama",
    "EmbeddedUnavailable",
    "Hybrid",
    "InvalidModelString",
    "JobFailed",
    "LmUsage",
    "Local",
    "MalformedEvent",
    "ModelSpec",
    "NoLocalBackend",
    "ProviderRecord",
    "ProviderStats",
    "PylonConfig",
    "PylonEngine",
    "PylonError",
    "PylonLM",
    "RelayUnavailable",
    "Reputation",
    "ResultTooLarge",
    "Route",
    "Swarm",
    "SwarmTimeout",
    "UnknownModel",
    "UnsupportedRequest",
    "discover",
    "model_string",
    "msats_to_sats",
    "parse_model_string",
]
