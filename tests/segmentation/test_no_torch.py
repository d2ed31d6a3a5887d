"""The dose toolkit and the torch-free parts of segmentation never import torch."""

import subprocess
import sys

CODE = r"""
import importlib, os, pkgutil, sys
import soars_dose
skip = {"soars_dose.segmentation." + m
        for m in ("nas", "modelfile", "branches", "bundle", "training", "inference", "device",
                  "sliding_window")}


def walk(path, prefix):
    # pkgutil.walk_packages imports every package to descend into it; a skipped
    # package (training/) is not entered at all
    for m in pkgutil.iter_modules(path, prefix):
        if m.name in skip:
            continue
        yield m.name
        if m.ispkg:
            yield from walk([os.path.join(path[0], m.name.rsplit(".", 1)[1])], m.name + ".")


names = list(walk(soars_dose.__path__, "soars_dose."))
for n in names:
    importlib.import_module(n)
assert "soars_dose.segmentation.export" in names and "soars_dose.segmentation.preprocess" in names
assert "soars_dose.synthetic.oars42" in names and "soars_dose.cli.main" in names
assert "soars_dose.segmentation.dataset" in names
assert "soars_dose.datasets.openkbp.training_arrays" in names
from soars_dose.cli.main import build_parser
build_parser().parse_args(["segment", "CT", "--out", "rs.dcm"])
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print(len(names), loaded)
assert not loaded, loaded
"""


def test_no_module_outside_the_torch_modules_imports_torch():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
