#!/usr/bin/env bash
# Install nostr-dvm (PyPI, the Python NIP-90 DVM framework), the foreign DVM and client the interop
# tests run against, into its own virtualenv .venv-dvm: it pins nostr-sdk 0.45.1 and pulls in pandas,
# yt-dlp and more (~430 MB) that must not mix with the project's. Idempotent: silent and quick when
# the pinned version is already installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_tool_venv.sh
DVM_VERSION="1.1.8"
install_tool_venv .venv-dvm nostr-dvm "$DVM_VERSION" '"$VENV/bin/python" -c "import nostr_dvm.dvm"' \
  "nostr-dvm==$DVM_VERSION"
