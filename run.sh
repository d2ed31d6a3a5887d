#!/usr/bin/env bash
# Set up soars-dose in ./.venv and run the demo or the tests.
#   ./run.sh demo [OUT_DIR] [demo options]   synthetic head-and-neck cohort, end to end, with the HTML report
#   ./run.sh test [pytest args]              the test suite
#   ./run.sh lint                            ruff (whole tree) and mypy (the core), as CI runs them
# `demo` installs the dose toolkit only (pip install -e .), never torch.
# `test` adds the test extra (pip install -e ".[test]"); torch is not part of
# it: the segmentation tests skip unless torch is in .venv. To have them run,
# set SOARS_TORCH to the pip arguments that install the torch you want, e.g.
#   SOARS_TORCH="torch --index-url https://download.pytorch.org/whl/cpu" ./run.sh test
# (.ci/run sets it to torch==2.13.0).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=.venv
mode=${1:-}
case "$mode" in
    demo | test | lint) ;;
    *)
        echo "usage: ./run.sh demo [OUT_DIR] [demo options] | ./run.sh test [pytest args] | ./run.sh lint" >&2
        exit 2
        ;;
esac

# One stamp per (pyproject.toml, torch request, mode): a change of any of them,
# or a first `test` after `demo`, installs again. A `test` install holds all a
# demo needs, so it satisfies `demo` too.
key=$( (cat pyproject.toml; echo "torch=${SOARS_TORCH:-}") | sha256sum | cut -c1-16)
STAMP_DEMO=$VENV/.installed-$key-demo
STAMP_TEST=$VENV/.installed-$key-test

setup() {
    local what=$1
    echo "setting up $VENV for '$what' (once per change of pyproject.toml or SOARS_TORCH)..." >&2
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    if [ "$what" = test ]; then
        if [ -n "${SOARS_TORCH:-}" ]; then
            # word splitting is wanted: SOARS_TORCH holds pip arguments
            # shellcheck disable=SC2086
            "$VENV/bin/python" -m pip install --quiet $SOARS_TORCH
        fi
        "$VENV/bin/python" -m pip install --quiet -e ".[test]"
    else
        "$VENV/bin/python" -m pip install --quiet -e .
    fi
    rm -f "$VENV"/.installed-*
    touch "$VENV/.installed-$key-$what"
}

if [ "$mode" = demo ]; then
    shift
    out=demo-out/run-$(date +%Y%m%d-%H%M%S)
    if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
        out=$1
        shift
    fi
    overwrite=0
    for a in "$@"; do
        if [ "$a" = --overwrite ]; then overwrite=1; fi
    done
    if [ -e "$out" ] && [ "$overwrite" = 0 ]; then
        echo "$out already exists; nothing was changed. Give a new folder," >&2
        echo "  ./run.sh demo ${out%/}-2" >&2
        echo "or replace it: ./run.sh demo $out --overwrite" >&2
        exit 2
    fi
    # the check above comes first so that a refused run never waits for an install
    [ -f "$STAMP_DEMO" ] || [ -f "$STAMP_TEST" ] || setup demo
    exec "$VENV/bin/soars-dose" demo --out "$out" "$@"
fi

[ -f "$STAMP_TEST" ] || setup test
shift
if [ "$mode" = lint ]; then
    # settings in pyproject.toml: ruff's rules and the modules mypy checks
    "$VENV/bin/ruff" check .
    exec "$VENV/bin/mypy"
fi
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    echo "note: torch is not installed in $VENV, so the segmentation tests skip." >&2
    echo "  To run them: SOARS_TORCH=\"torch --index-url https://download.pytorch.org/whl/cpu\" ./run.sh test" >&2
fi
exec "$VENV/bin/python" -m pytest "$@"
