"""Shared helpers for the DICOM readers: safe opening and attribute checks."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from ..errors import DicomReadError, GeometryError, warn
from ..inputs import require_file

#: SOP classes we read, by modality.
SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "RTDOSE": "1.2.840.10008.5.1.4.1.1.481.2",
    "RTSTRUCT": "1.2.840.10008.5.1.4.1.1.481.3",
    "RTPLAN": "1.2.840.10008.5.1.4.1.1.481.5",
}


def read_dataset(path: "str | Path", modality: str, *, stop_before_pixels: bool = False):
    """Open ``path`` with pydicom and check that it is a ``modality`` object.

    Raises
    ------
    DicomReadError
        If the file is missing, truncated (see :func:`file_layout`), not
        DICOM, or of another modality; the message names the file and what
        it holds instead.
    """
    return read_checked(path, modality, stop_before_pixels=stop_before_pixels)[0]


def read_checked(path: "str | Path", modality: str, *, stop_before_pixels: bool = False):
    """:func:`read_dataset` that also returns the file's :class:`FileLayout`."""
    path = require_file(path, f"a DICOM {modality} file", error=DicomReadError,
                        missing=f"{path}: no such file (expected a DICOM {modality} file)")
    layout = file_layout(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
        except Exception as exc:  # pydicom raises many kinds on garbage
            raise DicomReadError(f"{path}: not a readable DICOM file ({exc})") from exc
        if "Modality" not in ds and "SOPClassUID" not in ds:
            raise DicomReadError(
                f"{path}: not a DICOM file (no preamble, no Modality or SOPClassUID); "
                f"expected a {modality} object"
            ) from None
    except Exception as exc:
        raise DicomReadError(f"{path}: not a readable DICOM file ({exc})") from exc
    found = str(ds.get("Modality", "")).upper()
    sop = str(ds.get("SOPClassUID", ""))
    if found != modality and sop != SOP_CLASS.get(modality):
        raise DicomReadError(
            f"{path}: is a {found or 'file without Modality'} object, expected {modality}; "
            "check which file was passed for which option"
        )
    return ds, layout


def require(ds, path: Path, *keywords: str) -> None:
    """Raise :class:`DicomReadError` naming ``path`` if any keyword is absent or empty."""
    missing = [k for k in keywords if k not in ds or ds[k].value in (None, "", b"")]
    if missing:
        raise DicomReadError(
            f"{path}: missing required attribute(s) {', '.join(missing)}; "
            "the file is incomplete or not written by a conformant system"
        )


def uid(ds, keyword: str) -> str | None:
    """A UID attribute as ``str`` or None when absent."""
    v = ds.get(keyword)
    return text(v).strip() or None if v else None


# --------------------------------------------------------------------------
# Structural completeness: did the file end in the middle of an element?
# --------------------------------------------------------------------------

#: VRs whose explicit-VR header has two reserved bytes and a 4-byte length.
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT",
             b"SV", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
#: Transfer syntaxes with native (uncompressed) pixel data.
NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
                   "1.2.840.10008.1.2.1.99"}


class _Cut(Exception):
    """Raised inside the walk when an element runs past the end of its container."""

    def __init__(self, offset: int, what: str, at_end: bool = True):
        super().__init__(what)
        self.offset, self.what, self.at_end = offset, what, at_end


@dataclass
class FileLayout:
    """What a byte-level walk of a DICOM file found (see :func:`file_layout`).

    Attributes
    ----------
    transfer_syntax : str or None
        TransferSyntaxUID of the file meta group (None without a meta group).
    walked : bool
        False when the data set could not be walked (no preamble, deflated);
        the other fields are then unknown.
    pixel_data_length : int or None
        Byte length of the top-level PixelData value; None when absent or
        encapsulated.
    encapsulated : bool
        PixelData has undefined length (compressed fragments).
    size : int
        File size in bytes.
    """

    transfer_syntax: str | None = None
    walked: bool = False
    pixel_data_length: int | None = None
    encapsulated: bool = False
    size: int = 0


