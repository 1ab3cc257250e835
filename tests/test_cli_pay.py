"""The payment commands of ``pylon`` (``spend``, ``wallet ...``), run in-process as a user runs them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nostr_sdk
import pytest

from dspy_pylon.local.embedded import free_port
from dspy_pylon.pay.dev_wallet import DEV_WALLET_LABEL, DevWalletStore
from dspy_pylon.pay.ledger import SpendLedger
from dspy_pylon.pay.nwc import NwcWallet, load_nwc_uri
from dspy_pylon.pay.refusals import RefusalCode

# The development wallet service on a real relay (both relays of the swarm suite).
from dspy_pylon.testing import LocalSwarm
from tests.cli_run import Ran, run_pylon
from tests.swarm.conftest import dev_wallet, local_swarm, relay_loop, relay_url  # noqa: F401

PROVIDER = "a1" * 32
OTHER_PROVIDER = "b2" * 32
CUSTOMER = "c3" * 32


def _clean_error(result: Ran, code: int = 1) -> str:
    """The error a command printed, after checking it failed cleanly (no traceback)."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    return result.stderr


def _mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def _secret(uri: str) -> str:
    return uri.split("secret=")[1].split("&")[0]


@pytest.fixture
def home() -> Path:
    """``$PYLON_HOME`` of the test (and of the commands it runs)."""
    return Path(os.environ["PYLON_HOME"])


