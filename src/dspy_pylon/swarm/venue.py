"""The swarm venue: one LM call = one NIP-90 job, run on the process's Nostr loop."""

from __future__ import annotations

from typing import Any

from dspy import lm15

from dspy_pylon.config import Hybrid, Swarm
from dspy_pylon.errors import NoEligibleProvider
from dspy_pylon.nostr.ciphers import Cipher
from dspy_pylon.nostr.loop import NostrLoop
from dspy_pylon.nostr.nip90 import JobResult
from dspy_pylon.nostr.relay_client import RelayClient
from dspy_pylon.pay.billing import Payer
from dspy_pylon.swarm.chat_job import chat_job, result_message, transcript_format
from dspy_pylon.swarm.customer import JobOutcome, SwarmCustomer
from dspy_pylon.swarm.peer_ciphers import PeerCiphers
from dspy_pylon.swarm.reputation import ProviderStats, Reputation

_FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter", "tool_call": "tool_call"}


def _hex_pubkey(provider: str) -> str:
    if provider.startswith("npub1"):
        import nostr_sdk

        return str(nostr_sdk.PublicKey.parse(provider).to_hex())
    return provider


def response_from_outcome(outcome: JobOutcome, requested_model: str | None, form: str | None = None) -> lm15.Response:
    """The lm15 response for a finished job sent in transcript ``form``, with the swarm
    route in ``provider_data["pylon"]``."""
    result = outcome.result
    message = result_message(result.content, form)
    model = result.model or requested_model or "unknown"
    # Always numbers (0 when the provider reported none): DSPy tells a cache hit by its empty
    # usage, and a live paid call must never look like one, or its cost would read 0.
    prompt, completion = result.prompt_tokens or 0, result.completion_tokens or 0
    usage = lm15.Usage(input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion)
    cipher = outcome.request.reply_cipher if outcome.request is not None else None
    pylon = {
        "venue": "swarm",
        "backend": "nip90",
        "base_url": outcome.relay,
        "model": model,
        "provider": result.provider,
        "job_id": outcome.job_id,  # the request event's id
        "result_id": result.id,  # the result event's id, signed by the provider
        "relay": outcome.relay,
        "latency_ms": round(outcome.latency_ms, 3),
        "cost_msats": outcome.cost_msats,
        "amount_msats": result.amount_msats,
        "published_to": list(outcome.published_to),
        "failed_relays": outcome.failed_relays,
        "feedback": [f"{f.status} from {f.provider}" for f in outcome.feedback],
        # The scheme the job was encrypted in (a job to one provider), None when it was public.
        "encryption": None if cipher is None else str(cipher),
    }
    return lm15.Response(
        id=outcome.job_id,
        model=model,
        message=message,
        finish_reason=_FINISH.get(result.finish_reason or "stop", "stop"),
        usage=usage,
        provider_data={"pylon": pylon},
    )


class SwarmVenue:
    """Runs chat requests as NIP-90 jobs for one key on the venue's relays."""

    def __init__(
        self,
        venue: Swarm | Hybrid,
        keys: Any,
        model: str | None,
        timeout: float,
        payer: Payer | None = None,
        *,
        reputation: Reputation | None = None,
        relay_client: RelayClient | None = None,
    ) -> None:
        self.venue = venue
        self.payer = payer
        self.model = model
        self.timeout = timeout
        self.providers = tuple(_hex_pubkey(p) for p in venue.providers)
        self.loop = NostrLoop.shared()
        self.reputation = reputation
        self.customer = SwarmCustomer(keys, venue.relays, reputation, client=relay_client)
        self.ciphers = PeerCiphers()

    async def _eligible(self) -> tuple[str, ...]:
        """The providers this job may go to: all named ones, or, under ``min_reputation``,
        those named (or the best one known, when none is) whose reputation reaches it."""
        floor = self.venue.min_reputation
        if floor is None:
            return self.providers
        store = self.reputation
        if store is None:
            known = [ProviderStats(p) for p in self.providers]
        elif self.providers:
            known = await store.run(lambda: [store.stats(p) for p in self.providers])
        else:
            known = await store.run(store.all)
        ranked = sorted(known, key=lambda s: (-s.score, s.mean_latency_ms or 0.0, s.pubkey))
        eligible = tuple(s.pubkey for s in ranked if s.score >= floor)
        if not eligible:
            best = f"the best is {ranked[0].pubkey[:16]}… at {ranked[0].score:.2f}" if ranked else "none is known yet"
            raise NoEligibleProvider(
                f"no provider has a reputation of at least {floor:.2f} on this machine ({best}; a new provider "
                "starts at 0.50 and earns it with answered jobs): lower min_reputation or name providers"
            )
        return eligible if self.providers else eligible[:1]

    async def _run(self, request: lm15.Request) -> lm15.Response:
        providers = await self._eligible()
        encrypted = len(providers) == 1
        cipher = Cipher.NIP04
        if encrypted:  # in the scheme the provider says it reads (NIP-90's NIP-04 otherwise)
            cipher = await self.ciphers.cipher_for(await self.customer.connected(), providers[0])
        job = chat_job(
            request,
            model=self.model,
            bid_msats=self.venue.bid_msats,
            relays=self.venue.relays,
            providers=providers,
            encrypted=encrypted,
            cipher=cipher,
        )
        form = transcript_format(job)

        def check(result: JobResult) -> None:
            # A provider that ignored a v2 transcript (schema, tools) has no valid answer for it.
            result_message(result.content, form)

        outcome = await self.customer.run(job, self.timeout, self.payer, check=check)
        return response_from_outcome(outcome, self.model, form)

    async def _pay(self, job_id: str, timeout: float | None) -> lm15.Response:
        outcome = await self.customer.pay(job_id, self.timeout if timeout is None else timeout)
        return response_from_outcome(outcome, self.model, transcript_format(outcome.request))

    def pay(self, job_id: str, timeout: float | None = None) -> lm15.Response:
        """Pay a job that raised PaymentRequired and wait for its result, blocking."""
        return self.loop.run(self._pay(job_id, timeout), (self.timeout if timeout is None else timeout) + 40)

    def complete(self, request: lm15.Request) -> lm15.Response:
        """Run one call as a job, blocking the calling thread (never the Nostr loop)."""
        # The customer enforces the timeout; the margin covers connecting, paying (a wallet may
        # take up to its own 30 s timeout) and cancelling.
        return self.loop.run(self._run(request), self.timeout + 45)

    async def acomplete(self, request: lm15.Request) -> lm15.Response:
        """Run one call as a job, awaited from any event loop."""
        return await self.loop.arun(self._run(request))

    def close(self) -> None:
        """Disconnect from the relays."""
        if self.loop.thread.is_alive():
            self.loop.run(self.customer.close(), 5)
