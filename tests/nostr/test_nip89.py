"""NIP-89 handler announcements: round trip with real keys, tolerance of other software's metadata."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import nostr_sdk
import pytest

from dspy_pylon.errors import MalformedEvent
from dspy_pylon.nostr.events import RawEvent, from_sdk
from dspy_pylon.nostr.nip89 import ANNOUNCEMENT_KIND, Announcement

HEX_A = "a" * 64


@pytest.fixture(scope="module")
def keys() -> Any:
    return nostr_sdk.Keys.generate()


def raw(tags: list[list[str]], content: str = "", kind: int = ANNOUNCEMENT_KIND) -> RawEvent:
    return RawEvent(
        id="b" * 64, pubkey=HEX_A, kind=kind, created_at=5, tags=tuple(tuple(t) for t in tags), content=content
    )


def test_round_trip(keys: Any) -> None:
    original = Announcement(
        identifier="pylon-text-1",
        kinds=(5050, 5930),
        name="Pylon node",
        about="Runs small models",
        models=("llama3", "smollm2"),
        price_msats=1_500,
        relays=("wss://relay.one", "wss://relay.two"),
        prices=(("llama3", 2_500), ("smollm2", 900)),
        formats=("pylon.chat.v1", "pylon.chat.v2"),
        features=("json_schema", "json_object", "tools"),
    )
    event = original.to_event(keys)
    parsed_raw = from_sdk(event)
    assert parsed_raw.kind == ANNOUNCEMENT_KIND
    assert parsed_raw.tags == (("d", "pylon-text-1"), ("k", "5050"), ("k", "5930"))
    assert json.loads(parsed_raw.content)["software"] == "dspy-pylon"
    parsed = Announcement.from_event(parsed_raw)
    assert parsed == dataclasses.replace(
        original, pubkey=keys.public_key().to_hex(), created_at=int(event.created_at().as_secs())
    )


def test_per_model_prices_are_read_leniently_and_used_by_discovery() -> None:
    from dspy_pylon.swarm.discovery import records_from

    content = json.dumps({"price_msats": 1_000, "prices": {"big": 5_000, "bad": -1, "worse": "x", "flag": True}})
    parsed = Announcement.from_event(raw([["d", "x"], ["k", "5050"]], content))
    assert parsed.prices == (("big", 5_000),)
    [record] = records_from([parsed], 5050)
    assert (record.price_for("BIG"), record.price_for("small"), record.price_for(None)) == (5_000, 1_000, 1_000)
    not_a_table = Announcement.from_event(raw([["d", "x"]], json.dumps({"prices": [1, 2]})))
    assert not_a_table.prices == ()


def test_round_trip_minimal(keys: Any) -> None:
    parsed = Announcement.from_event(from_sdk(Announcement(identifier="x", kinds=()).to_event(keys)))
    assert (parsed.identifier, parsed.kinds, parsed.name, parsed.models, parsed.price_msats) == ("x", (), "", (), None)


@pytest.mark.parametrize(
    "content",
    [
        "",
        "   ",
        "not json at all",
        '{"name": "half',
        "[1, 2, 3]",
        '"just a string"',
        "42",
        "null",
        "true",
        "{}",
    ],
)
def test_garbage_or_non_dict_content_gives_defaults(content: str) -> None:
    parsed = Announcement.from_event(raw([["d", "other"], ["k", "5050"]], content))
    assert parsed.identifier == "other"
    assert parsed.kinds == (5050,)
    assert (parsed.name, parsed.about, parsed.models, parsed.price_msats, parsed.relays) == ("", "", (), None, ())
    assert parsed.pubkey == HEX_A
    assert parsed.created_at == 5


def test_partial_metadata_from_other_software() -> None:
    content = json.dumps({"display_name": "Some DVM", "picture": "https://x/p.png", "nip90Params": {"model": {}}})
    parsed = Announcement.from_event(raw([["d", "dvm"], ["k", "5050"], ["t", "ai"]], content))
    assert parsed.name == "Some DVM"
    assert (parsed.about, parsed.models, parsed.price_msats, parsed.relays) == ("", (), None, ())


def test_wrongly_typed_fields_default() -> None:
    content = json.dumps(
        {"name": None, "about": 7, "models": "llama3", "price_msats": "1000", "relays": {"wss://x": True}}
    )
    parsed = Announcement.from_event(raw([["d", "dvm"]], content))
    assert parsed.name == ""
    assert parsed.about == "7"
    assert parsed.models == ()
    assert parsed.price_msats is None
    assert parsed.relays == ()


def test_list_items_are_strings_and_lists_are_capped() -> None:
    content = json.dumps(
        {"models": [1, "m", None, *[f"x{i}" for i in range(200)]], "relays": [f"wss://{i}" for i in range(50)]}
    )
    parsed = Announcement.from_event(raw([["d", "dvm"]], content))
    assert parsed.models[:3] == ("1", "m", "None")
    assert len(parsed.models) == 100
    assert len(parsed.relays) == 20


def test_long_name_and_about_are_truncated() -> None:
    parsed = Announcement.from_event(raw([["d", "dvm"]], json.dumps({"name": "n" * 500, "about": "a" * 5000})))
    assert len(parsed.name) == 200
    assert len(parsed.about) == 1000


@pytest.mark.parametrize("tags", [[], [["k", "5050"]], [["d"]], [["d", ""]], [["e", HEX_A]]])
def test_missing_d_tag_is_malformed(tags: list[list[str]]) -> None:
    with pytest.raises(MalformedEvent):
        Announcement.from_event(raw(tags, "{}"))


@pytest.mark.parametrize("value", ["abc", "", "-1", "50.5", "5050x", "1" * 6, "0x13ba"])
def test_non_numeric_k_is_malformed(value: str) -> None:
    with pytest.raises(MalformedEvent):
        Announcement.from_event(raw([["d", "x"], ["k", "5050"], ["k", value]], "{}"))


def test_k_without_value_is_malformed() -> None:
    with pytest.raises(MalformedEvent):
        Announcement.from_event(raw([["d", "x"], ["k"]], "{}"))


@pytest.mark.parametrize("kind", [0, 1, 5050, 31989, 31991, 6050])
def test_wrong_kind_is_malformed(kind: int) -> None:
    with pytest.raises(MalformedEvent):
        Announcement.from_event(raw([["d", "x"]], "{}", kind=kind))


@pytest.mark.parametrize("price", [-1, -(10**6), True, False, 1.5, "10", None, [1]])
def test_bad_price_is_unknown_not_free(price: object) -> None:
    parsed = Announcement.from_event(raw([["d", "x"]], json.dumps({"price_msats": price})))
    assert parsed.price_msats is None


def test_an_unknown_price_never_sorts_as_the_cheapest() -> None:
    from dspy_pylon.swarm.discovery import records_from

    def announced(pubkey: str, meta: dict[str, object]) -> Announcement:
        event = RawEvent("c" * 64, pubkey, 31990, 5, (("d", "x"), ("k", "5050")), json.dumps(meta))
        return Announcement.from_event(event)

    records = records_from(
        [announced("1" * 64, {}), announced("2" * 64, {"price_msats": 5_000}), announced("3" * 64, {"price_msats": 0})],
        5050,
    )
    assert [(r.pubkey[0], r.price_msats) for r in records] == [("3", 0), ("2", 5_000), ("1", None)]
    assert records[-1].price_for("any") is None


@pytest.mark.parametrize("price", [0, 1, 10**12])
def test_good_price_is_kept(price: int) -> None:
    assert Announcement.from_event(raw([["d", "x"]], json.dumps({"price_msats": price}))).price_msats == price


@pytest.mark.parametrize(
    ("tags", "content", "why"),
    [
        ([["d", "x"], ["k", "\u00b2"]], "{}", "a k tag of '²' (str.isdigit() is true, int() raises ValueError)"),
        (
            [["d", "x"]],
            "1" * 5000,
            "content of a 5000-digit integer (json.loads raises ValueError, not JSONDecodeError)",
        ),
        ([["d", "x"]], "[" * 100_000, "deeply nested JSON content (json.loads raises RecursionError)"),
    ],
    ids=["k-superscript-two", "content-bigint", "content-deep"],
)
def test_hostile_announcements_are_malformed_or_default(tags: list[list[str]], content: str, why: str) -> None:
    """SRC BUG: Announcement.from_event lets ValueError/RecursionError escape on these inputs."""
    try:
        Announcement.from_event(raw(tags, content))
    except MalformedEvent:
        pass
    except Exception as exc:
        pytest.fail(
            f"SRC BUG (nip89.Announcement.from_event): {why}: raised {type(exc).__name__} "
            "instead of MalformedEvent or parsing with defaults"
        )


def test_formats_and_features_are_read_leniently() -> None:
    """What a provider reads and honours; from other software, anything odd means "did not say"."""
    parsed = Announcement.from_event(
        raw([["d", "x"], ["k", "5050"]], json.dumps({"formats": ["pylon.chat.v2", 3, "y" * 100], "features": "tools"}))
    )
    assert parsed.formats == ("pylon.chat.v2", "y" * 64)
    assert parsed.features == ()
    from dspy_pylon.swarm.discovery import records_from

    [record] = records_from([dataclasses.replace(parsed, features=("tools",))], 5050)
    assert record.formats == parsed.formats and record.features == ("tools",)