def _table(out: str, title: str) -> list[list[str]]:
    """The rows (lists of cells) of the table titled ``title`` in rich's output."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("└"):
            break
        if line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip("│").split("│")])
    return rows


# ─── pylon wallet dev ───


def test_wallet_dev_creates_and_funds_accounts_without_printing_secrets(home: Path) -> None:
    result = run_pylon("wallet", "dev", "--account", "alice", "--fund", "100000", "--account", "bob", "--no-serve")
    assert result.returncode == 0, result.stderr
    assert DEV_WALLET_LABEL in result.stdout
    assert "account alice: 100000 msats" in result.stdout
    assert "account bob: 0 msats" in result.stdout
    database = home / "dev-wallet" / "wallet.sqlite"
    assert _mode(database) == "0o600"
    store = DevWalletStore(database)
    try:
        assert (store.balance("alice"), store.balance("bob")) == (100_000, 0)
        secrets = [account.client_secret for account in store.accounts()]
    finally:
        store.close()
    for text in (result.stdout, result.stderr):
        assert "nostr+walletconnect://" not in text
        assert not any(secret in text for secret in secrets)


def test_wallet_dev_writes_private_uri_files_and_shows_them_only_when_asked(home: Path) -> None:
    relay = f"ws://127.0.0.1:{free_port()}"  # --no-serve: the relay is only written into the URIs
    quiet = run_pylon(
        "wallet", "dev", "--account", "alice", "--fund", "100000", "--account", "bob", "--relay", relay, "--no-serve"
    )
    assert quiet.returncode == 0, quiet.stderr
    files = {name: home / "dev-wallet" / f"{name}.nwc" for name in ("alice", "bob")}
    uris = {}
    for name, path in files.items():
        assert _mode(path) == "0o600"
        uris[name] = path.read_text().strip()
        assert uris[name].startswith("nostr+walletconnect://")
        assert f"account {name}: " in quiet.stdout and str(path) in quiet.stdout
        assert _secret(uris[name]) not in quiet.stdout + quiet.stderr
    assert "nostr+walletconnect://" not in quiet.stdout

    # Again, with the URIs shown: the same accounts (same keys), alice topped up.
    shown = run_pylon(
        "wallet",
        "dev",
        "--account",
        "alice",
        "--fund",
        "1",
        "--account",
        "bob",
        "--relay",
        relay,
        "--no-serve",
        "--show-uri",
    )
    assert shown.returncode == 0, shown.stderr
    assert "account alice: 100001 msats" in shown.stdout
    printed = [line for line in shown.stdout.splitlines() if line.startswith("nostr+walletconnect://")]
    assert printed == [uris["alice"], uris["bob"]]
    store = DevWalletStore(home / "dev-wallet" / "wallet.sqlite")
    try:
        for name, uri in uris.items():
            wallet = NwcWallet(uri)
            account = store.account(name)
            assert account is not None
            assert wallet.client_pubkey == account.client_pubkey
            assert wallet.wallet_pubkey == store.service_pubkey
            assert wallet.relays == (relay,)
    finally:
        store.close()


def test_wallet_dev_makes_an_existing_uri_file_private(home: Path) -> None:
    stale = home / "dev-wallet" / "alice.nwc"
    stale.parent.mkdir(parents=True)
    stale.write_text("an old URI\n")
    stale.chmod(0o644)
    result = run_pylon("wallet", "dev", "--account", "alice", "--relay", f"ws://127.0.0.1:{free_port()}", "--no-serve")
    assert result.returncode == 0, result.stderr
    assert stale.read_text().startswith("nostr+walletconnect://")
    # The file now holds alice's secret: it must not stay readable by others.
    assert _mode(stale) == "0o600"


def test_wallet_dev_show_uri_is_never_silently_ignored(home: Path) -> None:
    # Without --relay, --no-serve has no relay to put in a URI: say so instead of printing nothing.
    result = run_pylon("wallet", "dev", "--account", "alice", "--no-serve", "--show-uri")
    if result.returncode == 0:
        assert "nostr+walletconnect://" in result.stdout
        assert (home / "dev-wallet" / "alice.nwc").exists()
    else:
        assert "--relay" in _clean_error(result, result.returncode)


@pytest.mark.parametrize("args", [("--fund", "5"), ("--account", "alice", "--fund", "5", "--fund", "6")])
def test_wallet_dev_fund_without_account_is_a_usage_error(home: Path, args: tuple[str, ...]) -> None:
    result = run_pylon("wallet", "dev", *args, "--no-serve")
    assert "each --fund needs an --account before it" in _clean_error(result, 2)
    assert not (home / "dev-wallet" / "wallet.sqlite").exists()  # nothing was created


# ─── pylon wallet connect ───


def test_wallet_connect_saves_the_uri_from_stdin_privately(home: Path, tmp_path: Path) -> None:
    home.mkdir(parents=True)
    (home / "nwc.uri").write_text("an old URI\n")
    (home / "nwc.uri").chmod(0o644)
    store = DevWalletStore(tmp_path / "wallet.sqlite")
    try:
        store.create_account("alice")
        uri = store.nwc_uri("alice", ["ws://127.0.0.1:7777"])
    finally:
        store.close()
    result = run_pylon("wallet", "connect", stdin=f"  {uri}\n")
    assert result.returncode == 0, result.stderr
    path = home / "nwc.uri"
    assert f"saved to {path} (mode 0600)" in result.stdout
    assert _secret(uri) not in result.stdout + result.stderr
    assert _mode(path) == "0o600"
    assert load_nwc_uri(home) == uri


@pytest.mark.parametrize("text", ["", "https://example.com/?secret=SECRET", "nostr+walletconnect://nope?secret=SECRET"])
def test_wallet_connect_refuses_a_bad_uri_cleanly(home: Path, text: str) -> None:
    secret = nostr_sdk.Keys.generate().secret_key().to_hex()
    result = run_pylon("wallet", "connect", stdin=text.replace("SECRET", secret))
    error = _clean_error(result)
    assert "Error:" in error and "Nostr Wallet Connect URI" in error
    assert secret not in error + result.stdout
    assert not (home / "nwc.uri").exists()


# ─── pylon wallet balance ───


def test_wallet_balance_of_the_dev_wallet(
    dev_wallet: LocalSwarm,  # noqa: F811 - the imported fixture (on each relay of relay_url)
    home: Path,
) -> None:
    alice = dev_wallet.account("alice", 123_456)
    bob = dev_wallet.account("bob", 7_000)
    connected = run_pylon("wallet", "connect", stdin=alice)
    assert connected.returncode == 0, connected.stderr
    from_file = run_pylon("wallet", "balance")
    assert from_file.returncode == 0, from_file.stderr
    assert "balance: 123456 msats (123 sats)" in from_file.stdout
    from_env = run_pylon("wallet", "balance", env={"PYLON_NWC_URI": bob})
    assert from_env.returncode == 0, from_env.stderr
    assert "balance: 7000 msats (7 sats)" in from_env.stdout
    for result in (from_file, from_env):
        assert _secret(alice) not in result.stdout + result.stderr
        assert _secret(bob) not in result.stdout + result.stderr


def test_wallet_balance_without_a_wallet(home: Path) -> None:
    error = _clean_error(run_pylon("wallet", "balance"))
    assert "no wallet configured" in error and "pylon wallet connect" in error


def test_wallet_balance_refuses_a_uri_file_others_can_read(home: Path) -> None:
    secret = nostr_sdk.Keys.generate().secret_key().to_hex()
    wallet = nostr_sdk.Keys.generate().public_key().to_hex()
    home.mkdir(parents=True)
    path = home / "nwc.uri"
    path.write_text(f"nostr+walletconnect://{wallet}?relay=ws%3A%2F%2F127.0.0.1%3A1&secret={secret}\n")
    path.chmod(0o644)
    error = _clean_error(run_pylon("wallet", "balance"))
    assert "chmod 600" in error
    assert secret not in error


# ─── pylon spend ───


def test_spend_without_a_ledger(home: Path) -> None:
    result = run_pylon("spend")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"no spend ledger yet ({home / 'ledger.sqlite'})"
    assert not (home / "ledger.sqlite").exists()  # looking does not create one


@pytest.fixture
def ledger_rows(home: Path) -> SpendLedger:
    """A ledger in $PYLON_HOME: four spent jobs (done, refused, paid without result, paying), two earned."""
    ledger = SpendLedger(home / "ledger.sqlite")
    job = [str(n) * 64 for n in range(7)]
    ledger.open_job(job[1], provider=PROVIDER, model="m1", bid_msats=5000)
    ledger.begin_payment(job[1], provider=PROVIDER, invoice_msats=3000, bolt11="ln1", payment_hash="1" * 64)
    ledger.payment_succeeded(job[1], preimage="11" * 32, paid_msats=3010, fees_msats=10)
    ledger.finish(job[1], answered=True, prompt_tokens=11, completion_tokens=7)
    ledger.open_job(job[2], provider=OTHER_PROVIDER, model="m2", bid_msats=5000)
    ledger.refuse(job[2], RefusalCode.OVER_BID, "too expensive", provider=OTHER_PROVIDER, invoice_msats=9000)
    ledger.open_job(job[3], provider=PROVIDER, model="m1", bid_msats=5000)
    ledger.begin_payment(job[3], provider=PROVIDER, invoice_msats=2000, bolt11="ln3", payment_hash="3" * 64)
    ledger.payment_succeeded(job[3], preimage="33" * 32, paid_msats=2000)
    ledger.finish(job[3], answered=False, reason="timeout")
    ledger.open_job(job[4], provider=OTHER_PROVIDER, model="m2", bid_msats=5000)
    ledger.begin_payment(job[4], provider=OTHER_PROVIDER, invoice_msats=1000, bolt11="ln4", payment_hash="4" * 64)
    for n, amount in ((5, 4000), (6, 1500)):
        ledger.record_invoice(
            job[n],
            customer=CUSTOMER,
            model="m1",
            bid_msats=5000,
            invoice_msats=amount,
            bolt11=f"ln{n}",
            payment_hash=str(n) * 64,
        )
    ledger.earning_settled(job[5], preimage="55" * 32)
    ledger.earning_finished(job[5], "done", prompt_tokens=3, completion_tokens=4)
    ledger.earning_finished(job[6], "expired", "invoice expired unpaid")
    return ledger


def test_spend_tables_match_the_ledger(ledger_rows: SpendLedger) -> None:
    day = ledger_rows.summary("day")[0].key
    ledger_rows.close()
    result = run_pylon("spend")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    #                 jobs, paid, msats, paid no result, refused, tokens
    assert _table(out, "spend per day") == [[day, "4", "2", "5010", "1", "1", "11/7"]]
    assert _table(out, "spend per provider") == [
        [PROVIDER[:12] + "…", "2", "2", "5010", "1", "0", "11/7"],
        [OTHER_PROVIDER[:12] + "…", "2", "0", "0", "0", "1", "0/0"],
    ]
    assert _table(out, "spend per model") == [
        ["m1", "2", "2", "5010", "1", "0", "11/7"],
        ["m2", "2", "0", "0", "0", "1", "0/0"],
    ]
    assert "total paid: 5010 msats (6 sats)" in out  # a partial sat counts as a sat
    assert "1 payment(s) of unknown outcome" in out


def test_spend_earned_shows_the_provider_side(ledger_rows: SpendLedger) -> None:
    ledger_rows.close()
    result = run_pylon("spend", "--earned", "--by", "provider")
    assert result.returncode == 0, result.stderr
    assert _table(result.stdout, "earnings per customer") == [[CUSTOMER[:12] + "…", "2", "1", "4000", "0", "0", "3/4"]]
    assert "spend per" not in result.stdout and "earnings per model" not in result.stdout
    assert "total earned: 4000 msats (4 sats)" in result.stdout
    assert "unknown outcome" not in result.stdout


def test_spend_by_job_lists_every_job(ledger_rows: SpendLedger) -> None:
    ledger_rows.close()
    result = run_pylon("spend", "--by", "job")
    assert result.returncode == 0, result.stderr
    rows = _table(result.stdout, "spend per job")
    # time, job, provider, model, bid, invoice, paid, state
    assert [row[1:] for row in rows] == [
        ["1" * 12 + "…", PROVIDER[:12] + "…", "m1", "5000", "3000", "3010", "done"],
        ["2" * 12 + "…", OTHER_PROVIDER[:12] + "…", "m2", "5000", "9000", "0", "refused (too expensive)"],
        ["3" * 12 + "…", PROVIDER[:12] + "…", "m1", "5000", "2000", "2000", "paid_no_result (timeout)"],
        ["4" * 12 + "…", OTHER_PROVIDER[:12] + "…", "m2", "5000", "1000", "0", "paying"],
    ]
    assert "total paid: 5010 msats (6 sats)" in result.stdout
    latest = run_pylon("spend", "--by", "job", "--limit", "1", "--earned")
    assert latest.returncode == 0, latest.stderr
    (only,) = _table(latest.stdout, "earned per job")
    assert only[1:] == [
        "6" * 12 + "…",
        CUSTOMER[:12] + "…",
        "m1",
        "5000",
        "1500",
        "0",
        "expired (invoice expired unpaid)",
    ]


def test_spend_set_budget_writes_the_global_budget_and_spend_shows_it(home: Path, ledger_rows: SpendLedger) -> None:
    from dspy_pylon.pay.budget_file import load_global_budget

    result = run_pylon("spend", "--set-budget", "25")
    assert result.returncode == 0, result.stderr
    assert load_global_budget(home) == 25_000
    shown = run_pylon("spend")
    assert "global budget: 25000 msats" in shown.stdout
    assert f"{ledger_rows.committed_msats()} paid or held by open jobs" in shown.stdout
    (home / "budget.toml").write_text("global_budget_sats = -1\n")
    broken = run_pylon("spend")
    assert broken.returncode == 1 and "non-negative" in broken.stderr and "Traceback" not in broken.stderr
