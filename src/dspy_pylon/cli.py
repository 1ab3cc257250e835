"""The ``pylon`` command. Thin: parses arguments and calls the library.

Each command imports what it needs when it runs: ``pylon --help``, ``identity``, ``init``
and ``spend`` never import DSPy (about a second of start-up).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

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
@click.option("--keep-hud", is_flag=True, help="Keep the live HUD page up after the run, until Ctrl-C.")
def demo(backend: str, keep_hud: bool) -> None:
    """Run a small DSPy program on pylon:local, pylon:swarm and pylon:hybrid; show each call's route and cost."""
    from dspy_pylon.demo import run_demo

    try:
        run_demo(console, backend=backend, keep_hud=keep_hud)
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
@click.option(
    "--work-before-payment",
    is_flag=True,
    default=None,
    help="Start a priced job while its invoice waits; publish the result once paid (risks unpaid work).",
)
@click.option(
    "--sandbox",
    is_flag=True,
    default=False,
    help="Also sell sandboxed code execution (kind 5930): bubblewrap + cgroups; the node refuses to start "
    "if this host cannot isolate jobs.",
)
@click.option("--sandbox-base-msats", type=click.IntRange(min=0), default=None, help="Sandbox price per job (msats).")
@click.option(
    "--sandbox-cpu-second-msats",
    type=click.IntRange(min=0),
    default=None,
    help="Sandbox price per CPU-second a job may use (msats; billed before it runs: CPUs x time limit).",
)
@click.option(
    "--sandbox-network",
    "sandbox_networks",
    multiple=True,
    type=click.Choice(["none", "localhost", "full"]),
    help="Network policies sandbox jobs may ask for (repeat) [default: none, localhost].",
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
    work_before_payment: bool | None,
    sandbox: bool,
    sandbox_base_msats: int | None,
    sandbox_cpu_second_msats: int | None,
    sandbox_networks: tuple[str, ...],
) -> None:
    """Sell local inference to the swarm: serve NIP-90 text-generation jobs (kind 5050), and with
    --sandbox sandboxed code execution (kind 5930).

    A priced node invoices each job through its NWC wallet ($PYLON_NWC_URI or
    $PYLON_HOME/nwc.uri) and runs it once the invoice is paid.
    """
    import asyncio

    from dspy_pylon.identity import load_identity, pylon_home
    from dspy_pylon.swarm.provider_run import run_provider
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
            "work_before_payment": work_before_payment or None,
        }
        settings_data.update({key: value for key, value in flags.items() if value is not None})
        if no_announce:
            settings_data["announce"] = False
        if sandbox or sandbox_base_msats is not None or sandbox_cpu_second_msats is not None or sandbox_networks:
            import dataclasses

            from dspy_pylon.sandbox.schema import NetworkPolicy
            from dspy_pylon.sandbox.wire import SandboxOffer

            changes: dict[str, Any] = {
                "base_msats": sandbox_base_msats,
                "msats_per_cpu_second": sandbox_cpu_second_msats,
            }
            if sandbox_networks:
                changes["networks"] = tuple(NetworkPolicy(n) for n in sandbox_networks)
            offer = settings_data.get("sandbox") or SandboxOffer()  # provider.toml's [sandbox], then the flags
            settings_data["sandbox"] = dataclasses.replace(offer, **{k: v for k, v in changes.items() if v is not None})
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
            if settings.sandbox is not None:
                offer = settings.sandbox
                profiles = ", ".join(p.value for p in offer.profiles)
                click.echo(
                    f"provider {identity.npub} serving kind 5930 (sandbox: {profiles}; "
                    f"network {', '.join(n.value for n in offer.networks)}), price {offer.base_msats} msats "
                    f"+ {offer.msats_per_cpu_second} msats per CPU-second",
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


from dspy_pylon.cli_compile import compile_cmd  # noqa: E402 - registered on the group defined above
from dspy_pylon.cli_hud import hud  # noqa: E402
from dspy_pylon.cli_manifest import manifest  # noqa: E402
from dspy_pylon.cli_money import spend, wallet  # noqa: E402
from dspy_pylon.cli_trace import trace  # noqa: E402

main.add_command(compile_cmd)
main.add_command(hud)
main.add_command(manifest)
main.add_command(trace)
main.add_command(spend)
main.add_command(wallet)


if __name__ == "__main__":
    main()
