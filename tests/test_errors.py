"""The exception hierarchy and how DSPy treats each error (retry or not)."""

from __future__ import annotations

import pytest
from dspy.clients.errors import wrap_error
from dspy.utils import exceptions as dspy_errors

import dspy_pylon as pylon
from dspy_pylon import errors


def _all_error_classes() -> list[type[BaseException]]:
    return [getattr(errors, name) for name in errors.__all__]


def test_every_error_is_a_pylon_error_and_exported() -> None:
    for cls in _all_error_classes():
        assert issubclass(cls, pylon.PylonError), cls
        assert getattr(pylon, cls.__name__) is cls


@pytest.mark.parametrize(
    ("error", "dspy_class", "retried"),
    [
        (pylon.BackendConnectionError("gone"), dspy_errors.LMTransportError, True),
        (pylon.BackendTimeout("slow"), dspy_errors.LMTimeoutError, True),
        (pylon.BackendServerError("500", status=500), dspy_errors.LMServerError, True),
        (pylon.BackendRequestError("400", status=400), dspy_errors.LMInvalidRequestError, False),
        (pylon.ContextTooLong("too long"), dspy_errors.ContextWindowExceededError, False),
        (pylon.UnknownModel("which?"), dspy_errors.LMUnsupportedModelError, False),
        (pylon.NoLocalBackend("none"), dspy_errors.LMNotConfiguredError, False),
        (pylon.EmbeddedUnavailable("no model"), dspy_errors.LMNotConfiguredError, False),
        (pylon.UnsupportedRequest("tools"), dspy_errors.LMUnsupportedFeatureError, False),
    ],
)
def test_dspy_retries_only_transient_errors(error: Exception, dspy_class: type, retried: bool) -> None:
    wrapped = wrap_error(error, model="pylon:local")
    assert isinstance(wrapped, dspy_class)
    assert dspy_errors.is_retryable_lm_error(wrapped) is retried
    assert str(error) in str(wrapped) or error.args[0] in str(wrapped)


def test_config_errors_are_value_errors() -> None:
    assert issubclass(pylon.ConfigError, ValueError)
    assert issubclass(pylon.InvalidModelString, pylon.ConfigError)


def test_keyword_details_reach_the_dspy_error() -> None:
    error = pylon.BackendServerError("boom", status=503, provider="llamacpp")
    wrapped = wrap_error(error, model="pylon:local")
    assert wrapped.status == 503
    assert "llamacpp" in str(error)
