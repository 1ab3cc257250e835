"""What a provider node tells the world (pure): its announcement, its default token cap, and
no local paths in any of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nostr_sdk
import pytest

from dspy_pylon.capabilities import Capabilities
from dspy_pylon.errors import ConfigError
from dspy_pylon.local.backends import public_model_name
from dspy_pylon.nostr.ciphers import Cipher
from dspy_pylon.nostr.events import from_sdk
from dspy_pylon.nostr.nip89 import Announcement
from dspy_pylon.nostr.nip90 import JobInput, JobRequest
from dspy_pylon.route import Route
from dspy_pylon.swarm import admission
from dspy_pylon.swarm.chat_job import parse_job
from dspy_pylon.swarm.provider_announcement import node_announcement
from dspy_pylon.swarm.provider_settings import ProviderSettings

MODEL_PATH = "/home/someone/models/secret-dir/tiny.gguf"


def settings(**fields: Any) -> ProviderSettings:
    return ProviderSettings(relays=("ws://127.0.0.1:1",), state_dir=Path("/nonexistent"), **fields)


@pytest.mark.parametrize(
    ("served", "public"),
    [
        (MODEL_PATH, "tiny.gguf"),
        ("models/q4.gguf", "q4.gguf"),
        ("C:\\models\\x.gguf", "x.gguf"),
        ("~/m/x.bin", "x.bin"),
        ("C:/m/x.bin", "x.bin"),
        ("models/x.safetensors", "x.safetensors"),
        ("qwen2.5:7b", "qwen2.5:7b"),
        ("llama3.2:latest", "llama3.2:latest"),
        ("org/model-GGUF", "org/model-GGUF"),
    ],
)
def test_public_model_names_drop_directories(served: str, public: str) -> None:
    assert public_model_name(served) == public


def test_the_announcement_names_models_not_paths_and_says_what_it_reads() -> None:
    node = settings(price_msats=10, prices={MODEL_PATH: 2_000}, max_tokens_cap=2_048)
    announced = node_announcement(node, [MODEL_PATH, "other.gguf"], Capabilities())
    event = from_sdk(announced.to_event(nostr_sdk.Keys.generate()))
    assert "secret-dir" not in event.json
    meta = json.loads(event.content)
    assert meta["models"] == ["tiny.gguf", "other.gguf"] and meta["prices"] == {"tiny.gguf": 2_000}
    assert meta["max_tokens"] == {"default": 512, "max": 2_048}
    assert meta["encryption"] == ["nip44", "nip04"] and meta["supportsEncryption"] is True
    assert meta["nip90Params"]["model"]["values"] == ["tiny.gguf", "other.gguf"]
    back = Announcement.from_event(event)
    assert (back.max_tokens_default, back.max_tokens_cap, back.cipher) == (512, 2_048, Cipher.NIP44)


def test_a_job_asking_for_no_max_tokens_gets_the_default() -> None:
    job = JobRequest(inputs=(JobInput("hello"),))
    assert parse_job(job, 4_096, 512)[0].config.max_tokens == 512
    asked = JobRequest(inputs=(JobInput("hello"),), params=(("max_tokens", "7"),))
    assert parse_job(asked, 4_096, 512)[0].config.max_tokens == 7


@pytest.mark.parametrize(
    ("fields", "default"),
    [({}, 512), ({"max_tokens_cap": 100}, 100), ({"default_max_tokens": 64}, 64)],
)
def test_the_default_max_tokens_follows_the_cap(fields: dict[str, Any], default: int) -> None:
    assert settings(**fields).max_tokens_default == default


@pytest.mark.parametrize(
    "fields",
    [{"default_max_tokens": 0}, {"default_max_tokens": "512"}, {"default_max_tokens": 5_000}, {"max_tokens_cap": 0}],
)
def test_bad_token_settings_are_config_errors(fields: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="tokens"):
        settings(**fields)


def test_a_model_asked_by_its_public_name_is_priced_as_the_served_one() -> None:
    """A customer asks for the announced name; the price keyed by the served path applies."""
    route = Route("local", "llamacpp", "http://127.0.0.1:1", MODEL_PATH)
    serving = admission.Serving(
        route, (MODEL_PATH,), Capabilities(), 4_096, price_msats=0, prices=((MODEL_PATH, 2_000),)
    )
    named = JobRequest(inputs=(JobInput("hi"),), params=(("model", "tiny.gguf"),))
    assert serving.model_for(named) == MODEL_PATH and serving.price_for(named) == 2_000
    assert serving.price_for(JobRequest(inputs=(JobInput("hi"),))) == 0  # no model named: the default price
    shouty = admission.Serving(route, (MODEL_PATH,), Capabilities(), 4_096, prices=(("TINY.GGUF", 3_000),))
    assert shouty.price_for(named) == 3_000  # a price is found under any spelling of the served model
    unknown = JobRequest(inputs=(JobInput("hi"),), params=(("model", "nope"),))
    why = admission.cannot_run(unknown, serving)
    assert why is not None and "tiny.gguf" in why and "secret-dir" not in why


@pytest.mark.parametrize(
    ("error", "said"),
    [
        ("BackendConnectionError", "not answering"),
        ("BackendTimeout", "timed out"),
        ("ContextTooLong", "too long"),
        ("BackendServerError", "failed on this job"),
    ],
)
def test_inference_failures_are_told_without_the_backends_words(error: str, said: str) -> None:
    from dspy_pylon import errors

    exc = getattr(errors, error)("llamacpp at http://127.0.0.1:57879 did not answer (/home/someone/models)")
    text = admission.inference_failure(exc)
    assert said in text and "127.0.0.1" not in text and "/home" not in text
