"""dspy-pylon: run DSPy programs on local models or a paid Nostr compute swarm.

>>> import dspy, dspy_pylon as pylon
>>> dspy.configure(lm=pylon.LM("pylon:local"))
"""

# Exports load on first use (PEP 562): ``import dspy_pylon`` (and so the ``pylon`` CLI) does
# not import DSPy until something that needs it is touched; ``pylon.LM`` still works as before.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from dspy import lm15

    from dspy_pylon.callbacks import CompositeCallback, PylonCallback, QueuedCallback, get_callback, set_callback
    from dspy_pylon.config import BACKENDS, Hybrid, Local, ModelSpec, PylonConfig, Swarm, parse_model_string
    from dspy_pylon.contract.compatibility import Requirement, Unmet
    from dspy_pylon.contract.compiling import compile as compile  # re-exported, not in __all__
    from dspy_pylon.contract.files import Verified, verify_compiled
    from dspy_pylon.contract.loading import build_manifest, compiled_id_of, load_compiled, save_compiled
    from dspy_pylon.contract.manifest import (
        Compatibility,
        CompiledModuleManifest,
        ManifestSignature,
        ModelRef,
        Scorecard,
        manifest_json_schema,
    )
    from dspy_pylon.contract.modes import Lane, PrivacyMode
    from dspy_pylon.contract.scoring import score_program
    from dspy_pylon.errors import (
        BackendConnectionError,
        BackendRequestError,
        BackendServerError,
        BackendTimeout,
        BudgetExceeded,
        CompatibilityError,
        ConfigError,
        ContextTooLong,
        EmbeddedUnavailable,
        IdentityError,
        IdentityMissing,
        IntegrityError,
        InvalidMnemonic,
        InvalidModelString,
        JobFailed,
        MalformedEvent,
        ManifestError,
        NoEligibleProvider,
        NoLocalBackend,
        PaymentFailed,
        PaymentRefused,
        PaymentRequired,
        PrivacyViolation,
        PylonError,
        RelayUnavailable,
        ResultTooLarge,
        SandboxError,
        SandboxRefused,
        SignatureError,
        StoreError,
        SwarmTimeout,
        UnknownModel,
        UnsupportedRequest,
        WalletError,
    )
    from dspy_pylon.hud.callback import HudCallback
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
    from dspy_pylon.money import msats_to_sats
    from dspy_pylon.nostr.ciphers import Cipher
    from dspy_pylon.pay.billing import Approver, PaymentRequest
    from dspy_pylon.pay.budget_file import load_global_budget, save_global_budget
    from dspy_pylon.pay.invoice import Bill, BillCheck, Invoice, check_bill, decode_invoice
    from dspy_pylon.pay.ledger import LedgerEntry, SpendLedger, SpendRow
    from dspy_pylon.pay.nwc import InvoiceStatus, MadeInvoice, NwcWallet, PaymentResult, load_nwc_uri, save_nwc_uri
    from dspy_pylon.plain_errors import IntegrityProblem, SignatureProblem
    from dspy_pylon.refine import Refine, RefineAttempt, RefineFailed, RefineResult
    from dspy_pylon.route import Route
    from dspy_pylon.sandbox.client import PylonSandboxProvider, SandboxOutcome
    from dspy_pylon.sandbox.executor import SandboxExecutor
    from dspy_pylon.swarm.discovery import ProviderRecord, discover
    from dspy_pylon.swarm.reputation import ProviderStats, Reputation
    from dspy_pylon.trace.graph import NodeStatus, NodeType, TraceGraph, TraceNode
    from dspy_pylon.trace.nostr_bridge import NostrBridge, PublishedTrace, TraceVerification
    from dspy_pylon.trace.nostr_callback import NostrCallback
    from dspy_pylon.trace.otel import TraceContract
    from dspy_pylon.trace.recorder import TraceRecorder
    from dspy_pylon.usage import Budget, LmUsage, Reservation

