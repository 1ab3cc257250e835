"""Token and cost accounting. Money is an integer number of millisatoshis, never a float."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dspy import lm15

from dspy_pylon.money import msats_to_sats


@dataclass(frozen=True)
class LmUsage:
    """Tokens and cost of one call, or a sum of calls."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_msats: int = 0

    def cost_sats(self) -> int:
        """The cost in satoshis, rounded up."""
        return msats_to_sats(self.cost_msats)

    def __add__(self, other: LmUsage) -> LmUsage:
        return LmUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
            self.cost_msats + other.cost_msats,
        )

    @classmethod
    def from_response(cls, response: lm15.Response) -> LmUsage:
        """The usage reported by a backend, with the cost pylon recorded for the call."""
        usage = response.usage
        prompt = usage.input_tokens or 0
        completion = usage.output_tokens or 0
        return cls(prompt, completion, usage.total_tokens or prompt + completion, cost_of(response.provider_data))


def pylon_data(provider_data: Any) -> Mapping[str, Any]:
    """The ``pylon`` record inside a response's ``provider_data`` (empty if absent)."""
    if isinstance(provider_data, Mapping):
        data = provider_data.get("pylon")
        if isinstance(data, Mapping):
            return data
    return {}


def cost_of(provider_data: Any) -> int:
    """The cost in msats recorded in ``provider_data`` (0 when none was recorded)."""
    cost = pylon_data(provider_data).get("cost_msats", 0)
    return cost if isinstance(cost, int) and not isinstance(cost, bool) and cost >= 0 else 0


class UsageTotals:
    """Running totals over every call an LM (and all its copies) made. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = LmUsage()
        self._calls = 0

    def add(self, usage: LmUsage) -> None:
        """Count one completed call."""
        with self._lock:
            self._total = self._total + usage
            self._calls += 1

    @property
    def total(self) -> LmUsage:
        """The sum over all calls so far."""
        with self._lock:
            return self._total

    @property
    def calls(self) -> int:
        """How many calls completed (cache hits do not reach the engine and are not counted)."""
        with self._lock:
            return self._calls


class Reservation:
    """Millisatoshis set aside for one job until it is settled or released (once)."""

    __slots__ = ("msats", "open")

    def __init__(self, msats: int) -> None:
        self.msats = msats
        self.open = True


class Budget:
    """A spending cap shared by an LM and all its copies; thread-safe.

    A job reserves its bid before it is published; the reservation is later settled to
    what was actually paid, or released. ``spent + reserved`` never exceeds the limit, so
    concurrent calls cannot overspend. ``limit_msats`` 0 means unlimited (still counted).
    """

    def __init__(self, limit_msats: int = 0) -> None:
        self.limit_msats = limit_msats
        self._lock = threading.Lock()
        self._spent = 0
        self._reserved = 0

    def reserve(self, msats: int) -> Reservation:
        """Set ``msats`` aside; :class:`~dspy_pylon.errors.BudgetExceeded` if they do not fit."""
        from dspy_pylon.errors import BudgetExceeded

        with self._lock:
            if self.limit_msats and self._spent + self._reserved + msats > self.limit_msats:
                left = self.limit_msats - self._spent - self._reserved
                raise BudgetExceeded(
                    f"a bid of {msats} msats does not fit in the budget: {left} of {self.limit_msats} msats left "
                    f"({self._spent} spent, {self._reserved} reserved by calls in flight); nothing was published"
                )
            self._reserved += msats
            return Reservation(msats)

    def left_for(self, reservation: Reservation) -> int | None:
        """What a job holding ``reservation`` may pay: its share plus the unreserved rest (None = unlimited)."""
        if not self.limit_msats:
            return None
        with self._lock:
            return self.limit_msats - self._spent - self._reserved + (reservation.msats if reservation.open else 0)

    def settle(self, reservation: Reservation, paid_msats: int) -> None:
        """Turn a reservation into an actual payment of ``paid_msats`` (may differ from the bid)."""
        with self._lock:
            if reservation.open:
                self._reserved -= reservation.msats
                reservation.open = False
            self._spent += paid_msats

    def release(self, reservation: Reservation) -> None:
        """Give a reservation back unused (nothing was paid)."""
        with self._lock:
            if reservation.open:
                self._reserved -= reservation.msats
                reservation.open = False

    def add_spent(self, paid_msats: int) -> None:
        """Count a payment made outside a reservation (an approved :func:`~dspy_pylon.pay` call)."""
        with self._lock:
            self._spent += paid_msats

    @property
    def spent_msats(self) -> int:
        """Everything paid so far."""
        with self._lock:
            return self._spent

    @property
    def reserved_msats(self) -> int:
        """Held by calls in flight."""
        with self._lock:
            return self._reserved

    def remaining_msats(self) -> int | None:
        """What is neither spent nor reserved (None when unlimited)."""
        if not self.limit_msats:
            return None
        with self._lock:
            return max(0, self.limit_msats - self._spent - self._reserved)
