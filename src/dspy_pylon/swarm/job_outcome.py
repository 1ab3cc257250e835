"""What a customer's finished job hands back (the venue builds the LM's response from it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dspy_pylon.nostr.nip90 import JobFeedback, JobRequest, JobResult

__all__ = ["JobOutcome"]


@dataclass
class JobOutcome:
    """A finished job: the accepted result and what happened on the way."""

    result: JobResult
    job_id: str
    relay: str
    latency_ms: float
    feedback: list[JobFeedback] = field(default_factory=list)
    published_to: tuple[str, ...] = ()
    failed_relays: dict[str, str] = field(default_factory=dict)
    cost_msats: int = 0
    request: JobRequest | None = None
