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
        # Its OpenAI-compatible /v1 API ignores its native option names: refused, not sent.
        tools = True
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


#: The swarm's ``pylon.chat.v1`` transcript carries text chat and sampling settings only.
SWARM = Capabilities(params=_BASE_PARAMS)
