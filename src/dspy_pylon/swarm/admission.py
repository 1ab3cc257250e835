"""A provider's decision on a job request before any money moves: refuse, bill or run (pure).

:func:`admit` sees the parsed request and what the node serves (:class:`Serving`) and
returns a :data:`Decision`; the node performs it. Every check that could refuse a job runs
here, before an invoice is sent: a job refused after payment costs the customer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Protocol

from dspy_pylon import capabilities as caps_mod
from dspy_pylon.errors import MalformedEvent, PylonError
from dspy_pylon.local import openai_chat
from dspy_pylon.local.backends import match_model, public_model_name
from dspy_pylon.nostr.nip90 import JobRequest
from dspy_pylon.pay import pricing
from dspy_pylon.route import Route
from dspy_pylon.swarm.chat_job import parse_job
from dspy_pylon.swarm.provider_settings import ProviderSettings


@dataclass(frozen=True)
class Serving:
    """What a node serves and charges: all :func:`admit` needs to judge a job."""

    route: Route
    models: tuple[str, ...]
    capabilities: caps_mod.Capabilities
    max_tokens_cap: int
    price_msats: int = 0
    prices: tuple[tuple[str, int], ...] = ()
    max_unpaid: int = 256
    #: What a job that asks for no ``max_tokens`` gets (None: the backend's own limit).
    default_max_tokens: int | None = None

    @classmethod
    def of(
        cls, settings: ProviderSettings, route: Route, models: Sequence[str], capabilities: caps_mod.Capabilities
    ) -> Serving:
        """What a node with ``settings`` serves on ``route``."""
        return cls(
            route=route,
            models=tuple(models),
            capabilities=capabilities,
            max_tokens_cap=settings.max_tokens_cap,
            price_msats=settings.price_msats,
            prices=tuple(settings.prices.items()),
            max_unpaid=settings.max_unpaid,
            default_max_tokens=settings.max_tokens_default,
        )

    def cannot_run(self, job: JobRequest) -> str | None:
        """Why ``job`` cannot run here, or None (:func:`cannot_run`)."""
        return cannot_run(job, self)

    def price_for(self, job: JobRequest) -> int:
        """What ``job`` costs here (msats): the default price when it names no model; else the
        price of the served model it gets, however it spells it (``llama3.2`` for
        ``llama3.2:latest``, a file's name for its path), else the default."""
        wanted = job.param("model")
        if not wanted or wanted == "default":
            return self.price_msats
        try:
            served = self.model_for(job)
        except MalformedEvent:  # refused anyway; priced by its name as written
            return pricing.price_for(wanted, self.price_msats, self.prices)
        # Every spelling of the served model a price may be listed under, compared case-blind.
        spellings = {served, public_model_name(served), PurePath(public_model_name(served)).stem, wanted}
        spellings |= {name.removesuffix(":latest") for name in spellings}
        folded = {name.lower() for name in spellings}
        for name, price in self.prices:
            if name.lower() in folded or name.lower().removesuffix(":latest") in folded:
                return price
        return self.price_msats

    @property
    def _kind(self) -> Any:
        return "llamacpp" if self.route.backend == "embedded" else self.route.backend

    def model_for(self, job: JobRequest) -> str:
        """The served model that answers ``job``; :class:`MalformedEvent` when none does."""
        wanted = job.param("model")
        if not wanted or wanted == "default":
            return self.route.model
        served = match_model(self._kind, wanted, list(self.models))
        if served is None:
            names = ", ".join(public_model_name(m) for m in self.models)
            raise MalformedEvent(f"model {wanted!r} is not served here; available: {names}")
        return served


@dataclass(frozen=True)
class Refuse:
    """Answer with ``error`` feedback saying ``why``; nothing is billed."""

    why: str


@dataclass(frozen=True)
class Bill:
    """Send an invoice for ``price_msats``; run the job once it is paid."""

    price_msats: int


@dataclass(frozen=True)
class Run:
    """Queue the job for a worker (free)."""


Decision = Refuse | Bill | Run


class JobService(Protocol):
    """A kind of job a node sells (text generation, sandboxed execution): what :func:`admit`
    asks of it before any money moves."""

    @property
    def max_unpaid(self) -> int:
        """Invoices that may wait for payment at once before jobs are turned away."""
        ...

    def cannot_run(self, job: JobRequest) -> str | None:
        """Why ``job`` cannot run here, or None."""
        ...

    def price_for(self, job: JobRequest) -> int:
        """What ``job`` costs here (msats)."""
        ...


def cannot_run(job: JobRequest, serving: Serving) -> str | None:
    """Why ``job`` cannot run here (parsing, the model, capabilities, the backend body), or None."""
    try:
        request, _form = parse_job(job, serving.max_tokens_cap, serving.default_max_tokens)
        serving.model_for(job)
    except (MalformedEvent, PylonError) as exc:
        return str(exc)
    # A schema or tools this backend cannot honour would come back ignored (free text
    # where JSON was asked), which a customer must never get.
    refusal = caps_mod.unmet(request, serving.capabilities)
    if refusal is not None:
        return f"this provider cannot honour the job: {refusal}"
    try:  # the body the backend would get, built and serialised now
        json.dumps(openai_chat.chat_payload(request, "check", capabilities=serving.capabilities))
    except PylonError as exc:
        return f"this provider cannot honour the job: {exc}"
    except (ValueError, RecursionError):
        return "the job's transcript is nested too deeply to send to the backend"
    return None


def admit(job: JobRequest, serving: JobService, *, unpaid: int) -> Decision:
    """What to do with ``job`` while ``unpaid`` invoices of this node wait for payment."""
    why = serving.cannot_run(job)
    if why is not None:
        return Refuse(why)
    price = serving.price_for(job)
    if not price:
        return Run()
    # A bid is optional in NIP-90 (nostr-dvm's client never sends one): without one the job
    # is billed and the customer decides on the invoice; a bid below the price is refused.
    if job.bid_msats is not None and job.bid_msats < price:
        return Refuse(f"bid below price of {price} msats")
    if unpaid >= serving.max_unpaid:
        return Refuse("provider busy: too many unpaid invoices, try later")
    return Bill(price)


def inference_failure(exc: BaseException) -> str:
    """What a customer is told when the local backend failed on a job: the kind of failure,
    never the backend's message (it names local addresses, paths and ports)."""
    from dspy_pylon import errors

    if isinstance(exc, errors.ContextTooLong):
        return "inference failed: the prompt is too long for the model"
    if isinstance(exc, errors.BackendTimeout):
        return "inference failed: the model timed out"
    if isinstance(exc, errors.BackendConnectionError | errors.NoLocalBackend):
        return "inference failed: the provider's model server is not answering"
    if isinstance(exc, errors.BackendRequestError | errors.UnsupportedRequest):
        return "inference failed: the model server refused the request"
    return "inference failed: the model server failed on this job"
