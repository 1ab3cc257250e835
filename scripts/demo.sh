#!/usr/bin/env bash
# Set up (first run) and run `pylon demo` on embedded defaults.
source "$(dirname "$0")/_env.sh"
exec .venv/bin/pylon demo "$@"
