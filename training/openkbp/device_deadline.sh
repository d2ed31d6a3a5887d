#!/usr/bin/env bash
# One GPU run of at most 10 minutes (issue 14). TASK=deadline (default): the lever benchmark,
# then training that continues the shipped model to a deadline, validation and packing
# (train_deadline.py). TASK=search: searched against plain at an equal budget, both from
# scratch (search_vs_plain.py, part 4; no benchmark unless BENCH=1). TASK=batch: the lever
# benchmark, then the anchor from scratch at batch 32 and 4 for the same patches, Dice on the
# validation crops at 4 checkpoints (batch_per_patch.py, part 1's "same Dice per patch seen").
#
# Prepare here (.devdata/ is git-ignored and goes to the device with the run tool's
# carry=[".devdata"]; it must stay under 64 MiB):
#   python training/openkbp/export_data.py export-training ../shared/data/openkbp/train .devdata/train.npz --overwrite
#   python training/openkbp/export_data.py export-training ../shared/data/openkbp/validation .devdata/validation.npz --overwrite
#   mkdir -p .devdata/wheels && cp PYDICOM_WHEEL .devdata/wheels/   # pydicom-*.whl, used if the device lacks it
#   du -sh .devdata
# The one device command ($OUT is set there):
#   run(command="bash training/openkbp/device_deadline.sh", carry=[".devdata"], timeout_s=600)
# and for part 4, in a later device session (its own 10 minutes):
#   run(command="TASK=search bash training/openkbp/device_deadline.sh", carry=[".devdata"], timeout_s=600)
#   run(command="TASK=batch bash training/openkbp/device_deadline.sh", carry=[".devdata"], timeout_s=600)
# The validation split is the 33 patients of ../shared/data/openkbp/validation, those of the
# README's evaluation (patients.csv); training uses all 169 training patients.
#
# Outputs under $OUT (default ./run_out), each log written line by line as it happens:
# console.txt (everything), phases.txt (wall-clock seconds of each shell phase), gpu.txt,
# throughput.jsonl (one line per lever), train_log.jsonl (phases, losses, Dice, decision),
# candidate_int8.pt, soars_default.pt (only if the mean validation Dice improved), RUNS.md,
# run_record.json (all figures, "phases" among them).
# Time plan (default): benchmark <= BENCH_TIMEOUT=100 s, then train_deadline.py ends by
# DEADLINE_S=420 s from its start (RESERVE_S=100 s of it for packing and the two validation
# passes), killed at DEADLINE_S + 30 s; with start-up the whole call stays under 600 s.
# TASK=search: search_vs_plain.py ends by DEADLINE_S=520 s (RESERVE_S=150 s for packing and
# three validation passes); outputs comparison.json, search_vs_plain.md, candidate_plain_int8.pt,
# candidate_searched_int8.pt, RUNS.md (two rows), soars_default.pt only if the better arm beats
# the shipped model. TASK=batch: benchmark <= 100 s, then batch_per_patch.py ends by
# DEADLINE_S=420 s (RESERVE_S=20 s); outputs batch_per_patch.json and batch_per_patch.md.
#
# CPU smoke test (a few minutes; tiny sizes):
#   OUT=/tmp/smoke DEVICE=cpu BENCH_ARGS="--synthetic 2 --synthetic-shape 20,28,28 --patch 18,24,24
#   --widths 4,8,8,8,8 --steps 1 --warmup 1 --levers baseline,all" TRAIN_ARGS="--max-patients 2
#   --max-val-patients 1 --patch 16 32 32 --batch 2 --max-steps 4 --sync-every 2 --threads 2"
#   DEADLINE_S=600 RESERVE_S=300 bash training/openkbp/device_deadline.sh
set -o pipefail
OUT=${OUT:-run_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/console.txt") 2>&1
T0=$(date +%s%N)
phase() {  # phase NAME: milliseconds since the script started, one line in phases.txt
  echo "phase $1 $(( ($(date +%s%N) - T0) / 1000000 )) ms $(date -u +%FT%TZ)" | tee -a "$OUT/phases.txt"
}
phase start
PY=${PY:-python3}
DATA=${DATA:-.devdata}  # train.npz, validation.npz, wheels/
if ! "$PY" -c "import pydicom" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    "$DATA"/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
ls -la "$DATA"/
phase setup_done
TASK=${TASK:-deadline}
case "$TASK" in
  deadline) SCRIPT=train_deadline.py; DEADLINE_S=${DEADLINE_S:-420}; RESERVE_S=${RESERVE_S:-100}
            BENCH=${BENCH:-1} ;;
  search) SCRIPT=search_vs_plain.py; DEADLINE_S=${DEADLINE_S:-520}; RESERVE_S=${RESERVE_S:-150}
          BENCH=${BENCH:-0} ;;
  batch) SCRIPT=batch_per_patch.py; DEADLINE_S=${DEADLINE_S:-420}; RESERVE_S=${RESERVE_S:-20}
         BENCH=${BENCH:-1} ;;
  *) echo "TASK must be deadline, search or batch, not $TASK"; exit 2 ;;
esac
case "$DEADLINE_S" in
  ''|*[!0-9]*) echo "DEADLINE_S must be whole seconds, not $DEADLINE_S"; exit 2 ;;
esac
if [ "$BENCH" = 1 ]; then
  # shellcheck disable=SC2086
  timeout "${BENCH_TIMEOUT:-100}" "$PY" benchmarks/bench_training_throughput.py \
    --device "$DEVICE" ${BENCH_ARGS:---arrays $DATA/train.npz --patients 16 --steps 15 --warmup 4 --threads 8 --levers baseline,batch16,batch32,batch64,resident,vectorised_augment,channels_last,no_sync,all,compile,all_compile} \
    --json "$OUT/throughput.json" | tee "$OUT/throughput.jsonl"
  phase benchmark_done
fi
# shellcheck disable=SC2086
timeout $(( DEADLINE_S + 30 )) "$PY" "training/openkbp/$SCRIPT" \
  --train "$DATA/train.npz" --val "$DATA/validation.npz" --out "$OUT" --device "$DEVICE" \
  --deadline-s "$DEADLINE_S" --reserve-s "$RESERVE_S" ${TRAIN_ARGS:-}
rc=$?
echo "$SCRIPT exit status $rc"
phase "${TASK}_done"
ls -la "$OUT"
exit "$rc"  # the call's rc is the training script's (124: killed at DEADLINE_S + 30 s)
