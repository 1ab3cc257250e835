#!/usr/bin/env bash
# Install the production-like Nostr relay used by the integration tests (PyPI nostr-relay, served
# with uvicorn) into its own virtualenv .venv-relay: its dependencies are heavy and must not mix
# with the project's. Idempotent: silent and quick when the pinned version is already installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_tool_venv.sh
RELAY_VERSION="1.14"
# nostr-relay depends on uvicorn[standard] (uvloop, httptools, websockets) for serve --use-uvicorn.
install_tool_venv .venv-relay nostr-relay "$RELAY_VERSION" '"$VENV/bin/nostr-relay" --help' \
  "nostr-relay==$RELAY_VERSION" "uvicorn[standard]"
