"""A whole swarm on this machine: a relay, the development wallet, provider nodes and paying LMs.

For the demo, tests, benchmarks and anyone trying pylon without a network::

    with LocalSwarm(Path("/tmp/swarm"), providers=2, price_msats=1_000) as swarm:
        lm = swarm.lm(bid_msats=2_000)
        lm("Say hi")
        print(swarm.balance("customer"), swarm.ledger_path)

Everything is real: an embedded nostr-sdk relay (or the relay at ``relay_url``), the
development wallet service speaking NIP-47 on it (no real money), provider nodes serving
a llama.cpp server (the embedded one, started here, unless ``backend_url`` names one),
and customer LMs paying over Nostr Wallet Connect. Relays, wallet and nodes run on a
loop of their own; the LMs use the process's shared Nostr loop as they always do.
Constructing does no I/O; :meth:`start` (or ``with``) brings it up, :meth:`close` down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from dspy_pylon.errors import ConfigError

if TYPE_CHECKING:
    from dspy_pylon.config import Hybrid, Swarm
    from dspy_pylon.lm import PylonLM
    from dspy_pylon.local.embedded import EmbeddedLlama
    from dspy_pylon.nostr.loop import NostrLoop
    from dspy_pylon.pay.dev_wallet import DevWalletService, DevWalletStore
    from dspy_pylon.pay.nwc import NwcWallet
    from dspy_pylon.swarm.provider import ProviderNode

#: What the customer account starts with (msats).
DEFAULT_FUNDS_MSATS = 100_000
# A node's drain waits up to 30 s three times (admissions, queue, paid jobs): a little more.
_STOP_WAIT_S = 100.0


class LocalSwarm:
    """A relay, the development wallet, ``providers`` nodes and a funded ``customer`` account.

    ``price_msats`` is each node's price per job (0 serves for free); ``provider_settings``
    are further :class:`~dspy_pylon.swarm.provider_settings.ProviderSettings` fields for
    every node. The customer's LMs keep their ledger and reputation under
    ``state_dir / "customer"`` (their ``home=``), never in the user's ``$PYLON_HOME``.
    """

    def __init__(
        self,
        state_dir: Path | str,
        *,
        providers: int = 1,
        price_msats: int = 0,
        funds_msats: int = DEFAULT_FUNDS_MSATS,
        relay_url: str | None = None,
        backend_url: str | None = None,
        provider_settings: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(providers, bool) or not isinstance(providers, int) or providers < 0:
            raise ConfigError(f"providers must be a non-negative number of nodes, got {providers!r}")
        self.state_dir = Path(state_dir)
        self.provider_count = providers
        self.price_msats = price_msats
        self.funds_msats = funds_msats
        self.backend_url = backend_url
        self.provider_settings = dict(provider_settings or {})
        self.url = relay_url or ""
        self._own_relay = relay_url is None
        self.nodes: list[ProviderNode] = []
        self._serving: list[Future[int]] = []
        self._loop: NostrLoop | None = None
        self._relay: Any = None
        self._llama: EmbeddedLlama | None = None
        self._store: DevWalletStore | None = None
        self._wallet: DevWalletService | None = None
        self._node_count = 0

    @property
    def home(self) -> Path:
        """The customer LMs' home directory (ledger, reputation, identity)."""
        return self.state_dir / "customer"

    @property
    def ledger_path(self) -> Path:
        """The customer's spend ledger."""
        return self.home / "ledger.sqlite"

    def start(self) -> LocalSwarm:
        """Start the relay, the wallet service, the llama.cpp server (if none was named) and the nodes."""
        from dspy_pylon.nostr.loop import NostrLoop
        from dspy_pylon.nostr.relay_server import start_embedded_relay
        from dspy_pylon.pay.dev_wallet import DevWalletService, DevWalletStore

        self._loop = loop = NostrLoop("pylon-local-swarm")
        try:
            if self._own_relay:
                self._relay, self.url = loop.run(start_embedded_relay())
            self._store = DevWalletStore(self.state_dir / "dev-wallet.sqlite")
            self._store.create_account("customer", self.funds_msats)
            self._wallet = loop.run(DevWalletService(self._store, (self.url,)).start(), 60)
            if self.provider_count and self.backend_url is None:
                from dspy_pylon.local.embedded import EmbeddedLlama

                self._llama = EmbeddedLlama().start()
                self.backend_url = self._llama.url
            for n in range(self.provider_count):
                self._start_node(n)
        except BaseException:
            self.close()
            raise
        return self

    def _start_node(self, n: int) -> None:
        self.add_provider(
            wallet=self.wallet(f"provider-{n}"),
            state_dir=self.state_dir / f"provider-{n}",
            name=f"pylon local provider {n}",
        )

    def add_provider(
        self, *, keys: Any = None, wallet: NwcWallet | None = None, sandbox_executor: Any = None, **settings: Any
    ) -> ProviderNode:
        """Start one more node (fresh ``keys`` unless given) and serve until :meth:`stop_provider`
        or :meth:`close`. ``settings`` are :class:`~dspy_pylon.swarm.provider_settings.ProviderSettings`
        fields over this swarm's defaults (``sandbox=SandboxOffer(...)`` sells sandboxed execution,
        on ``sandbox_executor`` if given); ``wallet`` is how a priced node gets paid."""
        import nostr_sdk

        from dspy_pylon.swarm.provider import ProviderNode
        from dspy_pylon.swarm.provider_settings import ProviderSettings

        loop = self._started()
        self._node_count += 1
        fields: dict[str, Any] = {
            "relays": (self.url,),
            "state_dir": self.state_dir / f"node-{self._node_count}",
            "backend": "llamacpp",
            "backend_url": self.backend_url,
            "price_msats": self.price_msats,
            **self.provider_settings,
            **settings,
        }
        node = ProviderNode(
            keys or nostr_sdk.Keys.generate(),
            ProviderSettings(**fields),
            wallet=wallet,
            sandbox_executor=sandbox_executor,
        )
        loop.run(node.start(), 60)  # a failed start releases what it took
        self.nodes.append(node)
        self._serving.append(loop.submit(node.serve()))
        return node

    def stop_provider(self, node: ProviderNode) -> int:
        """Stop one node (it finishes the jobs in flight); returns how many jobs it answered."""
        loop = self._started()
        index = self.nodes.index(node)
        serving = self._serving.pop(index)
        self.nodes.pop(index)
        _ask_to_stop(loop, node)
        return _stopped(serving)

    def account(self, name: str, fund_msats: int = 0) -> str:
        """Create (or top up) the development wallet's account ``name``; returns its NWC URI."""
        store = self.wallet_store
        store.create_account(name, fund_msats)
        return str(store.nwc_uri(name, (self.url,)))

    def wallet(self, name: str, fund_msats: int = 0, timeout: float = 30.0) -> NwcWallet:
        """An :class:`~dspy_pylon.pay.nwc.NwcWallet` on account ``name`` (created or topped up)."""
        from dspy_pylon.pay.nwc import NwcWallet

        return NwcWallet(self.account(name, fund_msats), timeout=timeout)

    @property
    def loop(self) -> NostrLoop:
        """The event loop the relay, the wallet service and the nodes run on."""
        return self._started()

    @property
    def wallet_service(self) -> DevWalletService:
        """The development wallet's NIP-47 service (its ``stats``; benchmarks time its steps)."""
        if self._wallet is None:
            raise ConfigError("the local swarm is not started")
        return self._wallet

    @property
    def wallet_store(self) -> DevWalletStore:
        """The development wallet's accounts, invoices and payments."""
        if self._store is None:
            raise ConfigError("the local swarm is not started")
        return self._store

    def _started(self) -> NostrLoop:
        if self._loop is None:
            raise ConfigError("the local swarm is not started")
        return self._loop

    def __enter__(self) -> LocalSwarm:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def customer_uri(self) -> str:
        """The NWC URI of the funded customer account (a spending secret of the development wallet)."""
        return str(self.wallet_store.nwc_uri("customer", (self.url,)))

    def balance(self, account: str) -> int:
        """An account's balance in msats: ``customer``, ``provider-<n>`` or one made by :meth:`account`."""
        return int(self.wallet_store.balance(account))

    def lm(
        self,
        *,
        venue: Swarm | Hybrid | None = None,
        bid_msats: int = 2_000,
        budget_sats: int = 0,
        timeout: float = 60,
        model: str | None = None,
        **kwargs: Any,
    ) -> PylonLM:
        """A ``pylon:swarm`` LM on this swarm (or on ``venue``, e.g. a :class:`~dspy_pylon.config.Hybrid`
        on this relay), paying from the customer account with ``auto_pay``; ``model`` is the model
        its jobs ask for (a node with per-model ``prices`` bills by it).

        ``kwargs`` go to :class:`~dspy_pylon.lm.PylonLM` (``private_key``, ``max_tokens``, ``cache``...).
        """
        import nostr_sdk

        from dspy_pylon.config import PylonConfig, Swarm
        from dspy_pylon.lm import PylonLM

        venue = venue or Swarm(relays=(self.url,), bid_msats=bid_msats, auto_pay=True)
        config = PylonConfig(venue=venue, timeout=timeout, budget_sats=budget_sats, model=model)
        kwargs.setdefault("private_key", nostr_sdk.Keys.generate().secret_key().to_hex())
        return PylonLM.from_config(config, nwc_uri=self.customer_uri(), home=self.home, **kwargs)

    def close(self) -> None:
        """Stop the nodes (finishing jobs in flight), the llama.cpp server, the wallet and the relay.
        Each step runs even when one before it failed; the first failure is raised at the end."""
        loop, self._loop = self._loop, None
        steps: list[Callable[[], object]] = []
        if loop is not None:
            for node in self.nodes:  # all asked at once: their drains overlap
                _ask_to_stop(loop, node)
            steps += [partial(_stopped, serving) for serving in self._serving]
        self.nodes, self._serving = [], []
        llama, self._llama = self._llama, None
        if llama is not None:
            steps.append(llama.stop)
        wallet, self._wallet = self._wallet, None
        if wallet is not None and loop is not None:
            steps.append(partial(_stop_wallet, loop, wallet))
        store, self._store = self._store, None
        if store is not None:
            steps.append(store.close)
        relay, self._relay = self._relay, None
        if relay is not None:
            steps.append(partial(_shut_relay, relay, self.url))
        if loop is not None:
            steps.append(loop.stop)
        failure: BaseException | None = None
        for step in steps:
            try:
                step()
            except BaseException as exc:  # the rest must still be released
                failure = failure or exc
        if failure is not None:
            raise failure


