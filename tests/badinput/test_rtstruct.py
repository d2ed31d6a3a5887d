"""RTSTRUCT reader on hostile files: what is kept, skipped or warned about, and the values."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from soars_dose.dicom.rtstruct import ABSURD_COORDINATE_MM, read_rtstruct
from soars_dose.errors import SoarsDoseWarning

from . import builders as b
from .corpus import good_rois


def _read(path):
    """Read, returning the structure set and our warnings' texts."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ss = read_rtstruct(path)
    return ss, [str(w.message) for w in caught if issubclass(w.category, SoarsDoseWarning)]


def _assert_contours(ss, rois):
    """The structures hold exactly the given contours (mm), in order."""
    for number, name, contours in rois:
        s = ss[name]
        assert s.number == number
        assert len(s.contours) == len(contours)
        for got, want in zip(s.contours, contours):
            np.testing.assert_allclose(got, want, atol=1e-9)


@pytest.mark.parametrize("undefined,implicit", [(False, False), (True, False), (True, True)])
def test_intact_files_read_exactly(tmp_path, undefined, implicit):
    p = b.write(b.rtstruct(good_rois(), undefined_length=undefined), tmp_path / "rs.dcm",
                implicit=implicit)
    if undefined:
        assert b"\xfe\xff\xdd\xe0" in p.read_bytes()  # sequence delimiters really written
    ss, warns = _read(p)
    assert warns == []
    _assert_contours(ss, good_rois())


# ------------------------------------------------------------------ duplicates (class 2)

def _with_extra(rois, extra_contours, roi=1):
    out = []
    for number, name, contours in rois:
        out.append((number, name, contours + (extra_contours if number == roi else [])))
    return out


@pytest.mark.parametrize("variant", ["exact", "reversed", "other_start", "within_5_microns",
                                     "closing_point_repeated"])
def test_duplicate_contour_warned_and_kept(tmp_path, variant):
    rois = good_rois()
    original = rois[0][2][2]  # Parotid_L on z = 4 mm, contour 3
    copy = {
        "exact": original.copy(),
        "reversed": original[::-1].copy(),
        "other_start": np.roll(original, 2, axis=0),
        "within_5_microns": original + np.array([0.005, -0.005, 0.0]),
        "closing_point_repeated": np.vstack([original, original[:1]]),
    }[variant]
    rois = _with_extra(rois, [copy])
    p = b.write(b.rtstruct(rois), tmp_path / "rs.dcm")
    ss, warns = _read(p)
    dup = [w for w in warns if "repeats" in w]
    assert len(dup) == 1, warns
    w = dup[0]
    assert "rs.dcm" in w and "'Parotid_L'" in w and "z = 4 mm" in w
    assert "contour 6" in w and "repeats contour 3" in w
    assert len(ss["Parotid_L"].contours) == 6  # kept: the kernel decides


def test_three_copies_give_two_warnings(tmp_path):
    rois = good_rois()
    c = rois[1][2][0]
    p = b.write(b.rtstruct(_with_extra(rois, [c.copy(), c.copy()], roi=2)), tmp_path / "rs.dcm")
    _, warns = _read(p)
    dup = [w for w in warns if "repeats" in w]
    assert len(dup) == 2 and all("'SpinalCord'" in w and "z = 0 mm" in w for w in dup)


@pytest.mark.parametrize("shift", [(0.5, 0, 0), (0, 0.02, 0), (0, 0, 1.0)])
def test_near_copies_are_not_duplicates(tmp_path, shift):
    rois = good_rois()
    near = rois[0][2][2] + np.array(shift)
    p = b.write(b.rtstruct(_with_extra(rois, [near])), tmp_path / "rs.dcm")
    _, warns = _read(p)
    assert not [w for w in warns if "repeats" in w]


# ------------------------------------------------------------------ self-intersection (class 2)

def _bowtie(z):
    return np.array([[0, 0, z], [10, 10, z], [10, 0, z], [0, 10, z]], float)


def _figure_eight(z, n=200):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.c_[10 * np.sin(t), 5 * np.sin(2 * t), np.full(n, z)]


def _pentagram(z):
    t = np.arange(5) * 4 * np.pi / 5
    return np.c_[8 * np.cos(t), 8 * np.sin(t), np.full(5, z)]


