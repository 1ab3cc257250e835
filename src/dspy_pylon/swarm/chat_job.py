"""How a chat call travels as a NIP-90 text-generation job (pure, no I/O).

A request carries one ``text`` input holding a JSON chat transcript (marker ``chat``)::

    {"format": "pylon.chat.v1", "system": "...", "messages": [{"role": "user", "content": "..."}]}

plus a readable rendering of the same conversation as a second ``text`` input (marker
``prompt``), for providers that do not know the transcript format. Params: ``model``,
``max_tokens``, ``temperature``, ``top_p``, ``stop`` (a JSON list), ``seed``.

A provider accepts plain-prompt jobs from other clients too: without a ``chat`` input,
the text inputs joined by blank lines become one user message.
"""

from __future__ import annotations

import json
import math
import secrets
from typing import Any

from dspy import lm15

from dspy_pylon.errors import MalformedEvent, UnsupportedRequest
from dspy_pylon.nostr.nip90 import JobInput, JobRequest

TRANSCRIPT_FORMAT = "pylon.chat.v1"
ROLES = ("system", "user", "assistant")


def _text_of(message: lm15.Message, index: int) -> str:
    text = message.text
    if text is None:
        where = f"messages[{index}]"
        raise UnsupportedRequest(f"{where}: only text messages can be sent to the swarm", feature=where)
    return str(text)


def transcript(request: lm15.Request) -> dict[str, Any]:
    """The chat transcript of ``request`` as JSON-ready data."""
    if request.tools or request.config.tool_choice is not None:
        raise UnsupportedRequest("native tool calling is not supported on the swarm", feature="tools")
    if request.config.reasoning is not None:
        raise UnsupportedRequest("reasoning_effort cannot be sent to the swarm yet", feature="reasoning_effort")
    if request.config.response_format is not None:
        # The pylon.chat.v1 transcript has no place for a schema: sending the job anyway
        # would return unconstrained text where the caller asked for JSON.
        raise UnsupportedRequest(
            "response_format (structured outputs) cannot be sent to the swarm yet; use the local venue, "
            "or DSPy's ChatAdapter, which parses text",
            feature="response_format",
        )
    system = None
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
    messages = []
    for index, message in enumerate(request.messages):
        role = "system" if message.role == "developer" else message.role
        if role not in ROLES:
            raise UnsupportedRequest(f"messages[{index}]: role {role!r} cannot be sent to the swarm")
        messages.append({"role": role, "content": _text_of(message, index)})
    data: dict[str, Any] = {"format": TRANSCRIPT_FORMAT, "messages": messages}
    if system is not None:
        data["system"] = system
    return data


def readable(data: dict[str, Any]) -> str:
    """A plain-text rendering of a transcript for providers that do not parse it."""
    parts = [f"system: {data['system']}"] if data.get("system") else []
    parts += [f"{m['role']}: {m['content']}" for m in data["messages"]]
    return "\n\n".join(parts)


def job_params(request: lm15.Request, model: str | None) -> tuple[tuple[str, str], ...]:
    """NIP-90 params for the request's generation settings."""
    config = request.config
    params: list[tuple[str, str]] = []
    if model:
        params.append(("model", model))
    for name in ("max_tokens", "temperature", "top_p", "seed"):
        value = getattr(config, name)
        if value is not None:
            params.append((name, str(value)))
    if config.stop:
        params.append(("stop", json.dumps(list(config.stop))))
    return tuple(params)


def chat_job(
    request: lm15.Request,
    *,
    model: str | None,
    bid_msats: int | None,
    relays: tuple[str, ...],
    providers: tuple[str, ...] = (),
    encrypted: bool = False,
) -> JobRequest:
    """The NIP-90 job for a chat request."""
    data = transcript(request)
    inputs = (
        JobInput(json.dumps(data, ensure_ascii=False), "text", "", "chat"),
        JobInput(readable(data), "text", "", "prompt"),
    )
    return JobRequest(
        inputs=inputs,
        params=job_params(request, model),
        output="text/plain",
        bid_msats=bid_msats,
        relays=relays,
        providers=providers,
        encrypted=encrypted,
        nonce=secrets.token_hex(8),
    )


def _number(job: JobRequest, name: str, cast: type[int] | type[float], low: float, high: float) -> Any:
    raw = job.param(name)
    if raw is None:
        return None
    try:
        value = cast(raw)
    except ValueError:
        raise MalformedEvent(f"param {name} must be a number, got {raw[:30]!r}") from None
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        raise MalformedEvent(f"param {name} must be between {low:g} and {high:g}, got {raw[:30]!r}")
    return value


def request_from_job(job: JobRequest, max_tokens_cap: int = 32_768) -> lm15.Request:
    """The chat request a provider runs for ``job`` (transcript, or plain text inputs)."""
    chat = next((i for i in job.inputs if i.marker == "chat" and i.type == "text"), None)
    system: str | None = None
    messages: list[lm15.Message] = []
    if chat is not None:
        try:
            data = json.loads(chat.data)
        except (ValueError, RecursionError):
            raise MalformedEvent("the chat input is not valid JSON") from None
        if not isinstance(data, dict) or data.get("format") != TRANSCRIPT_FORMAT:
            raise MalformedEvent(f"the chat input is not a {TRANSCRIPT_FORMAT} transcript")
        raw_messages = data.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            raise MalformedEvent("the chat transcript has no messages")
        for entry in raw_messages:
            valid = isinstance(entry, dict) and entry.get("role") in ROLES and isinstance(entry.get("content"), str)
            if not valid:
                raise MalformedEvent("each transcript message needs a role (system/user/assistant) and text content")
            if entry["role"] == "system":
                system = entry["content"] if system is None else f"{system}\n\n{entry['content']}"
            elif entry["role"] == "user":
                messages.append(lm15.Message.user(entry["content"]))
            else:
                messages.append(lm15.Message.assistant(entry["content"]))
        if isinstance(data.get("system"), str):
            system = data["system"] if system is None else f"{data['system']}\n\n{system}"
    else:
        texts = [i.data for i in job.inputs if i.type in ("text", "prompt") and i.data.strip()]
        if not texts:
            raise MalformedEvent("the job has no text input")
        messages.append(lm15.Message.user("\n\n".join(texts)))
    if not messages:
        raise MalformedEvent("the chat transcript has only system messages")
    stop_raw = job.param("stop")
    stop: tuple[str, ...] = ()
    if stop_raw is not None:
        try:
            parsed = json.loads(stop_raw)
        except (ValueError, RecursionError):
            parsed = stop_raw
        values = parsed if isinstance(parsed, list) else [parsed]
        if not all(isinstance(s, str) and s for s in values) or len(values) > 16:
            raise MalformedEvent("param stop must be a string or a JSON list of up to 16 non-empty strings")
        stop = tuple(values)
    try:
        config = lm15.Config(
            max_tokens=_number(job, "max_tokens", int, 1, max_tokens_cap),
            temperature=_number(job, "temperature", float, 0, 2),
            top_p=_number(job, "top_p", float, 0, 1),
            seed=_number(job, "seed", int, -(2**63), 2**63 - 1),
            stop=stop,
        )
        model = job.param("model") or "default"
        return lm15.Request(model=model, messages=tuple(messages), system=system, config=config)
    except (TypeError, ValueError) as exc:
        raise MalformedEvent(f"the job's settings are invalid: {exc}") from None
