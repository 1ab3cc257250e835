"""The budget: bids reserved before publishing, settled to what was paid, never overspent."""

from __future__ import annotations

import random
import sys
import threading

import pytest
from dspy import lm15

from dspy_pylon.errors import BudgetExceeded, PylonError
from dspy_pylon.usage import Budget, Reservation


def test_reserve_settle_release_arithmetic() -> None:
    budget = Budget(10_000)
    first = budget.reserve(3000)
    second = budget.reserve(4000)
    assert (budget.spent_msats, budget.reserved_msats, budget.remaining_msats()) == (0, 7000, 3000)
    budget.settle(first, 2500)  # paid less than the bid: the rest comes back
    assert (budget.spent_msats, budget.reserved_msats, budget.remaining_msats()) == (2500, 4000, 3500)
    budget.release(second)
    assert (budget.spent_msats, budget.reserved_msats, budget.remaining_msats()) == (2500, 0, 7500)
    third = budget.reserve(7500)  # exactly what is left fits
    assert budget.remaining_msats() == 0
    budget.settle(third, 7500)
    assert (budget.spent_msats, budget.reserved_msats, budget.remaining_msats()) == (10_000, 0, 0)
    assert budget.reserve(0).msats == 0  # a free job still fits


def test_a_bid_that_does_not_fit_is_refused_and_says_nothing_was_published() -> None:
    budget = Budget(10_000)
    held = budget.reserve(6000)
    budget.settle(budget.reserve(1000), 1000)
    with pytest.raises(BudgetExceeded) as exceeded:
        budget.reserve(3001)
    message = str(exceeded.value)
    assert "nothing was published" in message
    assert "3001" in message and "3000 of 10000 msats left" in message
    assert "1000 spent" in message and "6000 reserved" in message
    assert isinstance(exceeded.value, PylonError) and isinstance(exceeded.value, lm15.BillingError)
    # The refusal changed nothing.
    assert (budget.spent_msats, budget.reserved_msats) == (1000, 6000)
    budget.release(held)
    assert budget.reserve(3001).msats == 3001


def test_zero_means_unlimited_but_still_counted() -> None:
    budget = Budget(0)
    big = budget.reserve(10**15)
    assert budget.remaining_msats() is None
    assert budget.left_for(big) is None
    budget.settle(big, 10**15)
    budget.add_spent(5)
    assert (budget.spent_msats, budget.reserved_msats) == (10**15 + 5, 0)
    assert Budget().limit_msats == 0 and Budget().reserve(1).msats == 1


def test_release_and_settle_close_a_reservation_once() -> None:
    budget = Budget(10_000)
    reservation = budget.reserve(4000)
    budget.release(reservation)
    budget.release(reservation)
    assert not reservation.open
    assert (budget.spent_msats, budget.reserved_msats) == (0, 0)
    settled = budget.reserve(4000)
    budget.settle(settled, 3000)
    budget.release(settled)  # after settling: nothing more to give back
    assert (budget.spent_msats, budget.reserved_msats) == (3000, 0)
    # A payment on a reservation already released (an approved bill) is counted, not un-reserved again.
    budget.settle(reservation, 500)
    assert (budget.spent_msats, budget.reserved_msats, budget.remaining_msats()) == (3500, 0, 6500)


def test_left_for_is_the_jobs_share_plus_the_unreserved_rest() -> None:
    budget = Budget(10_000)
    mine = budget.reserve(2000)
    others = budget.reserve(5000)
    budget.add_spent(1000)
    # 10 000 - 1000 spent - 7000 reserved + my 2000.
    assert budget.left_for(mine) == 4000
    assert budget.left_for(others) == 7000
    budget.release(others)
    assert budget.left_for(mine) == 9000
    budget.settle(mine, 2000)
    assert budget.left_for(mine) == 7000  # settled: no share of its own any more
    assert budget.left_for(Reservation(0)) == 7000


def test_64_threads_never_overspend() -> None:
    limit = 1_000_000
    budget = Budget(limit)
    errors: list[str] = []
    settled: list[int] = []
    refused: list[int] = []
    start = threading.Barrier(64)

    def spend(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for _ in range(200):
            bid = rng.randint(0, 60_000)
            try:
                reservation = budget.reserve(bid)
            except BudgetExceeded:
                refused.append(bid)
                continue
            # Read spent first: reserved can then only have moved to spent, never been counted twice.
            spent = budget.spent_msats
            reserved = budget.reserved_msats
            if spent > limit or spent + reserved > limit:
                errors.append(f"after reserve: spent {spent} + reserved {reserved} > {limit}")
            left = budget.left_for(reservation)
            if left is None or left < bid:
                errors.append(f"a job holding {bid} msats may pay only {left}")
            if rng.random() < 0.3:
                budget.release(reservation)
                settled.append(0)
            else:
                paid = rng.randint(0, bid)
                budget.settle(reservation, paid)
                settled.append(paid)
            spent = budget.spent_msats
            reserved = budget.reserved_msats
            if spent > limit or spent + reserved > limit:
                errors.append(f"after settle: spent {spent} + reserved {reserved} > {limit}")

    threads = [threading.Thread(target=spend, args=(seed,)) for seed in range(64)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: between every read and write
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert budget.reserved_msats == 0
    assert budget.spent_msats == sum(settled) <= limit
    assert len(settled) + len(refused) == 64 * 200
    assert refused, "the budget was never full: the test did not test the limit"
