#!/usr/bin/env bash
# Install nostr-dvm (PyPI, the Python NIP-90 DVM framework), the foreign DVM and client the interop
# tests run against, into its own virtualenv .venv-dvm: it pins nostr-sdk 0.45.1 and pulls in pandas,
# yt-dlp and more (~430 MB) that must not mix with the project's. Idempotent: silent and quick when
# the pinned version is already installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
DVM_VERSION="1.1.8"
VENV=.venv-dvm

dvm_ok() {
  [ -x "$VENV/bin/python" ] \
    && "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('nostr-dvm') != '$DVM_VERSION')" \
      >/dev/null 2>&1 \
    && "$VENV/bin/python" -c "import nostr_dvm.dvm" >/dev/null 2>&1
}

if dvm_ok; then
  exit 0
fi
echo "== installing nostr-dvm $DVM_VERSION into $VENV" >&2
# --clear: start over if a previous install was interrupted or pinned another version.
"${PYTHON:-python3}" -m venv --clear "$VENV"
"$VENV/bin/python" -m pip install --quiet "nostr-dvm==$DVM_VERSION"
dvm_ok || { echo "nostr-dvm failed to install into $VENV" >&2; exit 1; }
