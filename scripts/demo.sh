#!/usr/bin/env bash
# Set up (first run) and run `pylon demo` on embedded defaults.
source "$(dirname "$0")/_env.sh"
bash "$(dirname "$0")/install_sandbox.sh"  # bubblewrap and libseccomp: the demo ends with a sandbox job
exec .venv/bin/pylon demo "$@"
