#!/usr/bin/env bash
# The GPU check of stage two, fine-tuning and evaluation (benchmarks/gpu_check_stage_two.md): the stage-two
# benchmark, then the GPU profile (`egkd profile gpu`) with plain `dvc repro`, on one CUDA GPU, offline.
#
#   bash benchmarks/gpu_check_stage_two.sh MODEL_DIR OUT_DIR [DATA_DIR]
#
# MODEL_DIR: a local copy of the MiniLM-L6 encoder (config.json, *.safetensors in any dtype, tokenizer files),
# used in place of builtin:minilm-l6; OUT_DIR: where the results go (at most seven files); DATA_DIR: a folder holding
# glue/SST-2/{train,dev}.tsv and text-classification/mpqa (default: ../shared/data), added under data/sets with
# `egkd data add` where the copy lacks them.
# Run it in the repository root of a copy made for the check: it replaces params.yaml and the pipeline's outputs
# (models/, data/cache/, metrics/, reports/, plots/). Where the copy is not a git repository it makes it one (or, with
# no git installed, runs DVC without one).
# Settings, from the environment:
#   DVC_WHEELS=DIR       where `dvc` is missing, install it from the wheels in DIR (benchmarks/dvc-repro-wheels.txt)
#   CHECK_BENCHMARK=0    skip the stage-two benchmark (the profile then has the whole budget)
#   CHECK_PROFILE=NAME   the profile to run (default gpu; a name in profiles/ or a path)
#   CHECK_DEVICE=cpu     run the benchmarks on the CPU (default: cuda where torch sees it)
#   PROFILE_TIMEOUT=S    the profile's limit in seconds (default: what is left of 585 s)
#   CHECK_RESUME=1       keep the outputs of an earlier call on this machine: `dvc repro` runs only what is left
set -euo pipefail
MODEL=$(realpath "$1")
OUT=$(realpath -m "$2")
DATA=$(realpath "${3:-../shared/data}")
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1
PYTHON=$(command -v python || command -v python3)
START=$(date +%s.%N)

stamp() {  # prefix every line with the seconds since the start of this script
  "$PYTHON" -u -c 'import sys, time
start = float(sys.argv[1])
for line in sys.stdin:
    print(f"{time.time() - start:7.1f}s {line}", end="", flush=True)' "$START"
}

test -f "$DATA/glue/SST-2/train.tsv" && test -f "$DATA/glue/SST-2/dev.tsv" && test -d "$DATA/text-classification/mpqa"
# The stages call `egkd` and the check calls `dvc`: where either is missing, this checkout's CLI runs with this
# interpreter, and dvc is installed from wheels.
if ! command -v egkd > /dev/null; then
  mkdir -p /tmp/egkd-bin
  printf '#!/bin/sh\nexec %s -m stages.cli "$@"\n' "$PYTHON" > /tmp/egkd-bin/egkd
  chmod +x /tmp/egkd-bin/egkd
  export PATH="$PATH:/tmp/egkd-bin"
fi
if ! command -v dvc > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/egkd-dvc "${DVC_WHEELS:?dvc is not installed: set DVC_WHEELS}"/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/egkd-dvc" PATH="$PATH:/tmp/egkd-dvc/bin"
fi
if ! command -v git > /dev/null; then
  dvc config --local core.no_scm true  # DVC without git: the pipeline runs the same
elif ! git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  git init -q && git add -A && git -c user.name=check -c user.email=check@localhost commit -q -m "the checked copy"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1 || true
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' >> "$OUT/gpu.txt"
DEVICE=${CHECK_DEVICE:-$("$PYTHON" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}
# What every computing stage pays before its work (Python, torch and transformers' imports, the device context), as
# four fresh processes: the first on a cold disk, then the fastest of three (a few seconds each).
timeout 90 "$PYTHON" -m benchmarks.fixed_costs --process-only --device "$DEVICE" --repeats 4 >> "$OUT/gpu.txt" 2>&1 || true

# 1. The stage-two benchmark (about a minute): plain, vanilla KD and every objective, cached and online.
if [ "${CHECK_BENCHMARK:-1}" != 0 ]; then
  timeout 120 "$PYTHON" -u -m benchmarks.stage_two --device "$DEVICE" --quick --teacher "$MODEL" \
    --data "$DATA/glue" --out "$OUT" --machine gpu 2>&1 | stamp | tee "$OUT/stage-two.log" || true
fi

# 2. The GPU profile, its teacher the local MiniLM copy, through plain `dvc repro` (one stage at a time). It gets
# what is left of 585 s (one device call may run 600 s); the stamped log keeps each stage's start if it is cut short.
{
  [ -d data/sets/sst2 ] || egkd data add "$DATA/glue" --task sst2 --out data/sets/sst2 --replace
  [ -d data/sets/mpqa ] || egkd data add "$DATA/text-classification/mpqa" --out data/sets/mpqa --replace
  for tracked in data/sets/*.dvc; do  # `dvc repro` verifies every tracked data set: drop those not given
    [ -d "${tracked%.dvc}" ] || { rm "$tracked"; echo "left out $tracked: the check was not given its data"; }
  done
  egkd profile "${CHECK_PROFILE:-gpu}"
} 2>&1 | stamp | tee "$OUT/gpu-profile.log"
sed -i "s|^  model: builtin:minilm-l6\$|  model: $MODEL|" params.yaml
grep -q "^  model: $MODEL\$" params.yaml
[ "${CHECK_RESUME:-0}" = 1 ] || rm -rf models data/cache metrics/eval reports plots metrics/summary.json
set +e
timeout "${PROFILE_TIMEOUT:-$((585 - SECONDS))}" dvc repro 2>&1 | stamp | tee -a "$OUT/gpu-profile.log"
echo "repro exited with ${PIPESTATUS[0]}" | stamp | tee -a "$OUT/gpu-profile.log"
set -e
"$PYTHON" -m benchmarks.stage_times "$OUT/gpu-profile.log" > "$OUT/gpu-profile-timings.json"
# Everything else in one archive: the metrics, the report, its plots, and each model's metrics.json and README.md.
tar czf "$OUT/gpu-profile-results.tar.gz" --ignore-failed-read metrics reports plots dvc.lock params.yaml \
  $(ls models/teacher/metrics.json models/teacher/README.md models/students/*/metrics.json \
    models/students/*/README.md 2> /dev/null) 2> /dev/null || true
echo "done in ${SECONDS} s; results in $OUT"
