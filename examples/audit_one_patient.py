"""Audit one synthetic patient from Python: load, compare, inspect, write.

    .venv/bin/python examples/audit_one_patient.py [OUT_DIR]

Writes a phantom patient as DICOM-RT, compares its three substitute contour
sets with the reference on the fixed dose, prints the eq 6/7 differences per
OAR and one DVH query, and writes the tables.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from soars_dose import audit
from soars_dose.synthetic.cohort import make_patient


def main(out: Path) -> None:
    pc = make_patient(out / "data", "EXAMPLE_01", seed=7)
    case = audit.load_case(pc.rtdose, {"reference": pc.reference, **pc.sets}, ct=pc.ct_dir)
    result = audit.compare(case)

    table = result.stats.pivot_table(index="roi", columns="set", values="diff_mean_pct")
    print("Diff_mean (%) per OAR and set (eq 6):")
    print(table.round(2).to_string())

    dvh = result.dvhs[("reference", "Parotid_L")]
    print(f"\nParotid_L (reference): mean {dvh.mean_gy:.2f} Gy, D50% "
          f"{dvh.dose_at_volume_pct(50):.2f} Gy, V26Gy {dvh.volume_at_dose_pct(26):.1f} %")
    folder = audit.write_result(result, case, out / "results")
    print(f"tables in {folder}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="soars-")))