def _walk_dataset(f, size: int, end: "int | None", explicit: bool, endian: str,
                  top: bool, layout: FileLayout) -> None:
    """Skip over the elements from the current offset to ``end``.

    ``end`` None means an undefined-length item closed by an item delimiter.
    """
    while True:
        pos = f.tell()
        if end is not None and pos >= end:
            if pos > end:
                raise _Cut(pos, "an element runs past the end of its item", at_end=end >= size)
            return
        head = f.read(8)
        if len(head) < 8:
            raise _Cut(pos, "the file ends inside an element header")
        group, elem = struct.unpack(endian + "HH", head[:4])
        if group == 0xFFFE:
            if elem == 0xE00D and end is None:
                return
            raise _Cut(pos, f"unexpected delimiter (FFFE,{elem:04X})", at_end=False)
        if explicit:
            vr = head[4:6]
            if vr in _LONG_VRS:
                ext = f.read(4)
                if len(ext) < 4:
                    raise _Cut(pos, "the file ends inside an element header")
                (length,) = struct.unpack(endian + "L", ext)
            else:
                (length,) = struct.unpack(endian + "H", head[6:8])
        else:
            (length,) = struct.unpack(endian + "L", head[4:8])
        tag = (group << 16) | elem
        if length == _UNDEFINED:
            # An undefined-length UN holds an implicit VR little endian sequence (PS3.5 6.2.2).
            un = explicit and vr == b"UN"
            _walk_items(f, size, explicit and not un, "<" if un else endian, layout)
            if top and tag == _PIXEL_DATA:
                layout.encapsulated = True
            continue
        stop = f.tell() + length
        if stop > size or (end is not None and stop > end):
            raise _Cut(pos, f"element ({group:04X},{elem:04X}) declares {length} bytes but "
                            f"only {min(size, end or size) - f.tell()} remain",
                       at_end=stop > size)
        if top and tag == _PIXEL_DATA:
            layout.pixel_data_length = length
        f.seek(stop)


def _walk_items(f, size: int, explicit: bool, endian: str, layout: FileLayout) -> None:
    """Skip the items of an undefined-length sequence up to its delimiter."""
    while True:
        pos = f.tell()
        head = f.read(8)
        if len(head) < 8:
            raise _Cut(pos, "the file ends inside a sequence (no sequence delimiter)")
        group, elem, length = struct.unpack(endian + "HHL", head)
        if (group, elem) == (0xFFFE, 0xE0DD):
            return
        if (group, elem) != (0xFFFE, 0xE000):
            raise _Cut(pos, f"expected a sequence item, found ({group:04X},{elem:04X})",
                       at_end=False)
        if length == _UNDEFINED:
            _walk_dataset(f, size, None, explicit, endian, False, layout)
        else:
            if f.tell() + length > size:
                raise _Cut(pos, f"a sequence item declares {length} bytes but only "
                                f"{size - f.tell()} remain")
            f.seek(length, 1)


