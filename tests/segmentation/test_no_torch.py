"""The dose toolkit and the torch-free parts of segmentation never import torch."""

import subprocess
import sys

CODE = r"""
import importlib, pkgutil, sys
import soars_dose
skip = {"soars_dose.segmentation.nas", "soars_dose.segmentation.modelfile"}
names = [m.name for m in pkgutil.walk_packages(soars_dose.__path__, "soars_dose.")
         if m.name not in skip]
for n in names:
    importlib.import_module(n)
assert "soars_dose.segmentation.export" in names and "soars_dose.segmentation.preprocess" in names
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print(len(names), loaded)
assert not loaded, loaded
"""


def test_no_module_outside_nas_and_modelfile_imports_torch():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
