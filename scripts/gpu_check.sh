#!/usr/bin/env bash
# The GPU check (issue 13): every CUDA and NVML path and as much of the paper profiles as fits, on one
# CUDA GPU, within 8 minutes all told. Each step runs in its own process under `timeout` with its own
# budget (bpfree gpu-check --list), in an order that keeps a cut-off check useful: the CUDA/NVML
# tests, Table 5 with NVML energy, the Figure 3 slopes from the CUDA allocator, then Table 3's 2x1000
# group and Table 2 seed by seed, then the tables. A step that fails or runs out of time never stops
# the next one.
#
#   scripts/gpu_check.sh                 on the lent GPU machine: its own python3, PYTHONPATH=., no venv
#   scripts/gpu_check.sh --dry-run       the same steps on the CPU at a tiny size (the test suite runs it)
#   scripts/gpu_check.sh --results DIR   results root (default results/; a dry run defaults to a temp folder)
#   PYTHON=.venv/bin/python scripts/gpu_check.sh --dry-run
#
# Data: MNIST and Fashion-MNIST are read from data/ (`make gpu-data` copies them there, about 41 MB,
# for the device tool's `carry`); cifar10-jpeg (63 MB) does not fit beside them, so its cells say
# "dataset unavailable here". Where $OUT is set (the device tool), the log and a tar of the results
# are written there too.
set -u
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
DRY=""
RESULTS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY="--dry-run" ;;
    --results) RESULTS="$2"; shift ;;
    *) echo "usage: $0 [--dry-run] [--results DIR]" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$RESULTS" ]; then
  if [ -n "$DRY" ]; then RESULTS="$(mktemp -d)/results"; else RESULTS="results"; fi
fi
mkdir -p "$RESULTS"
export PYTHONPATH="${PWD}${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 BPFREE_NO_DOWNLOAD=1
[ -n "$DRY" ] && export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
LOG="$RESULTS/gpu_check/gpu_check.log"
mkdir -p "$(dirname "$LOG")"
echo "gpu check $(date -u +%Y-%m-%dT%H:%M:%SZ) ${DRY:-on the GPU}, results in $RESULTS" | tee -a "$LOG"

start=$(date +%s)
failed=0
while read -r step budget; do
  echo "== $step (budget ${budget} s)" | tee -a "$LOG"
  # the hard stop: the step's own budget plus a little for Python's start; the step stops itself before
  timeout --kill-after=5 $((budget + 5)) "$PYTHON" -m bpfree gpu-check "$step" --budget "$budget" \
    --results "$RESULTS" $DRY 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "[step] $step: partial - killed at its budget of ${budget} s (timeout)" | tee -a "$LOG"
  elif [ "$rc" -ne 0 ]; then
    failed=1
    if [ "$step" = preflight ] && [ -z "$DRY" ]; then
      echo "[step] the remaining steps need a CUDA GPU: stopping here" | tee -a "$LOG"
      break
    fi
  fi
done < <("$PYTHON" -m bpfree gpu-check --list)
echo "gpu check done in $(( $(date +%s) - start )) s; steps: $RESULTS/gpu_check/steps.jsonl" | tee -a "$LOG"

if [ -n "${OUT:-}" ] && [ -d "${OUT}" ]; then
  cp "$LOG" "$OUT/gpu_check.log"
  tar czf "$OUT/gpu_check_results.tar.gz" --exclude='*.pickle' -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")/runs" \
    "$(basename "$RESULTS")/gpu_check" 2>/dev/null
fi
exit $failed
