"""CT reader: accepted series give the HU put in; undecodable slices are warned about early."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate

from soars_dose.dicom.ct import read_ct_series
from soars_dose.errors import DicomReadError, SoarsDoseWarning

from . import builders as b


def _read(folder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ct = read_ct_series(folder)
    return ct, [str(w.message) for w in caught if issubclass(w.category, SoarsDoseWarning)]


@pytest.mark.parametrize("implicit", [False, True])
def test_well_formed_series_read_exactly(tmp_path, implicit):
    hu = b.ct_truth(n_slices=4)
    folder = tmp_path / "ct"
    folder.mkdir()
    # files named against their order, so sorting must come from the positions
    for k in range(4):
        b.write(b.ct_slice(hu[k], 2.0 * k), folder / f"s{9 - k}.dcm", implicit=implicit)
    (folder / "notes.txt").write_text("not DICOM")
    ct, warns = _read(folder)
    assert warns == []
    np.testing.assert_array_equal(ct.load_hu(), hu)
    assert ct.grid.shape == (4, 4, 5)
    np.testing.assert_allclose(ct.grid.spacing, (2.0, 0.8, 0.9))
    np.testing.assert_allclose(ct.grid.origin, (-30.0, -40.0, 0.0))
    assert [p.name for p in ct.paths] == ["s9.dcm", "s8.dcm", "s7.dcm", "s6.dcm"]


def test_odd_8_bit_slice_with_its_pad_byte_is_accepted(tmp_path):
    """3 x 5 pixels of 8 bits = 15 bytes, stored as 16 with the DICOM pad byte."""
    hu = (np.arange(45).reshape(3, 3, 5) - 100).astype(float)
    paths = b.ct_series(tmp_path / "ct", hu, bits=8, intercept=-100.0)
    assert all(len(pydicom.dcmread(p).PixelData) == 16 for p in paths)
    ct, warns = _read(tmp_path / "ct")
    assert warns == []
    np.testing.assert_array_equal(ct.load_hu(), hu)


def _compressed(syntax):
    def edit(k, ds):
        if k == 1:
            ds.file_meta.TransferSyntaxUID = syntax
            ds.PixelData = encapsulate([b"\x00\x11" * 10])
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
    return edit


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.102"])
def test_undecodable_slice_warned_at_read_and_refused_at_load(tmp_path, syntax):
    b.ct_series(tmp_path / "ct", b.ct_truth(), edit=_compressed(syntax))
    ct, warns = _read(tmp_path / "ct")
    w = [w for w in warns if "no decoder" in w]
    assert len(w) == 1 and "ct_001.dcm" in w[0] and syntax in w[0]
    assert ct.grid.shape == (3, 4, 5)  # the geometry is still usable
    with pytest.raises(DicomReadError, match="ct_001.dcm.*cannot be decoded"):
        ct.load_hu()


def test_slice_without_pixel_data_warned_at_read(tmp_path):
    b.ct_series(tmp_path / "ct", b.ct_truth(),
                edit=lambda k, ds: k == 2 and delattr(ds, "PixelData"))
    ct, warns = _read(tmp_path / "ct")
    assert any("ct_002.dcm" in w and "no pixel data" in w for w in warns)
    with pytest.raises(DicomReadError, match="ct_002.dcm.*no pixel data"):
        ct.load_hu()


@pytest.mark.parametrize("keyword,value", [("RescaleSlope", "one"), ("RescaleIntercept", "nan")])
def test_bad_rescale_refused_naming_the_slice(tmp_path, keyword, value):
    b.ct_series(tmp_path / "ct", b.ct_truth(),
                edit=lambda k, ds: k == 0 and b.set_raw(ds, keyword, value))
    ct, _ = _read(tmp_path / "ct")
    with pytest.raises(DicomReadError, match=f"ct_000.dcm: {keyword}"):
        ct.load_hu()


def test_truncated_unreadable_dicom_in_folder_is_named(tmp_path):
    """A DICOM file cut inside its meta group (pydicom cannot read it) is not silently ignored."""
    paths = b.ct_series(tmp_path / "ct", b.ct_truth())
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[:150])
    with pytest.raises(DicomReadError, match="ct_002.dcm.*truncated"):
        _read(tmp_path / "ct")
