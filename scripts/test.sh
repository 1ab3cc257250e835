#!/usr/bin/env bash
# Set up (first run) and run the whole test suite: lint, format check, types, tests.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/local -k ollama).
export PYLON_EXTRAS="dev,embedded"
source "$(dirname "$0")/_env.sh"
bash scripts/install_relay.sh
bash scripts/install_dvm.sh
bash scripts/install_phoenix.sh
bash scripts/install_browser.sh
bash scripts/install_sandbox.sh
echo "== ruff check"; .venv/bin/ruff check .
echo "== ruff format --check"; .venv/bin/ruff format --check .
echo "== mypy src"; .venv/bin/mypy src
echo "== pytest"; exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
