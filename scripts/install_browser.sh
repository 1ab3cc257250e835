#!/usr/bin/env bash
# Install Debian's chromium, the real browser the HUD's test drives through playwright (PyPI
# playwright's own browser download does not work offline). Idempotent: quick when installed.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
echo "== installing chromium (apt-get)" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null || { echo "chromium failed to install" >&2; exit 1; }
