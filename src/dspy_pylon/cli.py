"""The ``pylon`` command. Thin: parses arguments and calls the library.

Each command imports what it needs when it runs: ``pylon --help``, ``identity``, ``init``
and ``spend`` never import DSPy (about a second of start-up).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Literal, TextIO

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from dspy_pylon import __version__
from dspy_pylon.config import BACKENDS
from dspy_pylon.plain_errors import PylonError

console = Console()


@click.group()
@click.version_option(__version__, prog_name="pylon")
@click.option("-v", "--verbose", is_flag=True, help="Log what pylon does (routes, servers started).")
def main(verbose: bool) -> None:
    """dspy-pylon: run DSPy programs on local models or a paid Nostr compute swarm."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )


@main.command()
@click.option(
    "--backend",
    default="embedded",
    show_default=True,
    type=click.Choice(["embedded", *(b for b in BACKENDS if b != "embedded")]),
    help="Local backend for the demo (embedded starts llama.cpp with the bundled model).",
)
def demo(backend: str) -> None:
    """Run a small DSPy program on pylon:local, pylon:swarm and pylon:hybrid; show each call's route and cost."""
    from dspy_pylon.demo import run_demo

    try:
        run_demo(console, backend=backend)
    except PylonError as exc:
        raise click.ClickException(str(exc)) from exc


@main.group()
def local() -> None:
    """Local model servers."""


@local.command("serve")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), help="GGUF file to serve.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default: a free one).")
@click.option(
    "--ctx", "n_ctx", type=click.IntRange(256, 1 << 20), default=8192, show_default=True, help="Context size in tokens."
)
@click.option("--parallel", type=click.IntRange(1, 256), default=4, show_default=True, help="Requests served at once.")
def local_serve(model_path: Path | None, host: str, port: int | None, n_ctx: int, parallel: int) -> None:
    """Serve a GGUF model (default: the bundled SmolLM2-135M-Instruct) with embedded llama.cpp."""
    from dspy_pylon.local.embedded import EmbeddedLlama

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        server = EmbeddedLlama(model_path, host=host, port=port, n_ctx=n_ctx, parallel=parallel).start()
    except PylonError as exc:
        raise click.ClickException(str(exc)) from exc
    # One parseable line first: scripts and tests read the URL from it.
    click.echo(f"serving {server.model_path.name} at {server.url}", err=False)
    console.print(f"set [bold]LLAMACPP_URL={server.url}[/] and use pylon:local:llamacpp (Ctrl-C stops)")
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@local.command("detect")
def local_detect() -> None:
    """Probe the local backends (Ollama, Apple FM bridge, llama.cpp) and show which answer."""
    from dspy_pylon.local.detect import detect

    table = Table(title="local backends (auto takes the first that answers)")
    for column in ("backend", "url", "answers", "detail"):
        table.add_column(column)
    for result in detect("auto"):
        table.add_row(
            result.endpoint.kind,
            result.endpoint.base_url,
            "[green]yes[/]" if result.ok else "[red]no[/]",
            result.detail,
        )
    console.print(table)


@main.command()
@click.option(
    "--show-words",
    is_flag=True,
    help="Print the new recovery words once, to write down (otherwise they stay in the file only).",
)
@click.option(
    "--restore",
    is_flag=True,
    help="Restore an identity from recovery words you already have (read from standard input, not echoed).",
)
def init(show_words: bool, restore: bool) -> None:
    """Create the Nostr identity (a BIP-39 mnemonic, NIP-06 keys) in the Pylon home directory."""
    from dspy_pylon.identity import identity_path, init_identity, load_identity

    words: str | None = None
    if restore:
        words = click.prompt("recovery words", hide_input=True, err=True)
    try:
        path = init_identity(words=words)
        identity = load_identity()
    except PylonError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"identity: {path}")
    click.echo(f"npub: {identity.npub}")
    if show_words:
        phrase = path.read_text(encoding="utf-8").strip()
        rule = "=" * 72
        click.echo(rule)
        click.echo("WRITE THESE WORDS DOWN and keep them offline. They are the only backup of your keys;")
        click.echo("anyone who has them controls this identity and its funds. They are not shown again.")
        click.echo(rule)
        click.echo(phrase)
        click.echo(rule)
    elif not restore:
        click.echo(
            f"Your recovery words are in {identity_path()} (readable only by you). Write them down once "
            f"(`cat {identity_path()}`) and keep them offline: they are the only backup of your keys."
        )