_EXPORTS: dict[str, str] = {
    "Approver": "dspy_pylon.pay.billing",
    "AsyncPylonEngine": "dspy_pylon.lm",
    "BACKENDS": "dspy_pylon.config",
    "BackendConnectionError": "dspy_pylon.errors",
    "Cipher": "dspy_pylon.nostr.ciphers",
    "BackendRequestError": "dspy_pylon.errors",
    "BackendServerError": "dspy_pylon.errors",
    "BackendTimeout": "dspy_pylon.errors",
    "Bill": "dspy_pylon.pay.invoice",
    "BillCheck": "dspy_pylon.pay.invoice",
    "Budget": "dspy_pylon.usage",
    "BudgetExceeded": "dspy_pylon.errors",
    "ConfigError": "dspy_pylon.errors",
    "ContextTooLong": "dspy_pylon.errors",
    "EmbeddedLlama": "dspy_pylon.local.embedded",
    "EmbeddedUnavailable": "dspy_pylon.errors",
    "Hybrid": "dspy_pylon.config",
    "Identity": "dspy_pylon.identity",
    "IdentityError": "dspy_pylon.errors",
    "IdentityMissing": "dspy_pylon.errors",
    "InvalidMnemonic": "dspy_pylon.errors",
    "InvalidModelString": "dspy_pylon.errors",
    "Invoice": "dspy_pylon.pay.invoice",
    "InvoiceStatus": "dspy_pylon.pay.nwc",
    "JobFailed": "dspy_pylon.errors",
    "LM": "dspy_pylon.lm",
    "LedgerEntry": "dspy_pylon.pay.ledger",
    "LmUsage": "dspy_pylon.usage",
    "Local": "dspy_pylon.config",
    "MadeInvoice": "dspy_pylon.pay.nwc",
    "MalformedEvent": "dspy_pylon.errors",
    "ModelSpec": "dspy_pylon.config",
    "NoLocalBackend": "dspy_pylon.errors",
    "NwcWallet": "dspy_pylon.pay.nwc",
    "PaymentFailed": "dspy_pylon.errors",
    "PaymentRefused": "dspy_pylon.errors",
    "PaymentRequest": "dspy_pylon.pay.billing",
    "PaymentRequired": "dspy_pylon.errors",
    "PaymentResult": "dspy_pylon.pay.nwc",
    "ProviderRecord": "dspy_pylon.swarm.discovery",
    "ProviderStats": "dspy_pylon.swarm.reputation",
    "PylonConfig": "dspy_pylon.config",
    "PylonEngine": "dspy_pylon.lm",
    "PylonError": "dspy_pylon.errors",
    "PylonLM": "dspy_pylon.lm",
    "RelayUnavailable": "dspy_pylon.errors",
    "Reputation": "dspy_pylon.swarm.reputation",
    "Reservation": "dspy_pylon.usage",
    "ResultTooLarge": "dspy_pylon.errors",
    "SandboxError": "dspy_pylon.errors",
    "SandboxRefused": "dspy_pylon.errors",
    "Route": "dspy_pylon.route",
    "SpendLedger": "dspy_pylon.pay.ledger",
    "SpendRow": "dspy_pylon.pay.ledger",
    "Swarm": "dspy_pylon.config",
    "SwarmTimeout": "dspy_pylon.errors",
    "UnknownModel": "dspy_pylon.errors",
    "UnsupportedRequest": "dspy_pylon.errors",
    "StoreError": "dspy_pylon.errors",
    "WalletError": "dspy_pylon.errors",
    "check_bill": "dspy_pylon.pay.invoice",
    "decode_invoice": "dspy_pylon.pay.invoice",
    "discover": "dspy_pylon.swarm.discovery",
    "generate_mnemonic": "dspy_pylon.identity",
    "init_identity": "dspy_pylon.identity",
    "keys_from_mnemonic": "dspy_pylon.identity",
    "load_global_budget": "dspy_pylon.pay.budget_file",
    "load_identity": "dspy_pylon.identity",
    "load_nwc_uri": "dspy_pylon.pay.nwc",
    "model_string": "dspy_pylon.lm",
    "msats_to_sats": "dspy_pylon.money",
    "parse_model_string": "dspy_pylon.config",
    "pylon_home": "dspy_pylon.identity",
    "resolve_keys": "dspy_pylon.identity",
    "save_global_budget": "dspy_pylon.pay.budget_file",
    "save_nwc_uri": "dspy_pylon.pay.nwc",
    "validate_mnemonic": "dspy_pylon.identity",
    "Compatibility": "dspy_pylon.contract.manifest",
    "CompatibilityError": "dspy_pylon.errors",
    "CompiledModuleManifest": "dspy_pylon.contract.manifest",
    "IntegrityError": "dspy_pylon.errors",
    "Lane": "dspy_pylon.contract.modes",
    "ManifestError": "dspy_pylon.errors",
    "ModelRef": "dspy_pylon.contract.manifest",
    "PrivacyMode": "dspy_pylon.contract.modes",
    "PrivacyViolation": "dspy_pylon.errors",
    "Scorecard": "dspy_pylon.contract.manifest",
    "SignatureError": "dspy_pylon.errors",
    "build_manifest": "dspy_pylon.contract.loading",
    "compiled_id_of": "dspy_pylon.contract.loading",
    "load_compiled": "dspy_pylon.contract.loading",
    "manifest_json_schema": "dspy_pylon.contract.manifest",
    "save_compiled": "dspy_pylon.contract.loading",
    "verify_compiled": "dspy_pylon.contract.files",
    "compile": "dspy_pylon.contract.compiling",
    "score_program": "dspy_pylon.contract.scoring",
    "NoEligibleProvider": "dspy_pylon.errors",
    "IntegrityProblem": "dspy_pylon.plain_errors",
    "ManifestSignature": "dspy_pylon.contract.manifest",
    "Requirement": "dspy_pylon.contract.compatibility",
    "SignatureProblem": "dspy_pylon.plain_errors",
    "Unmet": "dspy_pylon.contract.compatibility",
    "Verified": "dspy_pylon.contract.files",
    "CompositeCallback": "dspy_pylon.callbacks",
    "HudCallback": "dspy_pylon.hud.callback",
    "Refine": "dspy_pylon.refine",
    "RefineAttempt": "dspy_pylon.refine",
    "RefineFailed": "dspy_pylon.refine",
    "RefineResult": "dspy_pylon.refine",
    "PylonSandboxProvider": "dspy_pylon.sandbox.client",
    "SandboxOutcome": "dspy_pylon.sandbox.client",
    "SandboxExecutor": "dspy_pylon.sandbox.executor",
    "NodeStatus": "dspy_pylon.trace.graph",
    "NodeType": "dspy_pylon.trace.graph",
    "NostrBridge": "dspy_pylon.trace.nostr_bridge",
    "NostrCallback": "dspy_pylon.trace.nostr_callback",
    "PublishedTrace": "dspy_pylon.trace.nostr_bridge",
    "TraceVerification": "dspy_pylon.trace.nostr_bridge",
    "PylonCallback": "dspy_pylon.callbacks",
    "QueuedCallback": "dspy_pylon.callbacks",
    "TraceContract": "dspy_pylon.trace.otel",
    "TraceGraph": "dspy_pylon.trace.graph",
    "TraceNode": "dspy_pylon.trace.graph",
    "TraceRecorder": "dspy_pylon.trace.recorder",
    "get_callback": "dspy_pylon.callbacks",
    "set_callback": "dspy_pylon.callbacks",
}


