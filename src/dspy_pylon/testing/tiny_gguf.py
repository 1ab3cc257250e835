"""A tiny, deterministic, random-weight GGUF model for fast tests and benchmarks.

llama.cpp loads it like any llama model and answers in milliseconds. Its output is
noise, but the same noise on every run: the weights come from a fixed seed and the
file is byte-identical each time it is written. Needs PyPI ``gguf`` (the ``dev`` extra).
"""

from __future__ import annotations

from pathlib import Path

# ChatML with Hermes-style tools (the shape of Qwen 2.5's template): llama.cpp reads tool
# support from the template itself, and with this one it renders tools into the prompt,
# parses <tool_call> blocks back into tool calls and takes tool results in the history.
CHAT_TEMPLATE = (
    "{%- if tools %}{{ '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{ '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n<tools>' }}"
    "{%- for tool in tools %}{{ '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{ '\\n</tools>\\n\\nFor each function call, return a json object within <tool_call></tool_call> tags:\\n"
    '<tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n\' }}'
    "{%- elif messages[0]['role'] == 'system' %}"
    "{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first)"
    " or (message.role == 'assistant' and not message.tool_calls) %}"
    "{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}{{ '<|im_start|>assistant' }}"
    "{%- if message.content %}{{ '\\n' + message.content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    '{{ \'\\n<tool_call>\\n{"name": "\' + tool_call.name + \'", "arguments": \''
    " + (tool_call.arguments | tojson) + '}\\n</tool_call>' }}"
    "{%- endfor %}{{ '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}{{ '<|im_start|>user' }}{%- endif %}"
    "{{ '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{ '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Tools as plain JSON (no tags): llama.cpp derives a JSON tool-call format from this
# template, and with ``tool_choice="required"`` its grammar then forces a well-formed call,
# so even random weights produce a real tool call to parse. (With the Hermes template
# above, the grammar lets free text run on before ``<tool_call>``, and noise never gets there.)
JSON_TOOLS_TEMPLATE = (
    "{%- if tools %}{{ '<|im_start|>system\\nTools: ' + (tools | tojson) + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls %}"
    "{{ '<|im_start|>assistant\\n' + ({'tool_calls': message.tool_calls} | tojson) + '<|im_end|>\\n' }}"
    "{%- else %}{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)

#: Bare ChatML: renders no tools (llama.cpp then reports ``supports_tools: false``).
BARE_CHATML_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

HIDDEN = 64
LAYERS = 2
HEADS = 4
FFN = 128
CONTEXT = 16384
SEED = 1234


def _vocabulary() -> tuple[list[str], list[float], list[int]]:
    from gguf import TokenType

    tokens: list[str] = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, TokenType.CONTROL, TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    # Printable ASCII as single pieces; SentencePiece writes a space as U+2581.
    pieces = ["\u2581" if c == " " else c for c in map(chr, range(32, 127))]
    tokens += pieces
    types += [TokenType.NORMAL] * len(pieces)
    scores = [0.0] * len(tokens)
    return tokens, scores, [int(t) for t in types]


def write_tiny_gguf(path: str | Path, chat_template: str = CHAT_TEMPLATE) -> Path:
    """Write the tiny model to ``path`` (byte-identical on every call) and return the path.

    ``chat_template``: :data:`CHAT_TEMPLATE` (Hermes-style tools, the default),
    :data:`JSON_TOOLS_TEMPLATE` (tool calls forced by grammar) or :data:`BARE_CHATML_TEMPLATE`.
    """
    import gguf
    import numpy as np

    path = Path(path)
    tokens, scores, types = _vocabulary()
    vocab = len(tokens)
    rng = np.random.default_rng(SEED)

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("pylon-tiny-random")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_chat_template(chat_template)
    # No SentencePiece space prefix: with one, llama.cpp's grammar cannot start a JSON
    # answer ("Failed to initialize samplers") and structured outputs cannot be tested.
    writer.add_add_space_prefix(False)

    output = weights(vocab, HIDDEN)
    # Byte and control tokens would decode to U+FFFD noise or end the answer at random:
    # zeroing their output rows keeps answers printable ASCII (and never EOS, so every
    # answer runs to max_tokens with finish_reason "length").
    output[: 5 + 256] = 0.0
    writer.add_tensor("token_embd.weight", weights(vocab, HIDDEN))
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    writer.add_tensor("output.weight", output)
    for layer in range(LAYERS):
        prefix = f"blk.{layer}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{prefix}.{name}.weight", weights(HIDDEN, HIDDEN))
        writer.add_tensor(f"{prefix}.ffn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        writer.add_tensor(f"{prefix}.ffn_gate.weight", weights(FFN, HIDDEN))
        writer.add_tensor(f"{prefix}.ffn_up.weight", weights(FFN, HIDDEN))
        writer.add_tensor(f"{prefix}.ffn_down.weight", weights(HIDDEN, FFN))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
