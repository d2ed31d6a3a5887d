"""The corpus of hostile files that the readers must refuse, by class.

Each entry builds one file (or CT folder) in a given folder and says what
must happen: the exception class and text fragments that the message must
hold (always the file name, and the numbers that are wrong). The reader
tests and the CLI tests run over the same entries, so every file here is
checked both ways.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from pydicom.encaps import encapsulate

from soars_dose.errors import DicomReadError, GeometryError

from . import builders as b


@dataclass
class Hostile:
    """One hostile input.

    kind : 'rtdose', 'rtstruct' or 'ct' (a folder)
    make : folder -> path of the hostile file or CT folder
    error : exception class the reader must raise
    fragments : texts the message must contain besides the file name
    named : function of the returned path -> the file the message must name
    """

    kind: str
    make: Callable[[Path], Path]
    error: type
    fragments: tuple[str, ...] = ()
    named: Callable[[Path], str] = field(default=lambda p: p.name)


CORPUS: dict[str, Hostile] = {}


def hostile(name, kind, error, *fragments, named=None):
    def deco(fn):
        CORPUS[name] = Hostile(kind, fn, error, tuple(fragments),
                               named or (lambda p: p.name))
        return fn
    return deco


def _dose(folder: Path, edit=None, name="rd.dcm", **kw) -> Path:
    ds = b.rtdose(b.dose_truth(), **kw)
    if edit:
        edit(ds)
    return b.write(ds, folder / name)


# ---------------------------------------------------------------- class 1: RTDOSE pixels
# dose_truth() is 4 frames x 5 rows x 6 columns = 120 voxels = 480 bytes at 32 bits.

@hostile("dose_pixels_one_voxel_too_many", "rtdose", DicomReadError, "484 bytes", "480 bytes")
def _(f):
    return _dose(f, lambda ds: setattr(ds, "PixelData", ds.PixelData + b"\0" * 4))


@hostile("dose_pixels_one_frame_too_many", "rtdose", DicomReadError, "600 bytes", "480 bytes",
         "NumberOfFrames 4")
def _(f):
    return _dose(f, lambda ds: setattr(ds, "PixelData", ds.PixelData + ds.PixelData[:120]))


@hostile("dose_pixels_one_frame_short", "rtdose", DicomReadError, "360 bytes", "480 bytes",
         "truncated")
def _(f):
    return _dose(f, lambda ds: setattr(ds, "PixelData", ds.PixelData[:360]))


@hostile("dose_pixels_two_bytes_short", "rtdose", DicomReadError, "478 bytes", "480 bytes")
def _(f):
    return _dose(f, lambda ds: setattr(ds, "PixelData", ds.PixelData[:478]))


@hostile("dose_pixels_odd_length", "rtdose", DicomReadError, "481 bytes", "480 bytes")
def _(f):
    # pydicom pads an odd value on writing, so the odd length is patched in the bytes:
    # PixelData is the last element; its 4-byte length follows tag, VR OW and 2 reserved.
    p = _dose(f, lambda ds: setattr(ds, "PixelData", ds.PixelData + b"\x07\x00"))
    data = bytearray(p.read_bytes())
    at = data.rfind(b"\xe0\x7f\x10\x00OW")
    assert at > 0 and int.from_bytes(data[at + 8:at + 12], "little") == 482
    data[at + 8:at + 12] = (481).to_bytes(4, "little")
    p.write_bytes(bytes(data[:-1]))
    return p


@hostile("dose_rows_too_many", "rtdose", DicomReadError, "576 bytes", "480 bytes", "Rows 6")
def _(f):
    return _dose(f, lambda ds: setattr(ds, "Rows", 6))


@hostile("dose_columns_too_few", "rtdose", DicomReadError, "400 bytes", "480 bytes",
         "Columns 5")
def _(f):
    return _dose(f, lambda ds: setattr(ds, "Columns", 5))


@hostile("dose_frames_header_says_3", "rtdose", DicomReadError, "360 bytes", "480 bytes")
def _(f):
    def edit(ds):
        ds.NumberOfFrames = 3
        ds.GridFrameOffsetVector = [0, 3, 6]
    return _dose(f, edit)


@hostile("dose_bits16_header_on_32bit_data", "rtdose", DicomReadError, "240 bytes",
         "480 bytes", "BitsAllocated 16")
def _(f):
    def edit(ds):
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
    return _dose(f, edit)


@hostile("dose_bits32_header_on_16bit_data", "rtdose", DicomReadError, "480 bytes",
         "240 bytes", "BitsAllocated 32")
def _(f):
    def edit(ds):
        ds.BitsAllocated = ds.BitsStored = 32
        ds.HighBit = 31
    return _dose(f, edit, bits=16, scaling=1e-3)


@hostile("dose_bits8", "rtdose", DicomReadError, "BitsAllocated = 8")
def _(f):
    def edit(ds):
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelData = (np.frombuffer(ds.PixelData, np.uint16) // 4).astype(np.uint8).tobytes()
    return _dose(f, edit, bits=16, scaling=1e-2)


@hostile("dose_samples_per_pixel_3", "rtdose", DicomReadError, "SamplesPerPixel = 3")
def _(f):
    def edit(ds):
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
    return _dose(f, edit)


@hostile("dose_number_of_frames_text", "rtdose", DicomReadError, "NumberOfFrames", "'four'")
def _(f):
    return _dose(f, lambda ds: b.set_raw(ds, "NumberOfFrames", "four"))


@hostile("dose_compressed_no_decoder", "rtdose", DicomReadError, "1.2.840.10008.1.2.4.100",
         "no decoder")
def _(f):
    def edit(ds):
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: never decoded
        ds.PixelData = encapsulate([b"\x00\x01" * 50])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    return _dose(f, edit)


@hostile("dose_rle_fragment_garbage", "rtdose", DicomReadError, "cannot be decoded")
def _(f):
    def edit(ds):
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.5"  # RLE: decoder built in
        ds.PixelData = encapsulate([b"\x12\x34" * 9] * 4)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    return _dose(f, edit)


@hostile("dose_header_asks_for_terabytes", "rtdose", DicomReadError, "2147418112500000 bytes",
         "480 bytes")
def _(f):
    # Refused from the lengths alone, before anything of that size is allocated.
    def edit(ds):
        ds.Rows = ds.Columns = 65535
        ds.NumberOfFrames = 125000
        ds.GridFrameOffsetVector = [0.0]
    return _dose(f, edit)


@hostile("dose_zero_frames", "rtdose", DicomReadError, "NumberOfFrames = 0")
def _(f):
    return _dose(f, lambda ds: setattr(ds, "NumberOfFrames", 0))


# ---------------------------------------------------------------- class 7: RTDOSE numbers

def _dose_raw(keyword, value):
    return lambda f: _dose(f, lambda ds: b.set_raw(ds, keyword, value))


for _name, _kw, _val, _err, _frag in [
    ("dose_pixel_spacing_one_value", "PixelSpacing", "2.5", DicomReadError, "1 value(s)"),
    ("dose_pixel_spacing_three_values", "PixelSpacing", "2.5\\2.5\\2.5", DicomReadError,
     "3 value(s)"),
    ("dose_pixel_spacing_nan", "PixelSpacing", "nan\\2.5", DicomReadError, "non-finite"),
    ("dose_pixel_spacing_zero", "PixelSpacing", "0\\2.5", DicomReadError, "must be > 0"),
    ("dose_pixel_spacing_negative", "PixelSpacing", "2.0\\-2.5", DicomReadError, "must be > 0"),
    ("dose_pixel_spacing_text", "PixelSpacing", "2.5mm\\2.5mm", DicomReadError, "not numeric"),
    ("dose_position_two_values", "ImagePositionPatient", "-10\\-20", DicomReadError,
     "2 value(s)"),
    ("dose_position_inf", "ImagePositionPatient", "-10\\inf\\5", DicomReadError, "non-finite"),
    ("dose_offsets_nan", "GridFrameOffsetVector", "0\\3\\nan\\9", DicomReadError,
     "non-finite"),
    ("dose_offsets_repeated", "GridFrameOffsetVector", "0\\3\\3\\9", GeometryError,
     "same offset 3"),
    ("dose_offsets_uneven", "GridFrameOffsetVector", "0\\3\\4\\9", GeometryError,
     "unevenly spaced"),
    ("dose_offsets_count", "GridFrameOffsetVector", "0\\3\\6", DicomReadError,
     "3 values for 4 frames"),
    ("dose_scaling_nan", "DoseGridScaling", "nan", DicomReadError, "DoseGridScaling"),
    ("dose_scaling_inf", "DoseGridScaling", "inf", DicomReadError, "non-finite"),
    ("dose_scaling_text", "DoseGridScaling", "0.0001Gy", DicomReadError, "not numeric"),
    ("dose_scaling_negative", "DoseGridScaling", "-0.0001", DicomReadError, "negative"),
    ("dose_orientation_zero", "ImageOrientationPatient", "0\\0\\0\\0\\0\\0", GeometryError,
     "not two unit vectors"),
    ("dose_orientation_non_unit", "ImageOrientationPatient", "2\\0\\0\\0\\2\\0", GeometryError,
     "lengths 2, 2"),
    ("dose_orientation_parallel", "ImageOrientationPatient", "1\\0\\0\\1\\0\\0", GeometryError,
     "non-orthogonal"),
    ("dose_orientation_five_values", "ImageOrientationPatient", "1\\0\\0\\0\\1", DicomReadError,
     "5 value(s)"),
]:
    CORPUS[_name] = Hostile("rtdose", _dose_raw(_kw, _val), _err, (_kw, _frag))


# ---------------------------------------------------------------- RTDOSE truncated

def _cut_dose(at):
    def make(f):
        p = _dose(f, name="whole.dcm")
        return b.cut(p, at, f / "rd.dcm")
    return make


for _at in (0.5, 0.9, 0.99):
    CORPUS[f"dose_cut_at_{int(_at * 100)}pct"] = Hostile("rtdose", _cut_dose(_at), DicomReadError,
                                                        ("truncated",))


# ---------------------------------------------------------------- class 3: RTSTRUCT truncated

def good_rois():
    """Three ROIs of squares on planes z = 0, 2, ..., 8 (mm)."""
    return [(1, "Parotid_L", [b.square(-20, 0, z) for z in range(0, 10, 2)]),
            (2, "SpinalCord", [b.square(0, 10, z, 3) for z in range(0, 10, 2)]),
            (3, "Brainstem", [b.square(15, -5, z, 4) for z in range(0, 10, 2)])]


def _cut_rs(at, *, undefined=False, implicit=False, needle=None, shift=0):
    def make(f):
        p = b.write(b.rtstruct(good_rois(), undefined_length=undefined), f / "whole.dcm",
                    implicit=implicit)
        pos = at
        if needle is not None:
            pos = b.element_offset(p, needle) + shift
        return b.cut(p, pos, f / "rs.dcm")
    return make


for _enc, _kw in [("explicit", {}), ("undefined", {"undefined": True}),
                  ("implicit", {"implicit": True, "undefined": True}),
                  ("implicit_defined", {"implicit": True})]:
    for _at in (0.1, 0.5, 0.9):
        CORPUS[f"rtstruct_{_enc}_cut_at_{int(_at * 100)}pct"] = Hostile(
            "rtstruct", _cut_rs(_at, **_kw), DicomReadError, ("truncated",))
    # mid-ContourData of the last ROI: the text of its last plane's coordinates
    CORPUS[f"rtstruct_{_enc}_cut_mid_contour_data"] = Hostile(
        "rtstruct", _cut_rs(0, needle=b"19.0\\-9.0\\8.0", shift=3, **_kw), DicomReadError,
        ("truncated",))
# mid-tag: inside the 8-byte header of RTROIObservationsSequence (3006,0080)
CORPUS["rtstruct_cut_mid_tag"] = Hostile(
    "rtstruct", _cut_rs(0, needle=b"\x06\x30\x80\x00", shift=3), DicomReadError, ("truncated",))
CORPUS["rtstruct_undefined_cut_mid_tag"] = Hostile(
    "rtstruct", _cut_rs(0, needle=b"\x06\x30\x80\x00", shift=5, undefined=True), DicomReadError,
    ("truncated",))


@hostile("rtstruct_item_without_roi_number", "rtstruct", DicomReadError,
         "StructureSetROISequence item 2 has no ROINumber")
def _(f):
    ds = b.rtstruct(good_rois())
    del ds.StructureSetROISequence[1].ROINumber
    return b.write(ds, f / "rs.dcm")


@hostile("rtstruct_contour_item_without_reference", "rtstruct", DicomReadError,
         "ROIContourSequence item 3 has no ReferencedROINumber")
def _(f):
    ds = b.rtstruct(good_rois())
    del ds.ROIContourSequence[2].ReferencedROINumber
    return b.write(ds, f / "rs.dcm")


@hostile("rtstruct_no_roi_sequence", "rtstruct", DicomReadError, "StructureSetROISequence")
def _(f):
    ds = b.rtstruct(good_rois())
    del ds.StructureSetROISequence
    return b.write(ds, f / "rs.dcm")


@hostile("rtstruct_zero_rois", "rtstruct", DicomReadError, "lists no ROI")
def _(f):
    return b.write(b.rtstruct([]), f / "rs.dcm")


@hostile("rtstruct_every_roi_number_bad", "rtstruct", DicomReadError, "none of its 3 ROI(s)")
def _(f):
    ds = b.rtstruct(good_rois())
    for item in ds.StructureSetROISequence:
        b.set_raw(item, "ROINumber", "n/a")
    return b.write(ds, f / "rs.dcm")


# ---------------------------------------------------------------- CT series

def _ct(edit=None, k_bad=1, **kw):
    def make(f):
        d = f / "ct"
        b.ct_series(d, b.ct_truth(), edit=(lambda k, ds: edit(ds) if k == k_bad else None)
                    if edit else None, **kw)
        return d
    return make


def _slice(k):
    return lambda d: f"ct_{k:03d}.dcm"


def _ct_hostile(name, edit, error, *fragments, k_bad=1):
    CORPUS[name] = Hostile("ct", _ct(edit, k_bad), error, fragments, _slice(k_bad))


# class 1 on CT: a 4 x 5 slice of 16 bits is 40 bytes
_ct_hostile("ct_pixels_too_long", lambda ds: setattr(ds, "PixelData", ds.PixelData + b"\0\0"),
            DicomReadError, "42 bytes", "40 bytes")
_ct_hostile("ct_pixels_too_short", lambda ds: setattr(ds, "PixelData", ds.PixelData[:30]),
            DicomReadError, "30 bytes", "40 bytes")
_ct_hostile("ct_bits8_header_on_16bit_data",
            lambda ds: (setattr(ds, "BitsAllocated", 8), setattr(ds, "BitsStored", 8),
                        setattr(ds, "HighBit", 7)),
            DicomReadError, "40 bytes", "20 bytes")
_ct_hostile("ct_samples_per_pixel_3", lambda ds: setattr(ds, "SamplesPerPixel", 3),
            DicomReadError, "SamplesPerPixel = 3")

# class 5: slices that disagree (each slice's own pixels match its own header)


def _resize(rows, cols):
    def edit(ds):
        ds.Rows, ds.Columns = rows, cols
        ds.PixelData = np.zeros((rows, cols), np.uint16).tobytes()
    return edit


_ct_hostile("ct_rows_differ", _resize(5, 5), GeometryError, "Rows [5]", "([4])", "ct_000.dcm")
_ct_hostile("ct_columns_differ", _resize(4, 6), GeometryError, "Columns [6]", "([5])",
            "ct_000.dcm", k_bad=2)
_ct_hostile("ct_spacing_differs", lambda ds: setattr(ds, "PixelSpacing", [0.8, 1.0]),
            GeometryError, "PixelSpacing [0.8, 1.0]", "[0.8, 0.9]", "ct_000.dcm")
_ct_hostile("ct_orientation_differs",
            lambda ds: setattr(ds, "ImageOrientationPatient", [-1, 0, 0, 0, 1, 0]),
            GeometryError, "ImageOrientationPatient", "ct_000.dcm", "-1.0")
# class 7 on CT
_ct_hostile("ct_spacing_one_value", lambda ds: b.set_raw(ds, "PixelSpacing", "0.8"),
            DicomReadError, "PixelSpacing", "1 value(s)")
_ct_hostile("ct_spacing_zero", lambda ds: b.set_raw(ds, "PixelSpacing", "0\\0.9"),
            DicomReadError, "must be > 0")
_ct_hostile("ct_spacing_negative", lambda ds: b.set_raw(ds, "PixelSpacing", "0.8\\-0.9"),
            DicomReadError, "must be > 0")
_ct_hostile("ct_orientation_not_orthogonal",
            lambda ds: b.set_raw(ds, "ImageOrientationPatient", "1\\0\\0\\0.6\\0.8\\0"),
            GeometryError, "non-orthogonal", k_bad=0)
_ct_hostile("ct_spacing_nan", lambda ds: b.set_raw(ds, "PixelSpacing", "0.8\\nan"),
            DicomReadError, "non-finite")
_ct_hostile("ct_position_two_values", lambda ds: b.set_raw(ds, "ImagePositionPatient", "1\\2"),
            DicomReadError, "ImagePositionPatient", "2 value(s)")
_ct_hostile("ct_orientation_degenerate",
            lambda ds: b.set_raw(ds, "ImageOrientationPatient", "0\\0\\0\\0\\1\\0"),
            GeometryError, "not two unit vectors", k_bad=0)
_ct_hostile("ct_rows_zero", lambda ds: setattr(ds, "Rows", 0), DicomReadError, "Rows = 0")
# class 9
_ct_hostile("ct_missing_sop_instance_uid", lambda ds: delattr(ds, "SOPInstanceUID"),
            DicomReadError, "SOPInstanceUID")


@hostile("ct_duplicate_sop_instance_uid", "ct", DicomReadError, "also the UID of",
         named=_slice(1))
def _(f):
    d = f / "ct"
    uids = {}

    def edit(k, ds):
        if k == 1:
            ds.SOPInstanceUID = uids[0]
        uids[k] = ds.SOPInstanceUID
    b.ct_series(d, b.ct_truth(), edit=edit)
    return d


def _cut_ct_slice(at):
    def make(f):
        d = f / "ct"
        paths = b.ct_series(d, b.ct_truth(n_slices=3, shape=(40, 50)))
        data = paths[1].read_bytes()
        n = int(len(data) * at) if isinstance(at, float) else at(data)
        paths[1].write_bytes(data[:n])
        return d
    return make


CORPUS["ct_slice_cut_mid_pixel_data"] = Hostile("ct", _cut_ct_slice(0.7), DicomReadError,
                                                ("truncated",), _slice(1))
CORPUS["ct_slice_cut_near_end"] = Hostile("ct", _cut_ct_slice(lambda d: len(d) - 1),
                                          DicomReadError, ("truncated",), _slice(1))
CORPUS["ct_slice_cut_in_header"] = Hostile(
    "ct", _cut_ct_slice(lambda d: d.find(b"\x28\x00\x30\x00") + 9), DicomReadError,
    ("truncated",), _slice(1))
