"""How a chat call travels as a NIP-90 text-generation job (pure, no I/O).

A request carries exactly one ``text`` input: a readable rendering of the conversation,
what any DVM feeds its model (a typical one reads the first text input, nostr-dvm the
last). The JSON chat transcript rides in the param :data:`CHAT_PARAM`, which DVMs that do
not know it skip, and which pylon providers prefer. Params besides: ``model``,
``max_tokens``, ``temperature``, ``top_p``, ``stop`` (a JSON list), ``seed``. Jobs of
earlier pylon versions, with the transcript as a ``text`` input marked ``chat``, are read too.

Two transcript formats. A plain text chat goes as ``pylon.chat.v1``, which every pylon
provider reads::

    {"format": "pylon.chat.v1", "system": "...", "messages": [{"role": "user", "content": "..."}]}

A chat with a JSON schema, JSON mode, tools, tool calls or tool results goes as
``pylon.chat.v2``, whose fields are the OpenAI chat-completions request fields of the same
names (the shape every DVM author already knows)::

    {"format": "pylon.chat.v2", "system": "...",
     "messages": [{"role": "user", "content": "..."},
                  {"role": "assistant", "content": null,
                   "tool_calls": [{"id": "c1", "type": "function",
                                   "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]},
                  {"role": "tool", "tool_call_id": "c1", "content": "sunny"}],
     "tools": [{"type": "function", "function": {"name": "weather", "description": "...", "parameters": {...}}}],
     "tool_choice": "auto" | "required" | "none" | {"type": "function", "function": {"name": "weather"}},
     "parallel_tool_calls": false,
     "response_format": {"type": "json_schema", "json_schema": {"name": "...", "schema": {...}, "strict": true}}
                        | {"type": "json_object"}}

The result of a v2 job is a JSON object in the same spirit (the assistant message)::

    {"format": "pylon.chat.v2", "content": "..." | null, "tool_calls": [...as above...]}

A provider that cannot honour a v2 job (no schema enforcement, no tools) answers with
``error`` feedback before it bills; a provider of an earlier pylon version refuses the
unknown format too, but only after its invoice is paid. A customer refuses a v2 job's result
that is not such an object, so a provider that ignored the transcript (answering the readable
prompt in free text) cannot hand that back as the answer; what is inside a well-formed v2
answer (its JSON against the schema) is the provider's word.

A provider accepts plain-prompt jobs from other clients too: without a transcript, the
text inputs joined by blank lines become one user message.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping
from typing import Any

from dspy import lm15

from dspy_pylon.errors import MalformedEvent, UnsupportedRequest
from dspy_pylon.local.openai_chat import messages_to_chat, response_format_to_chat, tool_choice_to_chat, tools_to_chat
from dspy_pylon.nostr.ciphers import Cipher
from dspy_pylon.nostr.nip90 import JobInput, JobRequest, JobResult

TRANSCRIPT_FORMAT = "pylon.chat.v1"
TRANSCRIPT_V2 = "pylon.chat.v2"
#: The transcript formats this version reads and writes (announced over NIP-89).
FORMATS = (TRANSCRIPT_FORMAT, TRANSCRIPT_V2)
#: The param holding the JSON chat transcript (DVMs skip params they do not know).
CHAT_PARAM = "pylon_chat"
ROLES = ("system", "user", "assistant")
# Bounds on what a provider parses from a stranger's job.
_MAX_TOOLS = 128


def _text_of(message: lm15.Message, index: int) -> str:
    text = message.text
    if text is None:
        where = f"messages[{index}]"
        raise UnsupportedRequest(f"{where}: only text messages can be sent to the swarm", feature=where)
    return str(text)


def _needs_v2(request: lm15.Request) -> bool:
    config = request.config
    if request.tools or config.tool_choice is not None or config.response_format is not None:
        return True
    return any(isinstance(part, lm15.ToolCallPart | lm15.ToolResultPart) for m in request.messages for part in m.parts)


def _system_text(request: lm15.Request) -> str | None:
    if request.system is None:
        return None
    return request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)


def _v2_messages(request: lm15.Request) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(request.messages):
        for entry in messages_to_chat(message, index):
            if not (entry["content"] is None or isinstance(entry["content"], str)):
                where = f"messages[{index}]"
                raise UnsupportedRequest(
                    f"{where}: only text, tool calls and tool results can be sent to the swarm", feature=where
                )
            messages.append(entry)
    return messages


def transcript(request: lm15.Request) -> dict[str, Any]:
    """The chat transcript of ``request`` as JSON-ready data (v1 when it is plain text chat)."""
    if request.config.reasoning is not None:
        raise UnsupportedRequest("reasoning_effort cannot be sent to the swarm yet", feature="reasoning_effort")
    system = _system_text(request)
    data: dict[str, Any]
    if _needs_v2(request):
        config = request.config
        data = {"format": TRANSCRIPT_V2, "messages": _v2_messages(request)}
        if request.tools:
            data["tools"] = tools_to_chat(request.tools)
        if config.tool_choice is not None:
            tool_choice_to_chat(config.tool_choice, data)
        if config.response_format is not None:
            data["response_format"] = response_format_to_chat(dict(config.response_format))
    else:
        messages = []
        for index, message in enumerate(request.messages):
            role = "system" if message.role == "developer" else message.role
            if role not in ROLES:
                raise UnsupportedRequest(f"messages[{index}]: role {role!r} cannot be sent to the swarm")
            messages.append({"role": role, "content": _text_of(message, index)})
        data = {"format": TRANSCRIPT_FORMAT, "messages": messages}
    if system is not None:
        data["system"] = system
    return data


def _readable_message(message: Mapping[str, Any]) -> str:
    if message["role"] == "tool":
        return f"tool result: {message['content']}"
    text = message.get("content") or ""
    calls = [f"[calls {c['function']['name']}({c['function']['arguments']})]" for c in message.get("tool_calls") or ()]
    return f"{message['role']}: " + " ".join(x for x in (text, *calls) if x)


def readable(data: dict[str, Any]) -> str:
    """A plain-text rendering of a transcript for providers that do not parse it."""
    parts = [f"system: {data['system']}"] if data.get("system") else []
    parts += [_readable_message(m) for m in data["messages"]]
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
    cipher: Cipher = Cipher.NIP04,
) -> JobRequest:
    """The NIP-90 job for a chat request (``encrypted`` to its one provider in ``cipher``)."""
    data = transcript(request)
    return JobRequest(
        inputs=(JobInput(readable(data)),),
        params=(*job_params(request, model), (CHAT_PARAM, json.dumps(data, ensure_ascii=False))),
        output="text/plain",
        bid_msats=bid_msats,
        relays=relays,
        providers=providers,
        encrypted=encrypted,
        cipher=cipher,
        nonce=secrets.token_hex(8),
    )


def transcript_text(job: JobRequest) -> str | None:
    """The JSON chat transcript a job carries: its :data:`CHAT_PARAM`, or the ``chat`` input of
    an earlier pylon version; None for a plain-prompt job."""
    param = job.param(CHAT_PARAM)
    if param is not None:
        return param
    return next((i.data for i in job.inputs if i.marker == "chat" and i.type == "text"), None)


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


# The v2 fields read from a stranger's transcript; sampling settings come from params only.
_V2_FIELDS = ("messages", "tools", "tool_choice", "parallel_tool_calls", "response_format")
_V2_PARTS = (lm15.TextPart, lm15.ToolCallPart, lm15.ToolResultPart)


def _v2_request_from(data: Mapping[str, Any]) -> lm15.Request:
    """The v2 transcript read by DSPy's own reader of OpenAI chat requests (lm15's)."""
    tools = data.get("tools")
    if isinstance(tools, list) and len(tools) > _MAX_TOOLS:
        raise MalformedEvent(f"the chat transcript has more than {_MAX_TOOLS} tools")
    body = {"model": "default", **{key: data[key] for key in _V2_FIELDS if data.get(key) is not None}}
    request = lm15.request_from_openai_chat(body)
    for index, message in enumerate(request.messages):
        for part in message.parts:
            inner = part.content if isinstance(part, lm15.ToolResultPart) else ()
            if not isinstance(part, _V2_PARTS) or not all(isinstance(p, lm15.TextPart) for p in inner):
                # Images or files would make the provider's server fetch or decode a stranger's data.
                raise MalformedEvent(
                    f"messages[{index}]: a pylon.chat.v2 transcript carries text, tool calls and tool results only"
                )
    return request


def _v1_messages_from(raw_messages: list[Any]) -> tuple[str | None, list[lm15.Message]]:
    system: str | None = None
    messages: list[lm15.Message] = []
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
    return system, messages


def _stop_of(job: JobRequest) -> tuple[str, ...]:
    stop_raw = job.param("stop")
    if stop_raw is None:
        return ()
    try:
        parsed = json.loads(stop_raw)
    except (ValueError, RecursionError):
        parsed = stop_raw
    values = parsed if isinstance(parsed, list) else [parsed]
    if not all(isinstance(s, str) and s for s in values) or len(values) > 16:
        raise MalformedEvent("param stop must be a string or a JSON list of up to 16 non-empty strings")
    return tuple(values)


def parse_job(
    job: JobRequest, max_tokens_cap: int = 32_768, default_max_tokens: int | None = None
) -> tuple[lm15.Request, str | None]:
    """The chat request a provider runs for ``job``, and its transcript format (None for a
    plain-prompt job: the result is then plain text, as for v1). A job that asks for no
    ``max_tokens`` gets ``default_max_tokens``."""
    chat = transcript_text(job)
    system: str | None = None
    messages: list[lm15.Message] = []
    extras: dict[str, Any] = {}
    tools: tuple[lm15.FunctionTool, ...] = ()
    form: str | None = None
    if chat is not None:
        try:
            data = json.loads(chat)
        except (ValueError, RecursionError):
            raise MalformedEvent("the chat input is not valid JSON") from None
        form = data.get("format") if isinstance(data, dict) else None
        if form not in FORMATS:
            raise MalformedEvent(f"the chat input is not a transcript in a format read here ({', '.join(FORMATS)})")
        raw_messages = data.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            raise MalformedEvent("the chat transcript has no messages")
        try:
            if form == TRANSCRIPT_V2:
                v2 = _v2_request_from(data)
                system = _system_text(v2)
                messages, tools = list(v2.messages), v2.tools
                extras = {"tool_choice": v2.config.tool_choice, "response_format": v2.config.response_format}
            else:
                system, messages = _v1_messages_from(raw_messages)
        # lm15's own checks (ids, schema, hosted tools); RecursionError: tool arguments nested deep.
        except (TypeError, ValueError, RecursionError, lm15.LM15Error) as exc:
            raise MalformedEvent(f"the chat transcript is invalid: {exc}") from None
        if isinstance(data.get("system"), str):
            system = data["system"] if system is None else f"{data['system']}\n\n{system}"
    else:
        texts = [i.data for i in job.inputs if i.type in ("text", "prompt") and i.data.strip()]
        if not texts:
            raise MalformedEvent("the job has no text input")
        messages.append(lm15.Message.user("\n\n".join(texts)))
    if not messages:
        raise MalformedEvent("the chat transcript has only system messages")
    try:
        config = lm15.Config(
            max_tokens=_number(job, "max_tokens", int, 1, max_tokens_cap) or default_max_tokens,
            temperature=_number(job, "temperature", float, 0, 2),
            top_p=_number(job, "top_p", float, 0, 1),
            seed=_number(job, "seed", int, -(2**63), 2**63 - 1),
            stop=_stop_of(job),
            **{k: v for k, v in extras.items() if v is not None},
        )
        model = job.param("model") or "default"
        request = lm15.Request(model=model, messages=tuple(messages), system=system, config=config, tools=tools)
    except (TypeError, ValueError) as exc:
        raise MalformedEvent(f"the job's settings are invalid: {exc}") from None
    return request, form


def request_from_job(job: JobRequest, max_tokens_cap: int = 32_768) -> lm15.Request:
    """The chat request a provider runs for ``job`` (transcript, or plain text inputs)."""
    return parse_job(job, max_tokens_cap)[0]


def result_content(response: lm15.Response, form: str | None) -> str:
    """What a provider publishes as the result of a job in transcript ``form``."""
    if form != TRANSCRIPT_V2:
        return response.text or ""
    parts = response.message.parts
    text = "".join(p.text for p in parts if isinstance(p, lm15.TextPart))
    calls = [
        {
            "id": p.id,
            "type": "function",
            "function": {"name": p.name, "arguments": json.dumps(p.input, ensure_ascii=False)},
        }
        for p in parts
        if isinstance(p, lm15.ToolCallPart)
    ]
    # null content only beside tool calls (an empty answer is "", as on the OpenAI wire).
    envelope: dict[str, Any] = {"format": TRANSCRIPT_V2, "content": text if text or not calls else None}
    if calls:
        envelope["tool_calls"] = calls
    return json.dumps(envelope, ensure_ascii=False)


def job_result(job: JobRequest, response: lm15.Response, form: str | None, model: str, amount_msats: int) -> JobResult:
    """The result a provider publishes for ``job``: the answer in the job's ``form``, its usage,
    and the request (an encrypted one stays encrypted in it; its inputs are not echoed). An
    encrypted job's result is encrypted in the scheme the request used."""
    return JobResult(
        request_id=job.id,
        customer=job.customer,
        content=result_content(response, form),
        kind=job.kind + 1000,
        request_json=job.event_json or None,
        inputs=() if job.encrypted else job.inputs,
        amount_msats=amount_msats,
        encrypted=job.encrypted,
        cipher=job.cipher,
        model=model,
        prompt_tokens=response.usage.input_tokens or 0,
        completion_tokens=response.usage.output_tokens or 0,
        finish_reason=response.finish_reason,
    )


