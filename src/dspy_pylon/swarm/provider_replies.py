"""What a provider node says to customers: feedback and refusals, encrypted as each request was."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from dspy_pylon.errors import PylonError
from dspy_pylon.nostr.ciphers import Cipher
from dspy_pylon.nostr.nip90 import JobFeedback, JobRequest
from dspy_pylon.nostr.relay_client import RelayClient
from dspy_pylon.nostr.requested_relays import public_only, usable_relays
from dspy_pylon.pay.ledger import Earned, SpendLedger
from dspy_pylon.swarm.jobs_db import JobsDB, JobStatus

__all__ = ["Replies"]

log = logging.getLogger("dspy_pylon.provider")


def _secrecy(cipher: Cipher | None) -> dict[str, Any]:
    """JobFeedback fields for a reply in ``cipher`` (None: in the clear)."""
    return {} if cipher is None else {"encrypted": True, "cipher": cipher}


class Replies:
    """One node's feedback and refusals. :attr:`client` is the node's relay client while it is
    connected; ``on_refused`` counts each job closed by a refusal; ``later`` runs a coroutine
    in the background (one the node finishes before it stops)."""

    def __init__(
        self,
        keys: Any,
        jobs: JobsDB,
        ledger: SpendLedger,
        on_refused: Callable[[], None],
        later: Callable[[Coroutine[Any, Any, None]], None],
        allow_local_relays: bool = False,
    ) -> None:
        self.keys = keys
        self.jobs = jobs
        self.ledger = ledger
        self.client: RelayClient | None = None
        self.allow_local_relays = allow_local_relays
        self._on_refused = on_refused
        self._later = later

    def also_where_asked(self, event: Any, job: JobRequest) -> None:
        """Send ``event`` to the relays ``job``'s ``relays`` tag names too, in the background."""
        wanted = usable_relays(
            job.relays, self.client.relays if self.client else (), allow_local=self.allow_local_relays
        )
        if wanted:
            self._later(self._elsewhere(event, wanted))

    async def _elsewhere(self, event: Any, relays: tuple[str, ...]) -> None:
        if not self.allow_local_relays:
            relays = await public_only(relays)
        if relays and self.client is not None:
            await self.client.publish_elsewhere(event, relays)

    async def _publish(self, feedback: JobFeedback, job: JobRequest | None = None) -> None:
        assert self.client is not None
        event = feedback.to_event(self.keys)
        try:
            await self.client.publish(event, ok_timeout=2.0)
        except PylonError as exc:
            log.info("feedback %s for job %s not delivered: %s", feedback.status, feedback.request_id[:12], exc)
        if job is not None:
            self.also_where_asked(event, job)

    async def feedback(self, job: JobRequest, status: str, **fields: Any) -> None:
        """Publish ``status`` feedback on ``job`` (further :class:`JobFeedback` fields: ``extra``,
        ``amount_msats``, ``bolt11``, ``content``), encrypted as its request was."""
        secrecy = _secrecy(job.reply_cipher)
        await self._publish(JobFeedback(job.id, job.customer, status, **fields, **secrecy), job)

    async def refuse_job(self, job: JobRequest, why: str, status: JobStatus = JobStatus.REFUSED) -> None:
        """:meth:`refuse` a job read in full (the feedback encrypted as its request was)."""
        await self.refuse(job.id, job.customer, why, status, job.reply_cipher, job)

    async def refuse(
        self,
        job_id: str,
        customer: str,
        why: str,
        status: JobStatus = JobStatus.REFUSED,
        cipher: Cipher | None = None,
        job: JobRequest | None = None,
    ) -> None:
        """Tell the customer why not (``error`` feedback, encrypted in ``cipher`` if given; also on
        the relays ``job`` asks for) and close the job."""
        log.info("job %s refused: %s", job_id[:12], why)
        secrecy = _secrecy(cipher)
        await self._publish(JobFeedback(job_id, customer, "error", extra=why[:1000], **secrecy), job)
        await self.jobs.run(self.jobs.move, job_id, status, why)
        if status is JobStatus.REFUSED:  # a job billed, then refused (no-op when it was never billed)
            await self.ledger.run(self.ledger.earning_finished, job_id, Earned.FAILED, why)
        self._on_refused()
