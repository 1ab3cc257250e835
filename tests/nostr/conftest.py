"""Keys for the codec tests: a customer, a provider and a stranger (real nostr-sdk keys)."""

from __future__ import annotations

from typing import Any

import nostr_sdk
import pytest


@pytest.fixture(scope="module")
def customer() -> Any:
    return nostr_sdk.Keys.generate()


@pytest.fixture(scope="module")
def provider() -> Any:
    return nostr_sdk.Keys.generate()


@pytest.fixture(scope="module")
def stranger() -> Any:
    return nostr_sdk.Keys.generate()
