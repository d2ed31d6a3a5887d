"""RTPLAN prescription reader (soars_dose.dicom.rtplan) and its use by load_case."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from soars_dose.dicom.rtplan import choose_prescription, read_rtplan
from soars_dose.errors import DicomReadError, FrameOfReferenceError, SoarsDoseWarning
from soars_dose.load import load_case
from soars_dose.outputs import case_provenance

from ..helpers import oars, write_case, write_ct_folder, write_rtplan


def _read(path):
    """read_rtplan with its SoarsDoseWarnings as a list of strings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = read_rtplan(path)
    return plan, [str(w.message) for w in caught if issubclass(w.category, SoarsDoseWarning)]


def test_one_target_gives_its_dose_and_the_fractions(tmp_path):
    plan, warned = _read(write_rtplan(tmp_path / "rp.dcm", [("TARGET", "66", "PTV66")],
                                      fractions="33"))
    assert plan.prescription_gy == 66.0
    assert plan.fractions_planned == 33
    assert [t.description for t in plan.targets] == ["PTV66"]
    assert plan.frame_of_reference_uid == "1.2.826.0.1.3680043.8.498.77"
    assert warned == []


def test_several_targets_the_highest_is_primary_and_all_are_listed(tmp_path):
    path = write_rtplan(tmp_path / "rp.dcm", [("TARGET", "56", "PTV56"), ("TARGET", "70", "PTV70"),
                                              ("TARGET", "63", "PTV63")])
    plan, warned = _read(path)
    assert plan.prescription_gy == 70.0
    assert [t.dose_gy for t in plan.targets] == [56.0, 70.0, 63.0]
    (msg,) = warned
    assert str(path) in msg and "3 target prescriptions" in msg
    assert all(f"'{d}'" in msg for d in ("PTV56", "PTV70", "PTV63"))
    assert "the highest, 70 Gy" in msg


def test_organ_at_risk_and_dose_less_targets_are_not_the_prescription(tmp_path):
    path = write_rtplan(tmp_path / "rp.dcm", [("ORGAN_AT_RISK", "80", "cord"),
                                              ("TARGET", None, "PTV"), ("TARGET", "50", "PTV50")])
    plan, warned = _read(path)
    assert plan.prescription_gy == 50.0  # not the OAR's 80
    assert warned == []
    assert any("ORGAN_AT_RISK is not TARGET" in n for n in plan.notes)
    assert any("TARGET without TargetPrescriptionDose" in n for n in plan.notes)


@pytest.mark.parametrize("targets", [None, [("ORGAN_AT_RISK", "45", "cord")],
                                     [("TARGET", None, "PTV")]])
def test_no_target_prescription_is_none_with_a_note(tmp_path, targets):
    path = write_rtplan(tmp_path / "rp.dcm", targets, fractions=None)
    plan, warned = _read(path)
    assert plan.prescription_gy is None and plan.targets == []
    assert plan.fractions_planned is None
    (msg,) = warned
    assert str(path) in msg and "gives no prescription" in msg
    assert msg in plan.notes


def test_several_fraction_groups_are_recorded_without_a_single_count(tmp_path):
    import pydicom
    from pydicom.dataset import Dataset

    path = write_rtplan(tmp_path / "rp.dcm", fractions="25")
    ds = pydicom.dcmread(path)
    extra = Dataset()
    extra.FractionGroupNumber, extra.NumberOfFractionsPlanned = 2, 10
    ds.FractionGroupSequence.append(extra)
    ds.save_as(path)
    plan, _ = _read(path)
    assert plan.fraction_groups == [(1, 25), (2, 10)] and plan.fractions_planned is None


def test_wrong_sop_class_is_refused_naming_the_file(tmp_path):
    ion = write_rtplan(tmp_path / "ion.dcm", sop_class="1.2.840.10008.5.1.4.1.1.481.8")
    with pytest.raises(DicomReadError, match="RT Ion Plan, not an RT Plan") as exc:
        read_rtplan(ion)
    assert str(ion) in str(exc.value) and "prescription_gy" in str(exc.value)
    paths = write_case(tmp_path / "case", {"ref": oars()})
    with pytest.raises(DicomReadError, match="is a RTDOSE object, expected RTPLAN") as exc:
        read_rtplan(paths["rtdose"])
    assert str(paths["rtdose"]) in str(exc.value)


def test_truncated_and_garbage_files_are_refused_naming_the_file(tmp_path):
    path = write_rtplan(tmp_path / "rp.dcm", [("TARGET", "70", "PTV70")] * 3)
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 100])  # inside DoseReferenceSequence
    with pytest.raises(DicomReadError, match="truncated") as exc:
        read_rtplan(cut)
    assert str(cut) in str(exc.value)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(DicomReadError) as exc:
        read_rtplan(junk)
    assert str(junk) in str(exc.value)
    with pytest.raises(DicomReadError, match="no such file"):
        read_rtplan(tmp_path / "absent.dcm")


