#!/usr/bin/env bash
# Set up soars-dose in ./.venv (first run only) and run the demo or the tests.
#   ./run.sh demo [OUT_DIR]   synthetic head-and-neck cohort, end to end, with the HTML report
#   ./run.sh test             the test suite
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)

if [ ! -f "$STAMP" ]; then
    echo "setting up $VENV (first run)..." >&2
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".[test]"
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi

case "${1:-}" in
    demo)
        out=${2:-demo-out/run-$(date +%Y%m%d-%H%M%S)}
        exec "$VENV/bin/soars-dose" demo --out "$out"
        ;;
    test)
        shift
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: ./run.sh demo [OUT_DIR] | ./run.sh test [pytest args]" >&2
        exit 2
        ;;
esac
