"""The shared reader helpers: byte walk, numbers, text, orientation, pixel lengths."""

from __future__ import annotations

import struct
import warnings

import numpy as np
import pydicom
import pytest

from soars_dose.dicom.common import (
    check_pixel_length,
    file_layout,
    numbers,
    orientation,
    text,
)
from soars_dose.errors import DicomReadError, GeometryError, SoarsDoseWarning

from ..badinput import builders as b


def _un_sequence() -> bytes:
    """A private undefined-length UN element holding an implicit VR item (PS3.5 6.2.2)."""
    inner = struct.pack("<HHL", 0x7FE1, 0x1002, 4) + b"abcd"
    return (struct.pack("<HH", 0x7FE1, 0x1001) + b"UN\0\0" + struct.pack("<L", 0xFFFFFFFF)
            + struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner
            + struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0))


def test_layout_finds_pixel_length_and_syntax(tmp_path):
    p = b.write(b.rtdose(b.dose_truth()), tmp_path / "rd.dcm")
    lay = file_layout(p)
    assert lay.walked and lay.pixel_data_length == 480 and not lay.encapsulated
    assert lay.transfer_syntax == "1.2.840.10008.1.2.1"
    assert lay.pixel_data_length == len(pydicom.dcmread(p).PixelData)


def test_layout_walks_undefined_length_un_as_implicit(tmp_path):
    p = b.write(b.rtdose(b.dose_truth()), tmp_path / "rd.dcm")
    p.write_bytes(p.read_bytes() + _un_sequence())
    assert pydicom.dcmread(p).get((0x7FE1, 0x1001)) is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error", SoarsDoseWarning)
        assert file_layout(p).walked


def test_layout_warns_on_unusual_structure_but_does_not_refuse(tmp_path):
    p = b.write(b.rtdose(b.dose_truth()), tmp_path / "rd.dcm")
    p.write_bytes(p.read_bytes() + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0))  # stray delimiter
    with pytest.warns(SoarsDoseWarning, match="rd.dcm: unusual element structure"):
        file_layout(p)


@pytest.mark.parametrize("at", [10, 131, 140, 300, -1])
def test_layout_refuses_any_cut(tmp_path, at):
    p = b.write(b.rtdose(b.dose_truth()), tmp_path / "rd.dcm")
    data = p.read_bytes()
    cut = tmp_path / "cut.dcm"
    n = at if at >= 0 else len(data) + at
    cut.write_bytes(data[:n])
    if n < 132:  # no room for the DICM magic: not walked (pydicom judges it)
        assert not file_layout(cut).walked
        return
    with pytest.raises(DicomReadError, match="cut.dcm: the file is truncated"):
        file_layout(cut)


def test_text_joins_multi_values():
    assert text(pydicom.multival.MultiValue(str, ["Parotid/L", "R"])) == "Parotid/L\\R"
    assert text("Brainstem") == "Brainstem" and text(None) == ""


def _ds(**kw):
    ds = pydicom.Dataset()
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def test_numbers_checks_count_finiteness_and_sign(tmp_path):
    ds = _ds(PixelSpacing=[0.5, 0.75])
    np.testing.assert_array_equal(numbers(ds, tmp_path, "PixelSpacing", 2, positive=True),
                                  [0.5, 0.75])
    with pytest.raises(DicomReadError, match="expected 3"):
        numbers(ds, tmp_path, "PixelSpacing", 3)
    with pytest.raises(DicomReadError, match="is missing"):
        numbers(ds, tmp_path, "ImagePositionPatient", 3)


@pytest.mark.parametrize("iop,ok", [([1, 0, 0, 0, 1, 0], True), ([0, 1, 0, 0, 0, -1], True),
                                    ([1, 0, 0, 0, 0.5, 0], False), ([1, 0, 0, 0.6, 0.8, 0], False),
                                    ([0, 0, 0, 0, 0, 0], False)])
def test_orientation_unit_and_orthogonal(tmp_path, iop, ok):
    ds = _ds(ImageOrientationPatient=iop)
    if ok:
        np.testing.assert_array_equal(orientation(ds, tmp_path), iop)
    else:
        with pytest.raises(GeometryError, match="ImageOrientationPatient"):
            orientation(ds, tmp_path)


@pytest.mark.parametrize("rows,cols,bits,actual,ok", [
    (3, 5, 8, 15, True), (3, 5, 8, 16, True), (3, 5, 8, 17, False), (4, 5, 8, 21, False),
    (4, 5, 16, 40, True), (4, 5, 16, 41, False), (4, 5, 32, 80, True), (4, 5, 32, 40, False)])
def test_pixel_length_allows_only_the_pad_byte(tmp_path, rows, cols, bits, actual, ok):
    ds = _ds(Rows=rows, Columns=cols, BitsAllocated=bits, SamplesPerPixel=1)
    if ok:
        check_pixel_length(ds, tmp_path / "x.dcm", actual)
    else:
        with pytest.raises(DicomReadError, match=f"x.dcm: PixelData holds {actual} bytes"):
            check_pixel_length(ds, tmp_path / "x.dcm", actual)
