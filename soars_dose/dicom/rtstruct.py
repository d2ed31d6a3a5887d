"""Reading RTSTRUCT files into a :class:`~soars_dose.structures.StructureSet`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DicomReadError, warn
from ..structures import Structure, StructureSet
from .common import read_dataset, uid

#: A CLOSED_PLANAR contour whose points leave their plane by more than this
#: (mm) is not planar.
PLANARITY_TOL_MM = 0.05


def _polygon_area(pts2: np.ndarray) -> float:
    x, y = pts2[:, 0], pts2[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _check_contour(pts: np.ndarray, where: str) -> tuple[np.ndarray | None, str | None]:
    """Return the usable polygon or ``(None, reason)``."""
    if pts.shape[0] < 3:
        return None, f"{where}: {pts.shape[0]} point(s), a closed contour needs 3"
    if not np.all(np.isfinite(pts)):
        return None, f"{where}: non-finite coordinates"
    if np.allclose(pts[0], pts[-1]) and pts.shape[0] > 3:
        pts = pts[:-1]  # some systems repeat the first point at the end
    spread = np.ptp(pts, axis=0)
    axis = int(np.argmin(spread))
    if spread[axis] > PLANARITY_TOL_MM:
        return None, (
            f"{where}: points are not in one axis-aligned plane (spread "
            f"{spread.round(3).tolist()} mm); oblique or non-planar contours are not supported"
        )
    keep = [a for a in range(3) if a != axis]
    if _polygon_area(pts[:, keep]) < 1e-6:
        return None, f"{where}: zero area (degenerate contour)"
    return pts, None


def read_rtstruct(path: "str | Path") -> StructureSet:
    """Read every ROI of an RTSTRUCT.

    CLOSED_PLANAR contours are kept as LPS polygons (several per plane
    allowed; holes follow the even-odd rule). POINT, OPEN_PLANAR and
    OPEN_NONPLANAR contours are skipped with a warning, as are degenerate
    contours (fewer than 3 points, zero area, non-planar). ROIs with no
    usable contour are kept as empty structures so that callers can report
    them.

    Raises
    ------
    DicomReadError
        Not an RTSTRUCT, or StructureSetROISequence missing.
    """
    path = Path(path)
    ds = read_dataset(path, "RTSTRUCT")
    if "StructureSetROISequence" not in ds:
        raise DicomReadError(
            f"{path}: RTSTRUCT without StructureSetROISequence; it lists no ROI"
        )
    frames = set()
    structures: dict[int, Structure] = {}
    for item in ds.StructureSetROISequence:
        if "ROINumber" not in item:
            raise DicomReadError(f"{path}: a StructureSetROISequence item has no ROINumber")
        num = int(item.ROINumber)
        if num in structures:
            raise DicomReadError(
                f"{path}: ROINumber {num} is used twice; the file is not a valid RTSTRUCT"
            )
        name = str(item.get("ROIName", "") or "").strip()
        if not name:
            name = f"ROI_{num}"
            warn(f"{path}: ROI number {num} has no ROIName; called it {name!r}")
        if item.get("ReferencedFrameOfReferenceUID"):
            frames.add(str(item.ReferencedFrameOfReferenceUID))
        structures[num] = Structure(
            name=name,
            number=num,
            generation_algorithm=str(item.get("ROIGenerationAlgorithm", "") or "") or None,
        )
    for obs in ds.get("RTROIObservationsSequence", []):
        n = obs.get("ReferencedROINumber")
        if n is not None and int(n) in structures:
            structures[int(n)].interpreted_type = str(obs.get("RTROIInterpretedType", "") or "") or None

    skipped: dict[str, int] = {}
    for rc in ds.get("ROIContourSequence", []):
        n = rc.get("ReferencedROINumber")
        if n is None or int(n) not in structures:
            warn(f"{path}: ROIContourSequence item refers to unknown ROI number {n}; skipped")
            continue
        s = structures[int(n)]
        if "ROIDisplayColor" in rc:
            try:
                s.color = tuple(int(c) for c in rc.ROIDisplayColor)[:3]
            except (TypeError, ValueError):
                pass
        for ci, c in enumerate(rc.get("ContourSequence", [])):
            gtype = str(c.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
            where = f"{path}: ROI {s.name!r} contour {ci + 1}"
            if gtype != "CLOSED_PLANAR":
                skipped[gtype] = skipped.get(gtype, 0) + 1
                continue
            data = c.get("ContourData")
            if data is None:
                warn(f"{where}: no ContourData; skipped")
                continue
            vals = np.asarray(data, dtype=float)
            if vals.size % 3:
                warn(f"{where}: ContourData length {vals.size} is not a multiple of 3; skipped")
                continue
            pts, reason = _check_contour(vals.reshape(-1, 3), where)
            if pts is None:
                warn(f"{reason}; skipped")
                continue
            s.contours.append(pts)
    for gtype, count in skipped.items():
        warn(f"{path}: skipped {count} {gtype} contour(s); only CLOSED_PLANAR contours "
             "define volumes")
    refs = ds.get("ReferencedFrameOfReferenceSequence", [])
    for r in refs:
        if r.get("FrameOfReferenceUID"):
            frames.add(str(r.FrameOfReferenceUID))
    ref_series = None
    for r in refs:
        for st in r.get("RTReferencedStudySequence", []):
            for se in st.get("RTReferencedSeriesSequence", []):
                ref_series = ref_series or uid(se, "SeriesInstanceUID")
    if len(frames) > 1:
        warn(f"{path}: ROIs refer to {len(frames)} frames of reference {sorted(frames)}")
    frame = uid(ds, "FrameOfReferenceUID") or (sorted(frames)[0] if frames else None)
    if frames and frame not in frames:
        frame = sorted(frames)[0]
    return StructureSet(
        structures=list(structures.values()),
        frame_of_reference_uid=frame,
        source=path,
        sop_instance_uid=uid(ds, "SOPInstanceUID"),
        series_instance_uid=uid(ds, "SeriesInstanceUID"),
        study_instance_uid=uid(ds, "StudyInstanceUID"),
        referenced_series_uid=ref_series,
        label=str(ds.get("StructureSetLabel", "") or "") or None,
    )