@pytest.mark.parametrize("dose", ["0", "-5", "nan", "inf", "abc"])
def test_bad_prescription_dose_is_refused_naming_the_file(tmp_path, dose):
    path = write_rtplan(tmp_path / "rp.dcm", [("TARGET", "70", "PTV70"), ("TARGET", dose, "bad")])
    with pytest.raises(DicomReadError, match="TargetPrescriptionDose") as exc:
        read_rtplan(path)
    assert str(path) in str(exc.value) and "DoseReferenceNumber 2" in str(exc.value)


def test_given_prescription_wins_and_a_difference_is_warned(tmp_path):
    path = write_rtplan(tmp_path / "rp.dcm", [("TARGET", "70", "PTV70")])
    plan, _ = _read(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        close = choose_prescription(70.2, plan, given_as="--prescription-gy")  # 0.29 %
    assert not [w for w in caught if issubclass(w.category, SoarsDoseWarning)]
    assert (close.gy, close.source, close.rtplan_gy) == (70.2, "given", 70.0)
    with pytest.warns(SoarsDoseWarning) as rec:
        far = choose_prescription(66.0, plan, given_as="--prescription-gy")
    msg = str(rec[0].message)
    assert "70 Gy" in msg and "66 Gy" in msg and str(path) in msg and "--prescription-gy" in msg
    assert (far.gy, far.source) == (66.0, "given")
    assert choose_prescription(None, plan).as_dict() == {
        "gy": 70.0, "source": "rtplan", "given_as": None, "rtplan": str(path), "rtplan_gy": 70.0}
    assert choose_prescription(None, None).gy is None


def test_load_case_takes_the_plans_prescription_and_records_it(tmp_path):
    paths = write_case(tmp_path / "case", {"ref": oars()})
    plan = write_rtplan(tmp_path / "rp.dcm", [("TARGET", "60", "PTV60")], fractions="30")
    case = load_case(paths["rtdose"], {"reference": paths["ref"]}, rtplan=plan)
    assert case.prescription_gy == 60.0 and case.prescription.source == "rtplan"
    record = case_provenance(case, {}, [])
    assert record["prescription"]["gy"] == 60.0 and record["prescription"]["source"] == "rtplan"
    assert record["rtplan"]["fractions_planned"] == 30
    assert [i["role"] for i in record["inputs"]][-1] == "rtplan"
    given = load_case(paths["rtdose"], {"reference": paths["ref"]}, rtplan=plan,
                      prescription_gy=60.0)
    assert given.prescription.source == "given" and given.prescription.rtplan_gy == 60.0
    none = load_case(paths["rtdose"], {"reference": paths["ref"]})
    assert none.prescription_gy is None and case_provenance(none, {}, [])["rtplan"] is None


def test_frame_mismatch_with_the_dose_is_refused_unless_allowed(tmp_path):
    paths = write_case(tmp_path / "case", {"ref": oars()})
    plan = write_rtplan(tmp_path / "rp.dcm", frame="1.2.3.4")
    with pytest.raises(FrameOfReferenceError) as exc:
        load_case(paths["rtdose"], {"reference": paths["ref"]}, rtplan=plan)
    msg = str(exc.value)
    assert str(plan) in msg and str(paths["rtdose"]) in msg and "allow_frame_mismatch" in msg
    case = load_case(paths["rtdose"], {"reference": paths["ref"]}, rtplan=plan,
                     allow_frame_mismatch=True)
    assert case.prescription_gy == 70.0
    assert any(n.startswith("ignored on request: RT plan") for n in case.notes)


def test_frame_checked_against_the_ct_when_the_dose_has_none(tmp_path):
    paths = write_case(tmp_path / "case", {"ref": oars()}, frame=None)
    write_ct_folder(tmp_path / "ct", [{"description": "CT"}])
    plan = write_rtplan(tmp_path / "rp.dcm", frame="1.2.3.4")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SoarsDoseWarning)
        with pytest.raises(FrameOfReferenceError, match="CT series") as exc:
            load_case(paths["rtdose"], {"reference": paths["ref"]}, ct=tmp_path / "ct" / "s1",
                      rtplan=plan)
    assert str(plan) in str(exc.value)
    unchecked = write_rtplan(tmp_path / "rp2.dcm", frame=None)
    case = load_case(paths["rtdose"], {"reference": paths["ref"]}, rtplan=unchecked)
    assert any("RT plan" in n and "could not be checked" in n for n in case.notes)
