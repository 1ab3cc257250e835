"""What each backend can carry, as DSPy's adapters read it (pure data, no I/O).

DSPy asks a custom engine object for ``supports_function_calling``,
``supports_reasoning``, ``supports_response_schema`` and ``supported_params``
(``dspy/clients/capabilities.py``); a missing one counts as false, and then
``JSONAdapter`` sends no schema and native tool calling stays off. pylon declares
them per resolved backend, and its codecs refuse what a backend cannot honour
instead of sending it to be ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dspy import lm15

from dspy_pylon.errors import UnsupportedRequest

# Every venue takes these (DSPy's own floor for any engine).
_BASE_PARAMS = frozenset({"temperature", "max_tokens", "top_p", "stream", "stop", "seed"})

# What llama.cpp's server and Ollama read on /v1/chat/completions beyond the base.
_OPENAI_COMPATIBLE_PARAMS = frozenset(
    {"top_k", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "logit_bias"}
)
_SCHEMA_PARAMS = frozenset({"response_format"})

#: llama.cpp server options that lm15's canonical Request has no field for. pylon carries
#: them past DSPy's canonicalisation and sends them at the top of the body, as DSPy's own
#: client does (through LiteLLM) for an OpenAI-compatible server. ``extra_body`` is merged.
LLAMACPP_OPTIONS = frozenset(
    {
        "repeat_penalty",
        "repeat_last_n",
        "min_p",
        "typical_p",
        "top_n_sigma",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "dry_multiplier",
        "dry_base",
        "dry_allowed_length",
        "dry_penalty_last_n",
        "xtc_probability",
        "xtc_threshold",
        "dynatemp_range",
        "dynatemp_exponent",
        "n_probs",
        "n_keep",
        "cache_prompt",
        "samplers",
        "ignore_eos",
        "id_slot",
        "post_sampling_probs",
        "timings_per_token",
        "chat_template_kwargs",
        "extra_body",
    }
)
_TOOL_PARAMS = frozenset({"tools", "tool_choice", "parallel_tool_calls"})

#: Ollama's own option names (its Modelfile parameters). Its OpenAI-compatible ``/v1`` API
#: ignores them, so a call carrying any goes to its native ``/api/chat`` in ``options``
#: (``keep_alive`` at the top of the body), as DSPy's own client does through LiteLLM's
#: ``ollama_chat/`` provider.
OLLAMA_OPTIONS = frozenset(
    {
        "num_ctx",
        "num_keep",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "num_thread",
        "use_mmap",
        "repeat_penalty",
        "repeat_last_n",
        "min_p",
        "typical_p",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "penalize_newline",
        "keep_alive",
    }
)


@dataclass(frozen=True)
class Capabilities:
    """What one backend honours. ``params`` are the request keys it takes."""

    function_calling: bool = False
    response_schema: bool = False
    json_mode: bool = False
    reasoning: bool = False
    # Takes a ``reasoning_effort`` on the wire (whether the model thinks is the model's affair).
    reasoning_effort: bool = False
    params: frozenset[str] = field(default=_BASE_PARAMS)
    # Backend-specific options (``repeat_penalty``...) it reads.
    options: frozenset[str] = frozenset()


def local_capabilities(backend: str, *, template_tools: bool = True) -> Capabilities:
    """Capabilities of a local backend kind (``ollama``, ``llamacpp``, ``embedded``, ``apple-fm``).

    ``template_tools`` is llama.cpp's own report (``/props`` ``chat_template_caps``) of
    whether the model's chat template renders tools: without it, llama.cpp drops the
    tools from the prompt without a word, so pylon refuses them instead.
    """
    options: frozenset[str] = frozenset()
    if backend in ("llamacpp", "embedded"):
        tools = template_tools
        options = LLAMACPP_OPTIONS
    elif backend == "ollama":
        tools = True
        options = OLLAMA_OPTIONS
    else:
        # The Apple FM bridge's OpenAI-compatible surface carries plain chat only.
        return Capabilities(params=_BASE_PARAMS)
    params = _BASE_PARAMS | _OPENAI_COMPATIBLE_PARAMS | _SCHEMA_PARAMS | (_TOOL_PARAMS if tools else frozenset())
    return Capabilities(
        function_calling=tools,
        response_schema=True,
        json_mode=True,
        reasoning_effort=True,
        params=params | options | {"reasoning_effort"},
        options=options,
    )


#: What every venue honours: text chat with the base sampling settings.
PLAIN_CHAT = Capabilities()

#: What the swarm's transcripts carry: text chat, sampling settings, JSON schemas and JSON
#: mode, tools, tool calls and tool results (``pylon.chat.v2``). A provider whose backend
#: cannot honour one of them refuses the job with ``error`` feedback; it never ignores it.
SWARM = Capabilities(
    function_calling=True,
    response_schema=True,
    json_mode=True,
    params=_BASE_PARAMS | _SCHEMA_PARAMS | _TOOL_PARAMS,
)


def unmet(request: lm15.Request, caps: Capabilities) -> UnsupportedRequest | None:
    """Why a backend with ``caps`` cannot honour ``request`` (None when it can).

    Returned, not raised: the local codec raises it, a provider node turns it into
    ``error`` feedback before it starts the job.
    """
    config = request.config
    if config.reasoning is not None and not caps.reasoning_effort:
        return UnsupportedRequest("this backend takes no reasoning_effort", feature="reasoning_effort")
    if request.tools and not caps.function_calling:
        return UnsupportedRequest(
            "native tool calling is not supported by this backend (for llama.cpp: its model's chat template "
            "renders no tools); use an adapter without use_native_function_calling",
            feature="tools",
        )
    if config.response_format is not None:
        schema = config.response_format.get("type") == "json_schema"
        if (schema and not caps.response_schema) or (not schema and not caps.json_mode):
            return UnsupportedRequest(
                "this backend cannot enforce a response_format; drop it (DSPy's ChatAdapter parses text)",
                feature="response_format",
            )
    return None


def feature_names(caps: Capabilities) -> tuple[str, ...]:
    """The features a provider announces (NIP-89) for a backend with ``caps``."""
    named = (("json_schema", caps.response_schema), ("json_object", caps.json_mode), ("tools", caps.function_calling))
    return tuple(name for name, present in named if present)