def result_message(content: str, form: str | None) -> lm15.Message:
    """The assistant message a customer reads from a result of a job sent in ``form``.

    Raises :class:`MalformedEvent` when a v2 job's result is not a v2 answer (a provider
    that ignored the transcript, its schema or its tools).
    """
    if form != TRANSCRIPT_V2:
        return lm15.Message.assistant(content)
    try:
        data = json.loads(content)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or data.get("format") != TRANSCRIPT_V2:
        raise MalformedEvent(f"the result of a {TRANSCRIPT_V2} job is not a {TRANSCRIPT_V2} answer")
    assistant: dict[str, Any] = {"role": "assistant", "content": data.get("content")}
    if data.get("tool_calls") is not None:
        assistant["tool_calls"] = data["tool_calls"]
    try:
        [message] = lm15.request_from_openai_chat({"model": "result", "messages": [assistant]}).messages
    except (TypeError, ValueError, RecursionError, lm15.LM15Error) as exc:
        raise MalformedEvent(f"the result is invalid: {exc}"[:300]) from None
    return message


def transcript_format(job: JobRequest | None) -> str | None:
    """The transcript format a customer's own job was sent in (None: no transcript)."""
    chat = None if job is None else transcript_text(job)
    if chat is None:
        return None
    try:
        data = json.loads(chat)
    except (ValueError, RecursionError):
        return None
    form = data.get("format") if isinstance(data, dict) else None
    return form if isinstance(form, str) else None