def _figure_eight_mid_edge(z):
    return _figure_eight(z, n=201)  # odd: the crossing falls between vertices


@pytest.mark.parametrize("shape", [_bowtie, _figure_eight, _figure_eight_mid_edge, _pentagram])
def test_self_intersecting_contour_warned_and_kept(tmp_path, shape):
    rois = [(7, "Larynx", [b.square(0, 0, 0), shape(2.0), b.square(0, 0, 4)])]
    p = b.write(b.rtstruct(rois), tmp_path / "rs.dcm")
    ss, warns = _read(p)
    cross = [w for w in warns if "crosses itself" in w]
    assert len(cross) == 1, warns
    assert "rs.dcm" in cross[0] and "'Larynx'" in cross[0] and "contour 2" in cross[0]
    assert "z = 2 mm" in cross[0]
    assert len(ss["Larynx"].contours) == 3


def _l_shape(z):
    return np.array([[0, 0, z], [10, 0, z], [10, 3, z], [3, 3, z], [3, 10, z], [0, 10, z]], float)


def _star(z, n=10):
    t = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False)
    r = np.where(np.arange(2 * n) % 2, 3.0, 9.0)
    return np.c_[r * np.cos(t), r * np.sin(t), np.full(2 * n, z)]


def _circle(z, n=400):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.c_[20 * np.cos(t), 20 * np.sin(t), np.full(n, z)]


@pytest.mark.parametrize("shape", [_l_shape, _star, _circle])
def test_simple_concave_contours_not_flagged(tmp_path, shape):
    p = b.write(b.rtstruct([(1, "Mandible", [shape(0.0), shape(2.0)])]), tmp_path / "rs.dcm")
    _, warns = _read(p)
    assert warns == []


# ------------------------------------------------------------------ non-numeric values (class 8)

@pytest.mark.parametrize("bad", ["abc", "1.5", "", "2x"])
def test_non_numeric_roi_number_skips_that_roi(tmp_path, bad):
    ds = b.rtstruct(good_rois())
    for seq, key in ((ds.StructureSetROISequence, "ROINumber"),
                     (ds.ROIContourSequence, "ReferencedROINumber")):
        b.set_raw(seq[1], key, bad)
    p = b.write(ds, tmp_path / "rs.dcm")
    if bad == "":
        from soars_dose.errors import DicomReadError
        with pytest.raises(DicomReadError, match="rs.dcm.*item 2 has no ROINumber"):
            _read(p)
        return
    ss, warns = _read(p)
    assert [s.name for s in ss.structures] == ["Parotid_L", "Brainstem"]
    _assert_contours(ss, [good_rois()[0], good_rois()[2]])
    skip = [w for w in warns if "ROINumber" in w]
    assert len(skip) == 1 and "'SpinalCord'" in skip[0] and repr(bad) in skip[0]
    assert "rs.dcm" in skip[0]


@pytest.mark.parametrize("value", ["12.5mm\\0\\0\\5\\0\\0\\5\\5\\0", "1,5\\2\\0\\5\\0\\0\\5\\5\\0",
                                   "a\\b\\c\\d\\e\\f\\g\\h\\i"])
def test_non_numeric_contour_data_skips_that_contour(tmp_path, value):
    ds = b.rtstruct(good_rois())
    item = ds.ROIContourSequence[2].ContourSequence[1]
    b.set_raw(item, "ContourData", value)
    item.NumberOfContourPoints = 3
    p = b.write(ds, tmp_path / "rs.dcm")
    ss, warns = _read(p)
    rois = good_rois()
    rois[2][2].pop(1)
    _assert_contours(ss, rois)
    w = [w for w in warns if "non-numeric" in w]
    assert len(w) == 1 and "'Brainstem' contour 2" in w[0] and "rs.dcm" in w[0]
    assert value.split("\\")[0] in w[0] or "'" in w[0]


def test_unknown_referenced_roi_number_warned(tmp_path):
    ds = b.rtstruct(good_rois())
    b.set_raw(ds.ROIContourSequence[0], "ReferencedROINumber", "x1")
    ss, warns = _read(b.write(ds, tmp_path / "rs.dcm"))
    assert ss["Parotid_L"].is_empty
    assert any("unknown ROI number x1" in w for w in warns)


