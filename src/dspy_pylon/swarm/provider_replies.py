"""What a provider node says to customers: feedback and refusals, encrypted as each request was."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dspy_pylon.errors import PylonError
from dspy_pylon.nostr.ciphers import Cipher
from dspy_pylon.nostr.nip90 import JobFeedback, JobRequest
from dspy_pylon.nostr.relay_client import RelayClient
from dspy_pylon.pay.ledger import Earned, SpendLedger
from dspy_pylon.swarm.jobs_db import JobsDB, JobStatus

__all__ = ["Replies"]

log = logging.getLogger("dspy_pylon.provider")


def _secrecy(cipher: Cipher | None) -> dict[str, Any]:
    """JobFeedback fields for a reply in ``cipher`` (None: in the clear)."""
    return {} if cipher is None else {"encrypted": True, "cipher": cipher}


class Replies:
    """One node's feedback and refusals. :attr:`client` is the node's relay client while it is
    connected; ``on_refused`` counts each job closed by a refusal."""

    def __init__(self, keys: Any, jobs: JobsDB, ledger: SpendLedger, on_refused: Callable[[], None]) -> None:
        self.keys = keys
        self.jobs = jobs
        self.ledger = ledger
        self.client: RelayClient | None = None
        self._on_refused = on_refused

    async def _publish(self, feedback: JobFeedback) -> None:
        assert self.client is not None
        try:
            await self.client.publish(feedback.to_event(self.keys), ok_timeout=2.0)
        except PylonError as exc:
            log.info("feedback %s for job %s not delivered: %s", feedback.status, feedback.request_id[:12], exc)

    async def feedback(self, job: JobRequest, status: str, **fields: Any) -> None:
        """Publish ``status`` feedback on ``job`` (further :class:`JobFeedback` fields: ``extra``,
        ``amount_msats``, ``bolt11``, ``content``), encrypted as its request was."""
        await self._publish(
            JobFeedback(request_id=job.id, customer=job.customer, status=status, **fields, **_secrecy(job.reply_cipher))
        )

    async def refuse_job(self, job: JobRequest, why: str, status: JobStatus = JobStatus.REFUSED) -> None:
        """:meth:`refuse` a job read in full (the feedback encrypted as its request was)."""
        await self.refuse(job.id, job.customer, why, status, job.reply_cipher)

    async def refuse(
        self, job_id: str, customer: str, why: str, status: JobStatus = JobStatus.REFUSED, cipher: Cipher | None = None
    ) -> None:
        """Tell the customer why not (``error`` feedback, encrypted in ``cipher`` if given) and close the job."""
        log.info("job %s refused: %s", job_id[:12], why)
        secrecy = _secrecy(cipher)
        await self._publish(JobFeedback(job_id, customer, "error", extra=why[:1000], **secrecy))
        await self.jobs.run(self.jobs.move, job_id, status, why)
        if status is JobStatus.REFUSED:  # a job billed, then refused (no-op when it was never billed)
            await self.ledger.run(self.ledger.earning_finished, job_id, Earned.FAILED, why)
        self._on_refused()
