"""Usage and cost accounting (integer millisatoshis)."""

from __future__ import annotations

import threading

import pytest
from dspy import lm15
from hypothesis import given
from hypothesis import strategies as st

from dspy_pylon.usage import LmUsage, UsageTotals, cost_of, msats_to_sats


@pytest.mark.parametrize(("msats", "sats"), [(0, 0), (1, 1), (999, 1), (1000, 1), (1001, 2), (21_000, 21)])
def test_sats_round_up(msats: int, sats: int) -> None:
    assert msats_to_sats(msats) == sats
    assert LmUsage(cost_msats=msats).cost_sats() == sats


@given(st.integers(min_value=0, max_value=10**15))
def test_sats_never_undercount(msats: int) -> None:
    sats = msats_to_sats(msats)
    assert sats * 1000 >= msats > (sats - 1) * 1000 or msats == sats == 0


def test_usage_adds_field_by_field() -> None:
    total = LmUsage(1, 2, 3, 4) + LmUsage(10, 20, 30, 40)
    assert total == LmUsage(11, 22, 33, 44)


def test_usage_from_response_takes_backend_counts_and_recorded_cost() -> None:
    response = lm15.Response(
        id=None,
        model="m",
        message=lm15.Message.assistant("hi"),
        finish_reason="stop",
        usage=lm15.Usage(input_tokens=7, output_tokens=2),
        provider_data={"pylon": {"cost_msats": 1500}},
    )
    usage = LmUsage.from_response(response)
    assert usage == LmUsage(7, 2, 9, 1500)
    assert usage.cost_sats() == 2


@pytest.mark.parametrize(
    "data",
    [
        None,
        {},
        {"pylon": None},
        {"pylon": {"cost_msats": -1}},
        {"pylon": {"cost_msats": 1.5}},
        {"pylon": {"cost_msats": True}},
    ],
)
def test_unrecorded_or_malformed_cost_counts_as_zero(data: object) -> None:
    assert cost_of(data) == 0


def test_totals_are_exact_under_threads() -> None:
    totals = UsageTotals()

    def work() -> None:
        for _ in range(500):
            totals.add(LmUsage(1, 1, 2, 3))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert totals.calls == 4000
    assert totals.total == LmUsage(4000, 4000, 8000, 12_000)