def file_layout(path: "str | Path") -> FileLayout:
    """Walk a DICOM file's element headers without decoding values.

    pydicom reads a file cut mid-way without complaint (sequences simply end
    early, the last value is short), so completeness is checked here: every
    defined length must fit in the file and every undefined-length sequence
    must be closed. Only headers are read; values are skipped with ``seek``.

    Raises
    ------
    DicomReadError
        The file is truncated or its element structure is corrupt; the
        message names the file and the byte offset.
    """
    path = Path(path)
    size = path.stat().st_size
    layout = FileLayout(size=size)
    with open(path, "rb") as f:
        f.seek(128)
        if f.read(4) != b"DICM":
            return layout  # no preamble: pydicom guesses the encoding, we do not
        try:
            # File meta group: always explicit VR little endian.
            while True:
                pos = f.tell()
                peek = f.read(2)
                if len(peek) < 2:
                    raise _Cut(pos, "the file ends inside its meta information")
                f.seek(pos)
                if struct.unpack("<H", peek)[0] != 0x0002:
                    break
                head = f.read(8)
                if len(head) < 8:
                    raise _Cut(pos, "the file ends inside its meta information")
                elem = struct.unpack("<H", head[2:4])[0]
                vr = head[4:6]
                if vr in _LONG_VRS:
                    (length,) = struct.unpack("<L", f.read(4))
                else:
                    (length,) = struct.unpack("<H", head[6:8])
                value = f.read(length)
                if len(value) < length:
                    raise _Cut(pos, "the file ends inside its meta information")
                if elem == 0x0010:
                    layout.transfer_syntax = value.rstrip(b"\x00 ").decode("ascii", "replace")
            ts = layout.transfer_syntax or "1.2.840.10008.1.2.1"
            if ts == "1.2.840.10008.1.2.1.99":
                return layout  # deflated: the data set is a zlib stream
            explicit = ts != "1.2.840.10008.1.2"
            endian = ">" if ts == "1.2.840.10008.1.2.2" else "<"
            _walk_dataset(f, size, size, explicit, endian, True, layout)
        except _Cut as cut:
            if not cut.at_end:
                # Not a cut file but an element structure this walk does not
                # follow; pydicom may still read it, so only say so.
                warn(f"{path}: unusual element structure at byte {cut.offset} ({cut.what}); "
                     "read as pydicom reads it, check the values")
                return layout
            raise DicomReadError(
                f"{path}: the file is truncated or corrupt at byte {cut.offset} of {size} "
                f"({cut.what}); it was probably cut short while copying: copy or export it again"
            ) from None
    layout.walked = True
    return layout


# --------------------------------------------------------------------------
# Values: text, numbers, orientation, pixel data length
# --------------------------------------------------------------------------

def text(value) -> str:
    """A DICOM string value as the text in the file.

    A multi-valued string (``Parotid/L\\R``) comes back from pydicom as a
    list; it is joined with the DICOM backslash so that the name stays what
    the planning system shows, never the Python repr of a list.
    """
    if value is None:
        return ""
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(str(v) for v in value)
    return str(value)


