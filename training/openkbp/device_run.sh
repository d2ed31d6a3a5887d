#!/usr/bin/env bash
# The GPU runs that produced the shipped default model (one NVIDIA H200, 16 cores; see
# training/openkbp/README.md). Inputs: the two training-arrays files in .devdata/
# (python training/openkbp/export_data.py export-training ../shared/data/openkbp/{train,validation} ...),
# for a continued run the models to start from in .devdata/init/ (INIT=.devdata/init), and,
# where pydicom is missing, its wheel in .whl/. Outputs under $OUT (default ./run_out):
# the logs (run_logs.tar.gz), results.json and every model as float16 (<variant>_<branch>.soars.pt).
# Run 1: BUDGET_S=280 WIDTHS="12 24 48 96 128". Run 3 (the shipped model): BUDGET_S=340
# TRAIN_TIMEOUT=540 VARIANTS=plain BATCH=4 THREADS=8 WIDTHS="16 32 64 80 96" SHIFT_HU=300 SHIFT_P=0.2.
set -o pipefail
OUT=${OUT:-run_out}
mkdir -p "$OUT"
if ! python3 -c "import pydicom" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
# batches built on the GPU; should that fail there, build them on the CPU as before
HOST=""
timeout 120 python3 training/openkbp/smoke_device.py --device cuda 2>&1 | tail -20 \
  | tee "$OUT/smoke.txt" | grep ": ok" >/dev/null || HOST=--host-batches
echo "smoke test: ${HOST:-batches on the GPU}" | tee -a "$OUT/smoke.txt"
timeout "${TRAIN_TIMEOUT:-520}" python3 training/openkbp/train_default.py \
  --train .devdata/train.npz --val .devdata/validation.npz --out /tmp/run \
  --device cuda --budget-s "${BUDGET_S:-300}" --widths ${WIDTHS:-16 32 64 80 96} \
  --patch 48 96 96 --batch "${BATCH:-2}" --threads "${THREADS:-5}" \
  --shift-hu "${SHIFT_HU:-0}" --shift-probability "${SHIFT_P:-0}" \
  --variants "${VARIANTS:-searched,plain,one}" ${INIT:+--init $INIT} $HOST \
  2>&1 | grep --line-buffered -v -i "warning" | tee "$OUT/train_log.txt"
python3 - "$OUT" <<'PY'
import sys, glob, os, torch
for f in glob.glob("/tmp/run/*/*/model.soars.pt"):
    if "calibration" in f:
        continue
    d = torch.load(f, map_location="cpu", weights_only=True)
    d["state_dict"] = {k: (v.half() if v.is_floating_point() else v) for k, v in d["state_dict"].items()}
    v, b = f.split("/")[-3:-1]
    torch.save(d, os.path.join(sys.argv[1], f"{v}_{b}.soars.pt"))
PY
tar czf "$OUT/run_logs.tar.gz" --exclude='*.pt' --exclude='*calibration*' -C /tmp run
cp /tmp/run/results.json "$OUT/" 2>/dev/null
ls -la "$OUT"
