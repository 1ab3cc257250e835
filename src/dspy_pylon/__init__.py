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
    IdentityError,
    IdentityMissing,
    InvalidMnemonic,
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
from dspy_pylon.identity import (
    Identity,
    generate_mnemonic,
    init_identity,
    keys_from_mnemonic,
    load_identity,
    pylon_home,
    resolve_keys,
    validate_mnemonic,
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
    "Identity",
    "IdentityError",
    "IdentityMissing",
    "InvalidMnemonic",
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
    "generate_mnemonic",
    "init_identity",
    "keys_from_mnemonic",
    "load_identity",
    "model_string",
    "msats_to_sats",
    "parse_model_string",
    "pylon_home",
    "resolve_keys",
    "validate_mnemonic",
]
