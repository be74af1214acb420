#!/usr/bin/env bash
# The GPU check of stage two, fine-tuning and evaluation (benchmarks/gpu_check_stage_two.md): the stage-two
# benchmark, then the GPU profile (`egkd profile gpu`) with plain `dvc repro`, on one CUDA GPU, offline.
#
#   bash benchmarks/gpu_check_stage_two.sh MODEL_DIR OUT_DIR [GLUE_DIR]
#
# MODEL_DIR: a local copy of the MiniLM-L6 encoder (config.json, *.safetensors in any dtype, tokenizer files),
# used in place of builtin:minilm-l6; OUT_DIR: where the results go; GLUE_DIR: the GLUE TSV folder (default:
# ../shared/data/glue; added as data/sets/sst2 with `egkd data add` where the copy lacks it).
# Run it in the repository root of a copy made for the check, with dvc installed: it replaces params.yaml and the
# pipeline's outputs (models/, data/cache/, metrics/, reports/, plots/).
# To try the plumbing on a CPU: CHECK_DEVICE=cpu CHECK_PROFILE=<a small profile> (default: cuda, gpu).
set -euo pipefail
MODEL=$(realpath "$1")
OUT=$(realpath -m "$2")
GLUE=$(realpath "${3:-../shared/data/glue}")
mkdir -p "$OUT"
export PYTHONPATH=$PWD
PYTHON=$(command -v python)
START=$(date +%s.%N)

stamp() {  # prefix every line with the seconds since the start of this script
  "$PYTHON" -u -c 'import sys, time
start = float(sys.argv[1])
for line in sys.stdin:
    print(f"{time.time() - start:7.1f}s {line}", end="", flush=True)' "$START"
}

test -f "$GLUE/SST-2/train.tsv" && test -f "$GLUE/SST-2/dev.tsv"
# The stages call `egkd`: where it is not installed, a shim runs this checkout's CLI with this interpreter.
if ! command -v egkd > /dev/null; then
  mkdir -p /tmp/egkd-bin
  printf '#!/bin/sh\nexec %s -m stages.cli "$@"\n' "$PYTHON" > /tmp/egkd-bin/egkd
  chmod +x /tmp/egkd-bin/egkd
  export PATH="$PATH:/tmp/egkd-bin"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt" || true

# 1. The stage-two benchmark (about a minute): plain, vanilla KD and every objective, cached and online.
timeout 120 "$PYTHON" -u -m benchmarks.stage_two --device "${CHECK_DEVICE:-cuda}" --quick --teacher "$MODEL" \
  --data "$GLUE" --out "$OUT" --machine gpu 2>&1 | stamp | tee "$OUT/stage-two.log" || true

# 2. The GPU profile, its teacher the local MiniLM copy, through plain `dvc repro` (one stage at a time). It gets
# what is left of 585 s (one device call may run 600 s); the stamped log keeps each stage's start if it is cut short.
[ -d data/sets/sst2 ] || egkd data add "$GLUE" --task sst2 --out data/sets/sst2 --replace
[ -d data/sets/mpqa ] || egkd data add "$(dirname "$GLUE")/text-classification/mpqa" --out data/sets/mpqa --replace
egkd profile "${CHECK_PROFILE:-gpu}"
sed -i "s|^  model: builtin:minilm-l6\$|  model: $MODEL|" params.yaml
grep -q "^  model: $MODEL\$" params.yaml
rm -rf models data/cache metrics/eval reports plots metrics/summary.json
timeout "${PROFILE_TIMEOUT:-$((585 - SECONDS))}" dvc repro 2>&1 | stamp | tee "$OUT/gpu-profile.log" || true
cp -r metrics reports plots "$OUT/" 2> /dev/null || true
for model in models/teacher models/students/*; do
  if [ -f "$model/metrics.json" ]; then
    mkdir -p "$OUT/$model" && cp "$model/metrics.json" "$OUT/$model/"
    if [ -f "$model/README.md" ]; then cp "$model/README.md" "$OUT/$model/"; fi
  fi
done
echo "done in ${SECONDS} s; results in $OUT"
