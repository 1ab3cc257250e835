"""Payment options on ``pylon.LM``: validated at construction, saved with a program, secrets never."""

from __future__ import annotations

import nostr_sdk
import pytest

import dspy_pylon as pylon

KEY = nostr_sdk.Keys.generate().secret_key().to_hex()
RELAY = "ws://127.0.0.1:9"  # nothing listens: construction must not need the relay


def test_swarm_options_land_in_the_venue() -> None:
    lm = pylon.LM(
        "pylon:swarm",
        relays=[RELAY],
        bid_msats=2_500,
        auto_pay=True,
        budget_sats=7,
        private_key=KEY,
        cache=False,
    )
    venue = lm.config.venue
    assert isinstance(venue, pylon.Swarm)
    assert (venue.relays, venue.bid_msats, venue.auto_pay, venue.pay_on_result) == ((RELAY,), 2_500, True, True)
    assert lm.remaining_budget_msats() == 7_000 and lm.total_spent_msats() == 0


def test_swarm_options_on_the_local_venue_are_refused() -> None:
    with pytest.raises(pylon.ConfigError, match="bid_msats, auto_pay apply to the swarm and hybrid venues only"):
        pylon.LM("pylon:local", bid_msats=1, auto_pay=True)


def test_swarm_options_beside_a_config_are_refused() -> None:
    config = pylon.PylonConfig(venue=pylon.Swarm(relays=(RELAY,)))
    with pytest.raises(pylon.ConfigError, match="inside config="):
        pylon.PylonLM("pylon:swarm", config=config, auto_pay=True, private_key=KEY)


@pytest.mark.parametrize(("field", "value"), [("bid_msats", -1), ("bid_msats", 1.5), ("auto_pay", "yes")])
def test_bad_payment_settings_are_clear_errors(field: str, value: object) -> None:
    with pytest.raises(pylon.ConfigError, match=field):
        pylon.Swarm(relays=(RELAY,), **{field: value})  # type: ignore[arg-type]


def test_saved_program_keeps_the_policy_but_not_the_wallet() -> None:
    uri = str(
        nostr_sdk.NostrWalletConnectUri(
            nostr_sdk.Keys.generate().public_key(),
            [nostr_sdk.RelayUrl.parse(RELAY)],
            nostr_sdk.SecretKey.generate(),
            None,
        )
    )
    secret = uri.split("secret=")[1].split("&")[0]
    config = pylon.PylonConfig(
        venue=pylon.Swarm(relays=(RELAY,), bid_msats=3_000, auto_pay=True, pay_on_result=False), budget_sats=9
    )
    lm = pylon.PylonLM.swarm(KEY, config, nwc_uri=uri, approve_payment=lambda request: True)
    state = lm.dump_state()
    assert secret not in repr(state) and "walletconnect" not in repr(state)
    venue = state["pylon_config"]["venue"]
    assert (venue["bid_msats"], venue["auto_pay"], venue["pay_on_result"]) == (3_000, True, False)
    assert state["pylon_config"]["budget_sats"] == 9
    pylon.init_identity()  # a loaded swarm program signs with this machine's identity
    restored = pylon.PylonLM.load_state(state)
    assert restored.config == config