def _shut_relay(relay: Any, url: str, wait: float = 3.0) -> None:
    """Shut the embedded relay and wait (up to ``wait`` s) until its port refuses connections.

    nostr-sdk's shutdown only signals its tasks, so the listener closes a moment later; and now
    and then the signal is lost (measured: about 1 close in 15 left the port listening for the
    whole wait, with or without a garbage collection). So it is sent again every 0.1 s until
    the port refuses.
    """
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    deadline = time.monotonic() + wait
    signalled = 0.0
    while time.monotonic() < deadline:
        if time.monotonic() - signalled >= 0.1:
            relay.shutdown()
            signalled = time.monotonic()
        try:
            with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=0.2):
                pass
        except OSError:
            return
        time.sleep(0.02)


def _stop_wallet(loop: NostrLoop, wallet: DevWalletService) -> None:
    loop.run(wallet.stop(), 30)


def _ask_to_stop(loop: NostrLoop, node: ProviderNode) -> None:
    loop.loop.call_soon_threadsafe(node.request_stop)


def _stopped(serving: Future[int]) -> int:
    """Wait for a node's serve to end (its drain waits up to three times 30 s); past that,
    cancel it: a cancelled serve still releases the node before it ends."""
    try:
        return serving.result(_STOP_WAIT_S)
    except TimeoutError:
        serving.cancel()
        raise
