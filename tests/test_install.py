"""Packaging and run.sh: the dose toolkit installs without torch; run.sh refuses clearly.

The wheel itself is built and installed into a fresh venv by ``.ci/wheel-check``
(run by ``.ci/run``), too slow for the suite; these tests pin the metadata that
check relies on and run.sh's refusals, which happen before any install.
"""

import re
import subprocess
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(req: str) -> str:
    return re.split(r"[\[<>=!~;\s]", req, maxsplit=1)[0].lower()


def test_the_dose_toolkit_and_the_test_extra_never_ask_for_torch():
    assert "torch" not in {_name(r) for r in PROJECT["dependencies"]}
    assert "torch" not in {_name(r) for r in PROJECT["optional-dependencies"]["test"]}


def test_segmentation_extra_gives_torch_a_lower_bound_only():
    torch = [r for r in PROJECT["optional-dependencies"]["segmentation"] if _name(r) == "torch"]
    assert len(torch) == 1
    spec = torch[0][len("torch"):].replace(" ", "")
    assert spec.startswith(">="), spec
    assert not any(op in spec for op in ("==", "<", "~=")), spec


def test_licence_is_an_spdx_expression_with_its_file():
    assert PROJECT["license"] == "BSD-3-Clause"
    for f in PROJECT["license-files"]:
        assert "BSD 3-Clause" in (ROOT / f).read_text()
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    # the string form of `license` needs setuptools 77 (PEP 639)
    (req,) = [r for r in build["requires"] if _name(r) == "setuptools"]
    assert tuple(int(x) for x in req.split(">=")[1].split(".")) >= (77,)


def _run_sh(*args, cwd=ROOT):
    return subprocess.run(["bash", str(ROOT / "run.sh"), *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


@pytest.mark.parametrize("extra", [[], ["--patients", "2"], ["--seed", "3", "--quiet"]])
@pytest.mark.parametrize("kind", ["folder", "file"])
def test_run_sh_demo_refuses_an_existing_output_and_says_what_to_do(tmp_path, extra, kind):
    out = tmp_path / "demo out"
    if kind == "folder":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    else:
        out.write_text("mine")
    r = _run_sh("demo", str(out), *extra)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "already exists" in r.stderr and "--overwrite" in r.stderr
    assert f"./run.sh demo {out}-2" in r.stderr
    assert "Traceback" not in r.stderr and "setting up" not in r.stderr
    if kind == "folder":
        assert (out / "keep.txt").read_text() == "mine"
    else:
        assert out.read_text() == "mine"


@pytest.mark.parametrize("args", [[], ["dmeo"], ["--help"], ["tests"]])
def test_run_sh_unknown_command_prints_usage(args):
    r = _run_sh(*args)
    assert r.returncode == 2
    assert "usage: ./run.sh demo [OUT_DIR]" in r.stderr and "./run.sh test" in r.stderr
