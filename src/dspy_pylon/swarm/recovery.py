"""What a customer's first paid call after a restart settles: jobs a stopped process left open.

Run once per process, before its first paid job: jobs of dead processes are closed
(``interrupted``), payments of unknown outcome are looked up in the wallet (never paid
again), and paid jobs of interrupted calls are looked for on the relays, where the
provider may have delivered the result after all.
"""

from __future__ import annotations

import logging
from typing import Any

from dspy_pylon.errors import MalformedEvent
from dspy_pylon.nostr.nip90 import RESULT_KINDS, JobResult
from dspy_pylon.nostr.relay_client import RelayClient
from dspy_pylon.pay.billing import Payer

log = logging.getLogger("dspy_pylon.swarm")


async def recover_interrupted(payer: Payer, client: RelayClient, keys: Any) -> None:
    """Close orphaned jobs, resolve interrupted payments, find late results (ledger calls off the loop)."""
    orphans = await payer.ledger.run(payer.ledger.close_orphans)
    resolved = await payer.recover()
    if resolved:
        log.info("resolved %d payments interrupted by a restart", resolved)
    if orphans:
        log.info("closed %d unpaid jobs of a process that stopped mid-call", orphans)
    await find_late_results(payer, client, keys)


async def find_late_results(payer: Payer, client: RelayClient, keys: Any, limit: int = 50) -> None:
    """Paid jobs whose call was interrupted may have been answered after all: look on the relays
    (results are stored there) so the ledger says so. The newest ``limit`` such jobs, once each."""
    import nostr_sdk

    unanswered = await payer.ledger.run(payer.ledger.unlooked_interrupted, limit)
    if not unanswered:
        return
    me = keys.public_key().to_hex()
    by_id = {entry.job_id: entry for entry in unanswered}
    try:
        found = await client.fetch(
            [
                nostr_sdk.Filter()
                .kinds([nostr_sdk.Kind(k) for k in RESULT_KINDS])
                .pubkey(keys.public_key())
                .events([nostr_sdk.EventId.parse(job_id) for job_id in by_id])
            ],
            timeout=3.0,
        )
    except Exception as exc:  # best effort: the ledger already says "paid without a result"
        log.info("could not look for late results: %s", exc)
        return
    for raw in found:
        try:
            result = JobResult.from_event(raw, keys)
        except MalformedEvent:
            continue
        entry = by_id.get(result.request_id)
        if entry is not None and result.customer == me and result.provider == entry.provider:
            await payer.ledger.run(payer.ledger.result_found_later, entry.job_id)
            del by_id[entry.job_id]
    for job_id in by_id:  # looked for once: later starts need not ask the relays again
        await payer.ledger.run(payer.ledger.relays_checked, job_id)
