#!/usr/bin/env bash
# Create the separate virtual environment in which dicompyler-core runs.
#
# dicompyler-core 0.5.6 (the reference DVH implementation the benchmarks
# compare against) does not parse DICOM under pydicom 3, which soars-dose
# needs, so it gets its own venv with pydicom 2.4.x. scikit-image is
# dicompyler-core's optional dependency for its interpolating mode
# (``interpolation_resolution``); shapely is used for structure volumes.
#
# Usage: bash benchmarks/setup_dicompyler_env.sh    (idempotent)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BENCH_VENV:-$ROOT/.bench-venv}"
PYTHON="${PYTHON:-python3}"
PACKAGES=(pydicom==2.4.4 dicompyler-core==0.5.6 numpy matplotlib shapely scikit-image)

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

# Already complete? Then do nothing (no network access needed).
if "$VENV/bin/python" - <<'EOF' 2>/dev/null; then
import importlib.metadata as m
assert m.version("pydicom") == "2.4.4"
assert m.version("dicompyler-core") == "0.5.6"
import numpy, matplotlib, shapely, skimage  # noqa: F401
import dicompylercore.dvhcalc  # noqa: F401
EOF
    echo "$VENV is ready"
    exit 0
fi

"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "${PACKAGES[@]}"
"$VENV/bin/python" -c "import dicompylercore, pydicom; print('dicompyler-core', dicompylercore.__version__, '/ pydicom', pydicom.__version__)"
echo "$VENV is ready"