@main.command("identity")
def identity_cmd() -> None:
    """Show the public Nostr identity (npub and hex public key); never the secret."""
    from dspy_pylon.identity import load_identity

    try:
        identity = load_identity()
    except PylonError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"npub: {identity.npub}")
    click.echo(f"public key (hex): {identity.public_key_hex}")
    click.echo(f"identity file: {identity.path}")


@main.command()
@click.option("--relay", "relays", multiple=True, help="Relay URL (repeatable). Default: relays in provider.toml.")
@click.option(
    "--backend",
    type=click.Choice(list(BACKENDS)),
    default=None,
    help="Local backend that runs the jobs [default: auto].",
)
@click.option("--backend-url", default=None, help="URL of the named backend (instead of its default/env).")
@click.option("--price-msats", type=click.IntRange(min=0), default=None, help="Price per job in millisatoshis.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, help="Jobs run at once [default: 2].")
@click.option("--name", default=None, help="Name in the NIP-89 announcement.")
@click.option("--max-tokens-cap", type=click.IntRange(min=1), default=None, help="Largest max_tokens accepted.")
@click.option("--once", type=click.IntRange(min=1), default=None, help="Exit after answering N jobs.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Provider TOML file [default: $PYLON_HOME/provider.toml].",
)
@click.option("--no-announce", is_flag=True, help="Do not publish a NIP-89 announcement.")
@click.option(
    "--invoice-expiry",
    type=click.IntRange(min=10),
    default=None,
    help="Seconds a customer has to pay an invoice [default: 300].",
)
def serve(
    relays: tuple[str, ...],
    backend: str | None,
    backend_url: str | None,
    price_msats: int | None,
    concurrency: int | None,
    name: str | None,
    max_tokens_cap: int | None,
    once: int | None,
    config_path: Path | None,
    no_announce: bool,
    invoice_expiry: int | None,
) -> None:
    """Sell local inference to the swarm: serve NIP-90 text-generation jobs (kind 5050).

    A priced node invoices each job through its NWC wallet ($PYLON_NWC_URI or
    $PYLON_HOME/nwc.uri) and runs it once the invoice is paid.
    """
    import asyncio

    from dspy_pylon.identity import load_identity, pylon_home
    from dspy_pylon.swarm.provider import run_provider
    from dspy_pylon.swarm.provider_settings import ProviderSettings, load_provider_file

    home = pylon_home()
    try:
        identity = load_identity()
        settings_data = load_provider_file(config_path or home / "provider.toml")
        flags = {
            "relays": relays or None,
            "backend": backend,
            "backend_url": backend_url,
            "price_msats": price_msats,
            "concurrency": concurrency,
            "name": name,
            "max_tokens_cap": max_tokens_cap,
            "invoice_expiry_s": invoice_expiry,
        }
        settings_data.update({key: value for key, value in flags.items() if value is not None})
        if no_announce:
            settings_data["announce"] = False
        if not settings_data.get("relays"):
            raise click.UsageError("no relays: pass --relay ws://... or set relays in provider.toml")
        settings = ProviderSettings(state_dir=home, **settings_data)
        wallet = None
        if settings.priced:
            from dspy_pylon.pay.nwc import NwcWallet, load_nwc_uri

            uri = load_nwc_uri(home)
            if uri is None:
                raise click.UsageError(
                    "a priced provider needs a wallet: set PYLON_NWC_URI or save one with `pylon wallet connect`"
                )
            wallet = NwcWallet(uri)
    except PylonError as exc:
        raise click.ClickException(str(exc)) from exc
    except TypeError as exc:
        raise click.ClickException(f"invalid provider settings: {exc}") from exc

    async def main_async() -> None:
        from dspy_pylon.swarm.provider import ProviderNode

        started: list[ProviderNode] = []

        def announce(node: ProviderNode) -> None:
            started.append(node)
            route = node.router.resolve()[0]
            # One parseable line: scripts and tests wait for it.
            click.echo(
                f"provider {identity.npub} serving kind 5050 on {' '.join(settings.relays)} "
                f"with {route.backend} ({route.model}), price {settings.price_msats} msats",
            )

        node = await run_provider(identity.keys, settings, once, on_started=announce, wallet=wallet)
        stats = node.stats
        click.echo(f"stopped: {node.handled} jobs answered ({stats.done} results, {stats.errors} errors)")

    try:
        asyncio.run(main_async())
    except PylonError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default: a free one).")