def test_contour_point_count_disagreeing_is_skipped(tmp_path):
    ds = b.rtstruct(good_rois())
    ds.ROIContourSequence[1].ContourSequence[0].NumberOfContourPoints = 5
    ss, warns = _read(b.write(ds, tmp_path / "rs.dcm"))
    assert len(ss["SpinalCord"].contours) == 4
    assert any("'SpinalCord' contour 1" in w and "NumberOfContourPoints is 5" in w for w in warns)


# ------------------------------------------------------------------ multi-valued strings (class 10)

@pytest.mark.parametrize("name", ["Parotid/L\\R", "A\\B\\C", "Cord\\"])
def test_multi_valued_strings_kept_as_text(tmp_path, name):
    ds = b.rtstruct(good_rois())
    b.set_raw(ds.StructureSetROISequence[0], "ROIName", name)
    b.set_raw(ds.StructureSetROISequence[0], "ROIGenerationAlgorithm", "MANUAL\\AUTOMATIC")
    b.set_raw(ds.RTROIObservationsSequence[0], "RTROIInterpretedType", "ORGAN\\AVOIDANCE")
    b.set_raw(ds, "StructureSetLabel", "Clinical\\v2")
    ss, _ = _read(b.write(ds, tmp_path / "rs.dcm"))
    s = ss.structures[0]
    want = name.rstrip("\\") if name.endswith("\\") else name
    assert s.name in (name, want) and "[" not in s.name and "'" not in s.name
    assert s.generation_algorithm == "MANUAL\\AUTOMATIC"
    assert s.interpreted_type == "ORGAN\\AVOIDANCE"
    assert ss.label == "Clinical\\v2"
    assert len(s.contours) == 5


# ------------------------------------------------------------------ absurd coordinates (class 11)

@pytest.mark.parametrize("value,shown", [(1e9, "1e+09"), (-2e4, "2e+04"), (np.nan, "non-finite"),
                                         (np.inf, "non-finite"), (-np.inf, "non-finite")])
def test_absurd_coordinates_skip_that_contour(tmp_path, value, shown):
    rois = good_rois()
    bad = b.square(0, 10, 4, 3)
    bad[1, 0] = value
    rois[1][2][2] = bad
    ss, warns = _read(b.write(b.rtstruct(rois), tmp_path / "rs.dcm"))
    assert len(ss["SpinalCord"].contours) == 4
    lo, hi = ss["SpinalCord"].bounds()
    assert np.all(np.abs(lo) < 100) and np.all(np.abs(hi) < 100)
    w = [w for w in warns if "'SpinalCord' contour 3" in w]
    assert len(w) == 1 and shown in w[0] and "rs.dcm" in w[0]


def test_coordinates_just_inside_the_limit_are_kept(tmp_path):
    """A contour 9 m from the origin is odd but not refused: the limit is 10 m."""
    far = b.square(ABSURD_COORDINATE_MM - 1000.0, 0, 0.0)
    ss, warns = _read(b.write(b.rtstruct([(1, "Far", [far])]), tmp_path / "rs.dcm"))
    np.testing.assert_allclose(ss["Far"].contours[0], far)
    assert warns == []


# ------------------------------------------------------------------ cut at an element boundary

def test_cut_before_observations_is_warned(tmp_path):
    """A cut exactly between two top-level elements leaves every contour whole: warned."""
    p = b.write(b.rtstruct(good_rois()), tmp_path / "whole.dcm")
    cut = b.cut(p, b.element_offset(p, b"\x06\x30\x80\x00"), tmp_path / "rs.dcm")
    ss, warns = _read(cut)
    _assert_contours(ss, good_rois())
    assert any("no RTROIObservationsSequence" in w and "rs.dcm" in w for w in warns)


def test_many_problems_are_summed_up_after_five(tmp_path):
    contours = [_bowtie(float(z)) for z in range(8)] + [b.square(0, 0, 0.0)] * 2
    ss, warns = _read(b.write(b.rtstruct([(4, "Oral_Cavity", contours)]), tmp_path / "rs.dcm"))
    assert len(ss["Oral_Cavity"].contours) == 10
    listed = [w for w in warns if "crosses itself" in w or "repeats" in w]
    assert len(listed) == 5
    assert any("4 more duplicate or self-intersecting" in w for w in warns)
