"""Shared helpers for the DICOM readers: safe opening and attribute checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from ..errors import DicomReadError

#: SOP classes we read, by modality.
SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "RTDOSE": "1.2.840.10008.5.1.4.1.1.481.2",
    "RTSTRUCT": "1.2.840.10008.5.1.4.1.1.481.3",
}


def read_dataset(path: "str | Path", modality: str, *, stop_before_pixels: bool = False):
    """Open ``path`` with pydicom and check that it is a ``modality`` object.

    Raises
    ------
    DicomReadError
        If the file is missing, not DICOM, or of another modality; the
        message names the file and what it holds instead.
    """
    path = Path(path)
    if not path.is_file():
        raise DicomReadError(f"{path}: no such file (expected a DICOM {modality} file)")
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
            )
    except Exception as exc:
        raise DicomReadError(f"{path}: not a readable DICOM file ({exc})") from exc
    found = str(ds.get("Modality", "")).upper()
    sop = str(ds.get("SOPClassUID", ""))
    if found != modality and sop != SOP_CLASS.get(modality):
        raise DicomReadError(
            f"{path}: is a {found or 'file without Modality'} object, expected {modality}; "
            "check which file was passed for which option"
        )
    return ds


def require(ds, path: Path, *keywords: str) -> None:
    """Raise :class:`DicomReadError` naming ``path`` if any keyword is absent or empty."""
    missing = [k for k in keywords if k not in ds or ds[k].value in (None, "", b"")]
    if missing:
        raise DicomReadError(
            f"{path}: missing required attribute(s) {', '.join(missing)}; "
            "the file is incomplete or not written by a conformant system"
        )


def sha256(path: "str | Path") -> str:
    """Hex SHA-256 of a file's bytes (for provenance)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def uid(ds, keyword: str) -> str | None:
    """A UID attribute as ``str`` or None when absent."""
    v = ds.get(keyword)
    return str(v) if v else None