def relay(host: str, port: int | None) -> None:
    """Run the embedded Nostr relay (nostr-sdk) and print its URL; Ctrl-C stops it."""
    import asyncio
    import signal

    from dspy_pylon.nostr.relay_server import start_embedded_relay

    async def main_async() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        server, url = await start_embedded_relay(host, port)
        click.echo(f"relay at {url}")
        await stop.wait()
        server.shutdown()

    asyncio.run(main_async())


@main.command()
@click.option("--earned", is_flag=True, help="Show what this node earned as a provider instead.")
@click.option(
    "--by",
    type=click.Choice(["day", "provider", "model", "job"]),
    default=None,
    help="Group by day, provider (customer with --earned), model, or list jobs [default: all three groupings].",
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Jobs listed with --by job.")
@click.option(
    "--set-budget",
    "set_budget",
    type=click.IntRange(min=0),
    default=None,
    help="Set the global budget in sats: the most this PYLON_HOME may ever pay, all processes together (0 = none).",
)
def spend(earned: bool, by: str | None, limit: int, set_budget: int | None) -> None:
    """What swarm jobs cost (or earned): totals from the spend ledger in $PYLON_HOME."""
    from dspy_pylon.identity import pylon_home
    from dspy_pylon.money import msats_to_sats
    from dspy_pylon.pay.budget_file import load_global_budget, save_global_budget
    from dspy_pylon.pay.ledger import SpendLedger

    home = pylon_home()
    if set_budget is not None:
        click.echo(f"global budget set to {set_budget} sats in {save_global_budget(home, set_budget)}")
        return
    try:
        global_budget = load_global_budget(home)
    except PylonError as exc:
        raise click.ClickException(str(exc)) from exc
    path = home / "ledger.sqlite"
    if not path.is_file():
        click.echo(f"no spend ledger yet ({path})")
        return
    ledger = SpendLedger(path)
    direction: Literal["spent", "earned"] = "earned" if earned else "spent"
    try:
        if by == "job":
            console.print(_jobs_table(ledger.entries(direction)[-limit:], earned))
        else:
            for grouping in [by] if by else ["day", "provider", "model"]:
                console.print(_spend_table(ledger, grouping, direction))
        total = ledger.total_paid_msats(direction)
        word = "earned" if earned else "paid"
        console.print(f"total {word}: {total} msats ({msats_to_sats(total)} sats)")
        if global_budget and not earned:
            committed = ledger.committed_msats()
            console.print(
                f"global budget: {global_budget} msats; {committed} paid or held by open jobs, "
                f"{max(0, global_budget - committed)} left"
            )
        waiting = ledger.entries(direction, "paying") if not earned else []
        if waiting:
            console.print(f"[yellow]{len(waiting)} payment(s) of unknown outcome (interrupted); resolved on next use")
    finally:
        ledger.close()


def _spend_table(ledger: object, by: str, direction: str) -> Table:
    from dspy_pylon.pay.ledger import SpendLedger

    assert isinstance(ledger, SpendLedger)
    who = "customer" if direction == "earned" and by == "provider" else by
    word = "earned" if direction == "earned" else "paid"
    table = Table(title=f"{'earnings' if direction == 'earned' else 'spend'} per {who}")
    for column in (who, "jobs", f"jobs {word}", f"{word} msats", "paid, no result", "refused", "tokens in/out"):
        table.add_column(column, justify="left" if column == who else "right")
    for row in ledger.summary(by, direction):  # type: ignore[arg-type]
        key = row.key if by != "provider" or len(row.key) < 20 else row.key[:12] + "…"
        table.add_row(
            key,
            str(row.jobs),
            str(row.paid_jobs),
            str(row.paid_msats),
            str(row.unanswered_paid_jobs),
            str(row.refused_jobs),
            f"{row.prompt_tokens}/{row.completion_tokens}",
        )
    return table


def _jobs_table(entries: list, earned: bool) -> Table:  # type: ignore[type-arg]
    import datetime

    table = Table(title="earned per job" if earned else "spend per job")
    for column in (
        "time (UTC)",
        "job",
        "customer" if earned else "provider",
        "model",
        "bid",
        "invoice",
        "paid",
        "state",
    ):
        table.add_column(column)
    for entry in entries:
        when = datetime.datetime.fromtimestamp(entry.created_at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        who = entry.customer if earned else entry.provider
        table.add_row(
            when,
            entry.job_id[:12] + "…",
            (who[:12] + "…") if who else "-",
            entry.model or "-",
            str(entry.bid_msats),
            "-" if entry.invoice_msats is None else str(entry.invoice_msats),
            str(entry.paid_msats),
            entry.state + (f" ({entry.reason[:40]})" if entry.reason else ""),
        )
    return table


@main.group()
def wallet() -> None:
    """Nostr Wallet Connect (NIP-47) wallets: connect one, check it, run the development wallet."""


@wallet.command("connect")
@click.argument("uri_file", type=click.File("r"), default="-")
def wallet_connect(uri_file: TextIO) -> None:
    """Save an NWC URI (read from a file or stdin, never an argument) to $PYLON_HOME/nwc.uri, mode 0600."""
    from dspy_pylon.pay.nwc import save_nwc_uri

    try:
        path = save_nwc_uri(uri_file.read().strip())
    except PylonError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wallet connection saved to {path} (mode 0600)")


@wallet.command("balance")
def wallet_balance() -> None:
    """The balance of the configured wallet ($PYLON_NWC_URI or $PYLON_HOME/nwc.uri)."""
    from dspy_pylon.nostr.loop import NostrLoop
    from dspy_pylon.pay.nwc import NwcWallet, load_nwc_uri

    try:
        uri = load_nwc_uri()
        if uri is None:
            raise click.ClickException("no wallet configured: set PYLON_NWC_URI or run `pylon wallet connect`")
        balance = NostrLoop.shared().run(NwcWallet(uri, timeout=10).get_balance(), 20)
    except PylonError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"balance: {balance} msats ({balance // 1000} sats)")


@wallet.command("dev")
@click.option("--relay", "relays", multiple=True, help="Relay URL (repeatable) [default: start an embedded relay].")
@click.option("--account", "accounts", multiple=True, help="Create (or top up) an account (repeatable).")
@click.option(
    "--fund",
    "funds",
    multiple=True,
    type=click.IntRange(min=0),
    help="Millisatoshis to add to the --account at the same position (repeatable).",
)
@click.option("--show-uri", is_flag=True, help="Print each account's NWC URI (it holds that account's secret).")
@click.option("--no-serve", is_flag=True, help="Create/fund accounts and exit instead of serving.")
def wallet_dev(
    relays: tuple[str, ...], accounts: tuple[str, ...], funds: tuple[int, ...], show_uri: bool, no_serve: bool
) -> None:
    """Run the development wallet — no real money: NIP-47 over a relay, balances in SQLite.

    Each account gets an NWC URI, written to $PYLON_HOME/dev-wallet/<account>.nwc (mode 0600).
    Invoices are real-format BOLT11 on regtest; payments settle instantly between accounts.
    """
    import asyncio

    from dspy_pylon.identity import pylon_home
    from dspy_pylon.nostr.relay_server import start_embedded_relay
    from dspy_pylon.pay.dev_wallet import DEV_WALLET_LABEL, DevWalletService, DevWalletStore
    from dspy_pylon.pay.nwc import write_private

    if len(funds) > len(accounts):
        raise click.UsageError("each --fund needs an --account before it")
    if no_serve and show_uri and not relays:
        raise click.UsageError("--show-uri with --no-serve needs --relay: an NWC URI names the wallet's relays")
    folder = pylon_home() / "dev-wallet"

    async def main_async() -> None:
        server = None
        urls = list(relays)
        if not urls and not no_serve:
            server, url = await start_embedded_relay()
            urls = [url]
            click.echo(f"relay at {url}")
        store = DevWalletStore(folder / "wallet.sqlite")
        click.echo(f"{DEV_WALLET_LABEL}")
        for index, name in enumerate(accounts):
            store.create_account(name, funds[index] if index < len(funds) else 0)
            if urls:
                uri = store.nwc_uri(name, urls)
                path = folder / f"{name}.nwc"
                write_private(path, uri + "\n")
                click.echo(f"account {name}: {store.balance(name)} msats; NWC URI in {path}")
                if show_uri:
                    click.echo(uri)
            else:
                click.echo(f"account {name}: {store.balance(name)} msats (no --relay given: no NWC URI written)")
        if no_serve:
            store.close()
            return
        service = await DevWalletService(store, urls).start()
        click.echo(f"development wallet {service.service_pubkey[:12]}… serving NWC on {' '.join(urls)}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await service.stop()
        store.close()
        if server is not None:
            server.shutdown()

    try:
        asyncio.run(main_async())
    except PylonError as exc:
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":
    main()
