"""Without torch, the segmentation commands say how to install it, both ways, exit 2."""

import subprocess
import sys

import pytest

# Hide torch even where it is installed: a finder that refuses it, then the CLI.
CODE = r"""
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
sys.meta_path.insert(0, NoTorch())
from soars_dose.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("argv", [
    ["segment", "CT_DIR", "--out", "rs.dcm"],
    ["segment", "CT_DIR", "--out", "rs.dcm", "--tta", "--device", "cpu"],
    ["train", "DATASET", "--branch", "anchor", "--out", "run"],
])
def test_missing_torch_names_wheel_and_checkout_installs(tmp_path, argv):
    r = subprocess.run([sys.executable, "-c", CODE, *argv], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr
    assert "Traceback" not in err
    assert f"soars-dose {argv[0]} needs PyTorch" in err
    assert 'pip install "soars-dose[segmentation]"' in err
    assert 'pip install -e ".[segmentation]"' in err
    assert "--index-url https://download.pytorch.org/whl/cpu" in err
    assert "`" not in err
