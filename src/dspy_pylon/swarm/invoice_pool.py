"""Invoices a provider makes ahead, per price, so a job's bill goes out without a wallet round trip.

A made-ahead invoice is bound to its job by the provider's signed ``payment-required``
event (its description cannot name a job not yet seen). When the pool of a price is
empty, :meth:`InvoicePool.take` makes one named after the job instead.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

from dspy_pylon.errors import MalformedEvent, WalletError
from dspy_pylon.pay.invoice import invoice_description
from dspy_pylon.pay.nwc import MadeInvoice, NwcWallet

log = logging.getLogger("dspy_pylon.provider")


class InvoicePool:
    """Up to ``size`` fresh invoices per price, refilled in the background on the node's loop."""

    def __init__(self, wallet: NwcWallet, size: int, expiry_s: int) -> None:
        self.wallet = wallet
        self.size = size
        self.expiry_s = expiry_s
        self._pools: dict[int, collections.deque[MadeInvoice]] = {}
        self._refilling: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._open = True

    def ready(self, price: int) -> int:
        """How many invoices for ``price`` wait in the pool."""
        return len(self._pools.get(price, ()))

    def fill(self, prices: set[int]) -> None:
        """Start making invoices ahead for each non-zero price (no-op when ``size`` is 0)."""
        for price in prices - {0}:
            self._start_refill(price)

    async def take(self, price: int, job_id: str) -> MadeInvoice:
        """An invoice for ``price``: one made ahead with at least half its life left, else a new
        one named after ``job_id`` (:class:`WalletError` / :class:`MalformedEvent` from the wallet)."""
        pool = self._pools.setdefault(price, collections.deque())
        fresh_until = time.time() + self.expiry_s / 2
        while pool and pool[0].expires_at < fresh_until:
            pool.popleft()
        invoice = pool.popleft() if pool else None
        self._start_refill(price)
        if invoice is not None:
            return invoice
        return await self.wallet.make_invoice(price, invoice_description(job_id), self.expiry_s)

    def _start_refill(self, price: int) -> None:
        if not self.size or not self._open or price in self._refilling:
            return
        self._refilling.add(price)
        task = asyncio.get_running_loop().create_task(self._refill(price))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refill(self, price: int) -> None:
        pool = self._pools.setdefault(price, collections.deque())
        try:
            while self._open and len(pool) < self.size:
                pool.append(await self.wallet.make_invoice(price, "pylon job (made ahead)", self.expiry_s))
        except (WalletError, MalformedEvent) as exc:
            log.info("could not make invoices ahead: %s", exc)
        finally:
            self._refilling.discard(price)

    async def close(self) -> None:
        """Stop refilling; returns once the refills in progress are cancelled."""
        self._open = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
