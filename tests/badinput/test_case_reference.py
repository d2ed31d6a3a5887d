"""Issue 11, class 1: a reference set with no ROI, or none matching an OAR, refuses the patient.

Before: ``compare`` wrote a table of ``missing`` rows and exit 0 ("13 of 13 rows computed").
Now: :class:`NoMatchingOARError` naming the reference file, listing some of its names and
what to do (an alias file); exit 2 from the CLI; a failed patient in a cohort.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from soars_dose import audit
from soars_dose.errors import DicomReadError, NoMatchingOARError, StructureError
from soars_dose.structures import Structure

from ..helpers import disc_stack, oars
from .case_helpers import cli, compare_args, load, strip_rois, write_case


def _targets_only():
    c = oars()[1].contours
    return [Structure("PTV70", 1, c, interpreted_type="PTV"),
            Structure("CTV_high", 2, c, interpreted_type="CTV"),
            Structure("Parotid_L_PRV", 3, c),
            Structure("z_ring", 4, c),
            Structure("BODY", 5, disc_stack(0, 0, 30, -20, 20), interpreted_type="EXTERNAL")]


def _unknown_names():
    c = oars()
    return [Structure("Organ A", 1, c[0].contours), Structure("Mystery", 2, c[1].contours),
            Structure("xyz", 3, c[1].contours)]


def _empty_oars():
    return [Structure("Parotid_L", 1, []), Structure("SpinalCord", 2, [])]


VARIANTS = {
    "targets_and_derived": (_targets_only, ["PTV70", "BODY"]),
    "unknown_names": (_unknown_names, ["Mystery", "Organ A"]),
    "empty_oars": (_empty_oars, ["Parotid_L", "empty"]),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_compare_refuses_reference_without_usable_oar(tmp_path, variant):
    build, shown = VARIANTS[variant]
    paths = write_case(tmp_path, {"reference": build(), "auto": oars()})
    case = load(paths)
    with pytest.raises(NoMatchingOARError) as exc:
        audit.compare(case)
    msg = str(exc.value)
    assert str(paths["reference"]) in msg
    for name in shown:
        assert name in msg
    assert isinstance(exc.value, StructureError)


def test_compare_refuses_reference_with_zero_rois(tmp_path):
    paths = write_case(tmp_path, {"reference": oars(), "auto": oars()})
    # the file itself is refused by the RTSTRUCT reader (PS3.3: one ROI or more) ...
    strip_rois(paths["reference"])
    with pytest.raises(DicomReadError, match="no ROI") as exc:
        load(paths)
    assert str(paths["reference"]) in str(exc.value)
    # ... and a reference set with no ROI that reaches compare another way is refused there
    paths = write_case(tmp_path / "again", {"reference": oars(), "auto": oars()})
    case = load(paths)
    case.sets["reference"] = dataclasses.replace(case.sets["reference"], structures=[])
    with pytest.raises(NoMatchingOARError, match="no ROI at all") as exc:
        audit.compare(case)
    assert str(paths["reference"]) in str(exc.value)


def test_unknown_names_message_points_to_alias_file(tmp_path):
    paths = write_case(tmp_path, {"reference": _unknown_names(), "auto": oars()})
    with pytest.raises(NoMatchingOARError, match=r"--names aliases\.yaml"):
        audit.compare(load(paths))


def test_many_names_are_listed_a_few_at_a_time(tmp_path):
    c = oars()[1].contours
    many = [Structure(f"thing{k:02d}", k + 1, c) for k in range(20)]
    paths = write_case(tmp_path, {"reference": many, "auto": oars()})
    with pytest.raises(NoMatchingOARError) as exc:
        audit.compare(load(paths))
    msg = str(exc.value)
    assert "20 ROIs" in msg and "'thing00'" in msg and "14 more" in msg
    assert "'thing19'" not in msg


@pytest.mark.parametrize("variant", sorted(VARIANTS) + ["zero_rois"])
def test_cli_compare_exit_2_names_reference(tmp_path, capsys, variant):
    ref = oars() if variant == "zero_rois" else VARIANTS[variant][0]()
    paths = write_case(tmp_path / "in", {"reference": ref, "auto": oars()})
    if variant == "zero_rois":
        strip_rois(paths["reference"])
    out = tmp_path / "out"
    rc, err = cli(compare_args(paths, out), capsys)
    assert rc == 2
    assert str(paths["reference"]) in err
    assert "rows computed" not in err
    assert not out.exists()


def test_alias_file_makes_the_reference_usable_and_numbers_right(tmp_path, capsys):
    """The suggested fix works: mapped names give the closed-form mean 30 + 0.5 x Gy."""
    paths = write_case(tmp_path / "in", {"reference": _unknown_names(), "auto": oars()})
    aliases = tmp_path / "aliases.yaml"
    aliases.write_text("exact:\n  Organ A: Parotid_L\n  Mystery: SpinalCord\n")
    out = tmp_path / "out"
    rc, err = cli(compare_args(paths, out, "--names", str(aliases)), capsys)
    assert rc == 0, err
    st = pd.read_parquet(out / "stats.parquet").set_index(["set", "roi"])
    assert st.loc[("reference", "Parotid_L"), "mean_gy"] == pytest.approx(30 - 5.0, abs=1e-3)
    assert st.loc[("reference", "SpinalCord"), "mean_gy"] == pytest.approx(30 + 6.0, abs=1e-3)
    assert st.loc[("auto", "SpinalCord"), "diff_mean_gy"] == pytest.approx(0.0, abs=1e-9)


def test_one_usable_oar_is_enough(tmp_path):
    """A reference with a single usable OAR among targets is compared, not refused."""
    ref = _targets_only() + [Structure("SpinalCord", 9, oars()[1].contours)]
    paths = write_case(tmp_path, {"reference": ref, "auto": oars()})
    res = audit.compare(load(paths))
    st = res.stats.set_index(["set", "roi"])
    assert st.loc[("reference", "SpinalCord"), "status"] == "ok"
    assert st.loc[("reference", "SpinalCord"), "mean_gy"] == pytest.approx(36.0, abs=1e-3)


def test_cohort_records_the_patient_as_failed(tmp_path):
    from soars_dose.cohort import run_cohort

    good = write_case(tmp_path / "p1", {"reference": oars(), "auto": oars(1.0)})
    bad = write_case(tmp_path / "p2", {"reference": _unknown_names(), "auto": oars()})
    manifest = tmp_path / "m.csv"
    manifest.write_text("patient,rtdose,reference,set:auto\n"
                        f"p1,{good['rtdose']},{good['reference']},{good['auto']}\n"
                        f"p2,{bad['rtdose']},{bad['reference']},{bad['auto']}\n")
    res = run_cohort(manifest, tmp_path / "out", jobs=1, progress=False)
    assert res.n_ok == 1 and res.n_failed == 1
    f = res.failures.set_index("patient").loc["p2"]
    assert f["error"] == "NoMatchingOARError"
    assert str(bad["reference"]) in f["message"]
    ok = res.stats[(res.stats["patient"] == "p1") & (res.stats["set"] == "auto")].set_index("roi")
    assert ok.loc["SpinalCord", "diff_mean_gy"] == pytest.approx(0.5, abs=1e-3)
