#!/usr/bin/env bash
# Install what the sandbox executor runs jobs with: Debian's bubblewrap (namespaces, read-only
# system, seccomp loading) and libseccomp2 (the filter is compiled with it), plus git (a job's
# repo can be a git URL). Idempotent: quick when installed.
set -euo pipefail
if command -v bwrap >/dev/null 2>&1 && command -v git >/dev/null 2>&1 && ldconfig -p | grep -q 'libseccomp\.so\.2'; then
  exit 0
fi
echo "== installing bubblewrap, libseccomp2, git (apt-get)" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq bubblewrap libseccomp2 git >/dev/null
command -v bwrap >/dev/null || { echo "bubblewrap failed to install" >&2; exit 1; }