def numbers(ds, path: Path, keyword: str, count: "int | None" = None, *,
            positive: bool = False, where: str = "") -> np.ndarray:
    """A numeric (DS/IS/FD) attribute as a float array, checked.

    Parameters
    ----------
    ds : Dataset
    path : Path
        The file, named in every message.
    keyword : str
    count : int, optional
        Required number of values (e.g. 2 for PixelSpacing, 3 for
        ImagePositionPatient).
    positive : bool
        Every value must be > 0 (spacings).
    where : str
        Extra location text (e.g. ``"ROI 'Brain' contour 3"``).

    Raises
    ------
    DicomReadError
        Missing, non-numeric, wrong number of values, non-finite, or not
        positive when required.
    """
    place = f"{path}: {where + ' ' if where else ''}{keyword}"
    if keyword not in ds or ds[keyword].value in (None, "", b""):
        raise DicomReadError(f"{place} is missing; the file is incomplete")
    value = ds[keyword].value
    shown = text(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    vals = value if isinstance(value, (MultiValue, list, tuple)) else [value]
    try:
        arr = np.array([float(v) for v in vals], dtype=float)
    except (TypeError, ValueError):
        raise DicomReadError(f"{place} = {shown!r} is not numeric; the file is malformed") from None
    if count is not None and arr.size != count:
        raise DicomReadError(
            f"{place} has {arr.size} value(s) ({shown!r}), expected {count}; the file is malformed"
        )
    if not np.all(np.isfinite(arr)):
        raise DicomReadError(f"{place} = {shown!r} has non-finite values; the file is malformed")
    if positive and np.any(arr <= 0):
        raise DicomReadError(f"{place} = {shown!r} must be > 0 mm; the file is malformed")
    return arr


def integer(ds, path: Path, keyword: str, *, minimum: int = 1, default: "int | None" = None) -> int:
    """An integer attribute (IS/US) checked to be whole and >= ``minimum``.

    ``default`` is returned when the attribute is absent or empty (only where
    the standard allows it to be omitted, e.g. NumberOfFrames).
    """
    if default is not None and (keyword not in ds or ds[keyword].value in (None, "", b"")):
        return default
    v = numbers(ds, path, keyword, 1)[0]
    if v != int(v) or v < minimum:
        raise DicomReadError(
            f"{path}: {keyword} = {v:g} is not a whole number >= {minimum}; the file is malformed"
        )
    return int(v)


#: A direction cosine vector may differ from unit length by this much.
UNIT_TOLERANCE = 1e-3


def orientation(ds, path: Path) -> np.ndarray:
    """ImageOrientationPatient as 6 floats: two unit, orthogonal LPS vectors.

    Raises
    ------
    DicomReadError
        Missing, not 6 finite numbers.
    GeometryError
        A zero, non-unit or non-orthogonal pair of direction cosines.
    """
    iop = numbers(ds, path, "ImageOrientationPatient", 6)
    row, col = iop[:3], iop[3:]
    norms = np.linalg.norm(row), np.linalg.norm(col)
    if abs(norms[0] - 1) > UNIT_TOLERANCE or abs(norms[1] - 1) > UNIT_TOLERANCE:
        raise GeometryError(
            f"{path}: ImageOrientationPatient {iop.round(6).tolist()} is not two unit vectors "
            f"(lengths {norms[0]:.4g}, {norms[1]:.4g}); the orientation is degenerate, "
            "re-export the file"
        )
    if abs(float(row @ col)) > UNIT_TOLERANCE:
        raise GeometryError(
            f"{path}: ImageOrientationPatient {iop.round(6).tolist()} has non-orthogonal "
            f"directions (dot product {float(row @ col):.4g}); re-export the file"
        )
    return iop


def expected_pixel_bytes(ds, path: Path, *, allowed_bits=(8, 16, 32)) -> int:
    """Bytes of native PixelData the header asks for, after checking its fields.

    ``Rows x Columns x NumberOfFrames x SamplesPerPixel x BitsAllocated / 8``.

    Raises
    ------
    DicomReadError
        A field missing, not a positive whole number, SamplesPerPixel other
        than 1 (dose and CT are single-channel), or BitsAllocated not in
        ``allowed_bits``.
    """
    rows = integer(ds, path, "Rows")
    cols = integer(ds, path, "Columns")
    frames = integer(ds, path, "NumberOfFrames", default=1)
    spp = integer(ds, path, "SamplesPerPixel", default=1)
    bits = integer(ds, path, "BitsAllocated")
    if spp != 1:
        raise DicomReadError(
            f"{path}: SamplesPerPixel = {spp}; dose and CT images have one sample per pixel, "
            "the file is malformed or not a dose/CT image"
        )
    if bits not in allowed_bits:
        raise DicomReadError(
            f"{path}: BitsAllocated = {bits}; expected one of {list(allowed_bits)}"
        )
    return rows * cols * frames * spp * bits // 8


def check_pixel_length(ds, path: Path, actual: int, *, allowed_bits=(8, 16, 32)) -> None:
    """Refuse native PixelData whose length disagrees with the header.

    Only the one pad byte that makes an odd length even is allowed; any
    other difference means the header (Rows, Columns, NumberOfFrames,
    BitsAllocated, SamplesPerPixel) or the data is wrong, and reshaping
    would scramble the image.
    """
    expected = expected_pixel_bytes(ds, path, allowed_bits=allowed_bits)
    if actual == expected or (expected % 2 == 1 and actual == expected + 1):
        return
    frames = ds.get("NumberOfFrames", 1) or 1
    raise DicomReadError(
        f"{path}: PixelData holds {actual} bytes but the header needs {expected} bytes "
        f"(Rows {ds.Rows} x Columns {ds.Columns} x NumberOfFrames {frames} x SamplesPerPixel "
        f"{ds.get('SamplesPerPixel', 1)} x BitsAllocated {ds.BitsAllocated}/8); the file is "
        f"{'truncated' if actual < expected else 'longer than its header says'} or its header "
        "is wrong: re-export it (the image is not reshaped on a guess)"
    )


def decoder_available(transfer_syntax: "str | None") -> bool:
    """True when pydicom can decode pixel data of this transfer syntax here."""
    if transfer_syntax is None or transfer_syntax in NATIVE_SYNTAXES:
        return True
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(transfer_syntax).is_available)
    except Exception:  # unknown syntax or no decoder registered for it
        return False
