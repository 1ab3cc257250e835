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
    BudgetExceeded,
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
    PaymentFailed,
    PaymentRefused,
    PaymentRequired,
    PylonError,
    RelayUnavailable,
    ResultTooLarge,
    SwarmTimeout,
    UnknownModel,
    UnsupportedRequest,
    WalletError,
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
from dspy_pylon.lm import LM, AsyncPylonEngine, PylonEngine, PylonLM, model_string, pay
from dspy_pylon.local.embedded import EmbeddedLlama
from dspy_pylon.pay.billing import Approver, PaymentRequest
from dspy_pylon.pay.invoice import Bill, BillCheck, Invoice, check_bill, decode_invoice
from dspy_pylon.pay.ledger import LedgerEntry, SpendLedger, SpendRow
from dspy_pylon.pay.nwc import InvoiceStatus, MadeInvoice, NwcWallet, PaymentResult, load_nwc_uri, save_nwc_uri
from dspy_pylon.route import Route
from dspy_pylon.swarm.discovery import ProviderRecord, discover
from dspy_pylon.swarm.reputation import ProviderStats, Reputation
from dspy_pylon.usage import Budget, LmUsage, Reservation, msats_to_sats

__version__ = "0.1.0"

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
    "Invoice",
    "InvoiceStatus",
    "JobFailed",
    "LedgerEntry",
    "LmUsage",
    "Local",
    "MadeInvoice",
    "MalformedEvent",
    "ModelSpec",
    "NoLocalBackend",
    "NwcWallet",
    "PaymentFailed",
    "PaymentRefused",
    "PaymentRequest",
    "PaymentRequired",
    "PaymentResult",
    "ProviderRecord",
    "ProviderStats",
    "PylonConfig",
    "PylonEngine",
    "PylonError",
    "PylonLM",
    "RelayUnavailable",
    "Reputation",
    "Reservation",
    "ResultTooLarge",
    "Route",
    "SpendLedger",
    "SpendRow",
    "Swarm",
    "SwarmTimeout",
    "UnknownModel",
    "UnsupportedRequest",
    "WalletError",
    "check_bill",
    "decode_invoice",
    "discover",
    "generate_mnemonic",
    "init_identity",
    "keys_from_mnemonic",
    "load_identity",
    "load_nwc_uri",
    "model_string",
    "msats_to_sats",
    "parse_model_string",
    "pay",
    "pylon_home",
    "resolve_keys",
    "save_nwc_uri",
    "validate_mnemonic",
]
