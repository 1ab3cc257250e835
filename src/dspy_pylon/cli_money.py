"""The ``pylon spend`` and ``pylon wallet`` commands: what swarm jobs cost, and the wallets that pay.

Registered on the ``pylon`` group by :mod:`dspy_pylon.cli`; like it, each command imports what
it needs when it runs (``pylon spend`` never imports DSPy).
"""

from __future__ import annotations

import signal
from typing import Literal, TextIO

import click
from rich.console import Console
from rich.table import Table

from dspy_pylon.plain_errors import PylonError

console = Console()


@click.command()
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


@click.group()
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