# The ``pay`` subpackage first: its first import would otherwise bind ``dspy_pylon.pay`` to
# itself over the ``pay()`` function below, whenever it happens.
importlib.import_module("dspy_pylon.pay")


def pay(job_id: str, lm: PylonLM | None = None, timeout: float | None = None) -> lm15.Response:
    """Approve and pay the bill of a job that raised :class:`~dspy_pylon.errors.PaymentRequired`.

    ``lm`` defaults to the LM configured in DSPy (``dspy.configure(lm=...)``). Returns the
    job's response (``.text``) once the provider delivers it.
    """
    from dspy_pylon.lm import pay as pay_job

    return pay_job(job_id, lm=lm, timeout=timeout)


def __getattr__(name: str) -> Any:
    if name in (
        "trace",
        "hud",
        "sandbox",
    ):  # subpackages: pylon.trace.instrument(), pylon.hud.open(), pylon.sandbox.run_local()
        return importlib.import_module(f"dspy_pylon.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dspy_pylon' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


# ``compile`` is exported (``pylon.compile``) but not listed: ``from dspy_pylon import *`` must not
# shadow the builtin.
__all__ = [
    "BACKENDS",
    "LM",
    "Approver",
    "AsyncPylonEngine",
    "BackendConnectionError",
    "BackendRequestError",
    "BackendServerError",
    "BackendTimeout",
    "Bill",
    "BillCheck",
    "Budget",
    "BudgetExceeded",
    "Cipher",
    "Compatibility",
    "CompatibilityError",
    "CompiledModuleManifest",
    "CompositeCallback",
    "ConfigError",
    "ContextTooLong",
    "EmbeddedLlama",
    "EmbeddedUnavailable",
    "HudCallback",
    "Hybrid",
    "Identity",
    "IdentityError",
    "IdentityMissing",
    "IntegrityError",
    "IntegrityProblem",
    "InvalidMnemonic",
    "InvalidModelString",
    "Invoice",
    "InvoiceStatus",
    "JobFailed",
    "Lane",
    "LedgerEntry",
    "LmUsage",
    "Local",
    "MadeInvoice",
    "MalformedEvent",
    "ManifestError",
    "ManifestSignature",
    "ModelRef",
    "ModelSpec",
    "NoEligibleProvider",
    "NoLocalBackend",
    "NodeStatus",
    "NodeType",
    "NostrBridge",
    "NostrCallback",
    "NwcWallet",
    "PaymentFailed",
    "PaymentRefused",
    "PaymentRequest",
    "PaymentRequired",
    "PaymentResult",
    "PrivacyMode",
    "PrivacyViolation",
    "ProviderRecord",
    "ProviderStats",
    "PublishedTrace",
    "PylonCallback",
    "PylonConfig",
    "PylonEngine",
    "PylonError",
    "PylonLM",
    "PylonSandboxProvider",
    "QueuedCallback",
    "Refine",
    "RefineAttempt",
    "RefineFailed",
    "RefineResult",
    "RelayUnavailable",
    "Reputation",
    "Requirement",
    "Reservation",
    "ResultTooLarge",
    "Route",
    "SandboxError",
    "SandboxExecutor",
    "SandboxOutcome",
    "SandboxRefused",
    "Scorecard",
    "SignatureError",
    "SignatureProblem",
    "SpendLedger",
    "SpendRow",
    "StoreError",
    "Swarm",
    "SwarmTimeout",
    "TraceContract",
    "TraceGraph",
    "TraceNode",
    "TraceRecorder",
    "TraceVerification",
    "UnknownModel",
    "Unmet",
    "UnsupportedRequest",
    "Verified",
    "WalletError",
    "build_manifest",
    "check_bill",
    "compiled_id_of",
    "decode_invoice",
    "discover",
    "generate_mnemonic",
    "get_callback",
    "init_identity",
    "keys_from_mnemonic",
    "load_compiled",
    "load_global_budget",
    "load_identity",
    "load_nwc_uri",
    "manifest_json_schema",
    "model_string",
    "msats_to_sats",
    "parse_model_string",
    "pay",
    "pylon_home",
    "resolve_keys",
    "save_compiled",
    "save_global_budget",
    "save_nwc_uri",
    "score_program",
    "set_callback",
    "validate_mnemonic",
    "verify_compiled",
]
