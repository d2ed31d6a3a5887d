#!/usr/bin/env bash
# One GPU run of at most 10 minutes (issue 14): the lever benchmark, then training that
# continues the shipped model to a deadline, validation and packing (train_deadline.py).
# Inputs: .devdata/train.npz and .devdata/validation.npz (export_data.py export-training).
# Outputs under $OUT (default ./run_out), each log written line by line as it happens:
# console.txt, gpu.txt, throughput.jsonl, train_log.jsonl, candidate_int8.pt,
# soars_default.pt (only if the mean validation Dice improved), RUNS.md, run_record.json.
# CPU smoke test: DEVICE=cpu BENCH_ARGS="--synthetic 2 --synthetic-shape 20,28,28 --patch 18,24,24
#   --widths 4,8,8,8,8 --steps 1 --warmup 1" TRAIN_ARGS="--max-patients 3 --patch 24 48 48 --batch 2"
#   DEADLINE_S=120 RESERVE_S=60 bash training/openkbp/device_deadline.sh
set -o pipefail
OUT=${OUT:-run_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/console.txt") 2>&1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
if [ "${BENCH:-1}" = 1 ]; then
  # shellcheck disable=SC2086
  timeout "${BENCH_TIMEOUT:-100}" "$PY" benchmarks/bench_training_throughput.py \
    --device "$DEVICE" ${BENCH_ARGS:---arrays .devdata/train.npz --patients 16 --steps 15 --warmup 4 --threads 8} \
    --json "$OUT/throughput.json" | tee "$OUT/throughput.jsonl"
fi
# shellcheck disable=SC2086
timeout $(( ${DEADLINE_S:-440} + 40 )) "$PY" training/openkbp/train_deadline.py \
  --train .devdata/train.npz --val .devdata/validation.npz --out "$OUT" --device "$DEVICE" \
  --deadline-s "${DEADLINE_S:-440}" --reserve-s "${RESERVE_S:-100}" ${TRAIN_ARGS:-}
echo "exit status $?"
ls -la "$OUT"
