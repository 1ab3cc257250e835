"""The one price rule shared by providers and customers (pure)."""

from __future__ import annotations

import pytest

from dspy_pylon.pay.pricing import price_for

PRICES = (("Llama3.2", 2_000), ("smollm2", 900))


@pytest.mark.parametrize(
    ("model", "expected"),
    [("llama3.2", 2_000), ("LLAMA3.2", 2_000), ("smollm2", 900), ("other", 1_500), (None, 1_500), ("", 1_500)],
)
def test_a_models_own_price_else_the_default(model: str | None, expected: int) -> None:
    assert price_for(model, 1_500, PRICES) == expected


def test_provider_and_announcement_agree() -> None:
    """The provider bills what its announcement says, read back by a customer."""
    import nostr_sdk

    from dspy_pylon.nostr.events import from_sdk
    from dspy_pylon.nostr.nip89 import Announcement
    from dspy_pylon.swarm.discovery import records_from

    keys = nostr_sdk.Keys.generate()
    event = Announcement("x", (5050,), price_msats=1_500, prices=PRICES).to_event(keys)
    [record] = records_from([Announcement.from_event(from_sdk(event))], 5050)
    for model in ("llama3.2", "SMOLLM2", "other", None):
        assert record.price_for(model) == price_for(model, 1_500, PRICES)
