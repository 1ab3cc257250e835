#!/usr/bin/env bash
# Install Arize Phoenix (PyPI arize-phoenix), the real trace viewer the OpenTelemetry tests export
# to, into its own virtualenv .venv-phoenix: it is ~850 MB of dependencies (a web app, SQLAlchemy,
# pandas, grpc, ...) that must not mix with the project's. Idempotent: silent and quick when the
# pinned version is already installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_tool_venv.sh
PHOENIX_VERSION="20.26.1"
install_tool_venv .venv-phoenix arize-phoenix "$PHOENIX_VERSION" '"$VENV/bin/phoenix" --help' \
  "arize-phoenix==$PHOENIX_VERSION"
