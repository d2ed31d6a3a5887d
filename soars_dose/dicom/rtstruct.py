"""Reading RTSTRUCT files into a :class:`~soars_dose.structures.StructureSet`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.multival import MultiValue

from ..errors import DicomReadError, warn
from ..polygons import contour_plane, duplicate_contours, self_intersection
from ..structures import Structure, StructureSet
from .common import read_checked, text, uid

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
    # A figure-eight has zero signed area but encloses area (even-odd): only a
    # contour that does not cross itself is degenerate at zero signed area.
    if _polygon_area(pts[:, keep]) < 1e-6 and self_intersection(pts[:, keep]) is None:
        return None, f"{where}: zero area (degenerate contour)"
    return pts, None


#: A contour coordinate beyond this (mm, 10 m from the origin) cannot be a
#: patient: the contour is skipped so that no later stage sizes arrays on it.
ABSURD_COORDINATE_MM = 1.0e4


def _roi_number(value) -> "int | None":
    """ROINumber / ReferencedROINumber as int, or None when not a whole number."""
    try:
        v = float(text(value).strip())
    except ValueError:
        return None
    return int(v) if np.isfinite(v) and v == int(v) else None


def read_rtstruct(path: "str | Path") -> StructureSet:
    """Read every ROI of an RTSTRUCT.

    CLOSED_PLANAR contours are kept as LPS polygons (several per plane
    allowed; holes follow the even-odd rule). ROIs with no usable contour
    are kept as empty structures so that callers can report them. String
    values (ROIName, StructureSetLabel, ...) are kept as the text in the
    file: a multi-valued name ``Parotid/L\\R`` stays ``Parotid/L\\R``.

    What is refused, skipped or only warned about:

    * **refused** (:class:`DicomReadError`): a truncated file (an element
      or sequence running past the end of the file, see
      :func:`~soars_dose.dicom.common.file_layout`); a StructureSetROISequence
      item without ROINumber or a ROIContourSequence item without
      ReferencedROINumber (what a file cut mid-sequence leaves); a repeated
      ROINumber; no StructureSetROISequence, an empty one, or no ROI with a
      usable ROINumber.
    * **skipped with a warning** naming ROI, contour and file: an ROI whose
      ROINumber is not a whole number (``"abc"``; its contours cannot be
      linked to it safely); a contour whose ContourData is not numeric
      (``"12.5mm"``), has non-finite values, holds a coordinate beyond
      :data:`ABSURD_COORDINATE_MM`, is not a multiple of 3 values or
      disagrees with NumberOfContourPoints; POINT / OPEN_PLANAR /
      OPEN_NONPLANAR contours; degenerate contours (fewer than 3 points,
      zero area, non-planar).
    * **kept with a warning** naming ROI, plane, contour and file: exact
      duplicate contours on one plane (within
      :data:`~soars_dose.polygons.DUPLICATE_TOL_MM`) and self-intersecting
      contours (see :mod:`soars_dose.polygons`); the rasteriser decides
      what they mean (at most :data:`MAX_CONTOUR_WARNINGS` listed per ROI,
      the rest counted). A missing RTROIObservationsSequence is warned
      about: a file cut exactly between two top-level elements still holds
      whole contours, and nothing else can tell it was cut there.

    Contour numbers in messages are 1-based positions in the ROI's
    ContourSequence.

    Raises
    ------
    DicomReadError
        As listed above.
    """
    path = Path(path)
    ds, _ = read_checked(path, "RTSTRUCT")
    if "StructureSetROISequence" not in ds:
        raise DicomReadError(
            f"{path}: RTSTRUCT without StructureSetROISequence; it lists no ROI"
        )
    if len(ds.StructureSetROISequence) == 0:
        raise DicomReadError(
            f"{path}: RTSTRUCT lists no ROI (StructureSetROISequence is empty; PS3.3 requires "
            "one or more items); export the structure set again with its ROIs"
        )
    frames = set()
    structures: dict[int, Structure] = {}
    bad_numbers: set[str] = set()
    for idx, item in enumerate(ds.StructureSetROISequence):
        if "ROINumber" not in item or text(item.ROINumber).strip() == "":
            raise DicomReadError(
                f"{path}: StructureSetROISequence item {idx + 1} has no ROINumber; the file "
                "is truncated or corrupt (export or copy it again)"
            )
        name = text(item.get("ROIName", "")).strip()
        num = _roi_number(item.ROINumber)
        if num is None:
            bad_numbers.add(text(item.ROINumber).strip())
            warn(f"{path}: ROI {name!r} has ROINumber {text(item.ROINumber)!r}, not a whole "
                 "number; the ROI and its contours are skipped")
            continue
        if num in structures:
            raise DicomReadError(
                f"{path}: ROINumber {num} is used twice; the file is not a valid RTSTRUCT"
            )
        if not name:
            name = f"ROI_{num}"
            warn(f"{path}: ROI number {num} has no ROIName; called it {name!r}")
        if item.get("ReferencedFrameOfReferenceUID"):
            frames.add(text(item.ReferencedFrameOfReferenceUID))
        structures[num] = Structure(
            name=name,
            number=num,
            generation_algorithm=text(item.get("ROIGenerationAlgorithm", "")) or None,
        )
    if not structures:
        raise DicomReadError(
            f"{path}: none of its {len(ds.StructureSetROISequence)} ROI(s) has a usable "
            "ROINumber; the file is malformed"
        )
    if "RTROIObservationsSequence" not in ds:
        warn(f"{path}: no RTROIObservationsSequence (a required module); ROI types are "
             "unknown. If the file was cut short, export it again")
    for obs in ds.get("RTROIObservationsSequence", []):
        n = _roi_number(obs.get("ReferencedROINumber"))
        if n is not None and n in structures:
            structures[n].interpreted_type = text(obs.get("RTROIInterpretedType", "")) or None

    skipped: dict[str, int] = {}
    origin: dict[int, list[int]] = {n: [] for n in structures}
    for idx, rc in enumerate(ds.get("ROIContourSequence", [])):
        if "ReferencedROINumber" not in rc or text(rc.ReferencedROINumber).strip() == "":
            raise DicomReadError(
                f"{path}: ROIContourSequence item {idx + 1} has no ReferencedROINumber; the "
                "file is truncated or corrupt (export or copy it again)"
            )
        raw = text(rc.ReferencedROINumber).strip()
        n = _roi_number(raw)
        if raw in bad_numbers:
            continue  # its ROI was skipped, with a warning, above
        if n is None or n not in structures:
            warn(f"{path}: ROIContourSequence item refers to unknown ROI number {raw}; skipped")
            continue
        s = structures[n]
        if "ROIDisplayColor" in rc:
            try:
                r, g, b = (int(c) for c in list(rc.ROIDisplayColor)[:3])
                s.color = (r, g, b)
            except (TypeError, ValueError):
                pass
        for ci, c in enumerate(rc.get("ContourSequence", [])):
            gtype = text(c.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
            where = f"{path}: ROI {s.name!r} contour {ci + 1}"
            if gtype != "CLOSED_PLANAR":
                skipped[gtype] = skipped.get(gtype, 0) + 1
                continue
            pts = _contour_points(c, where)
            if pts is None:
                continue
            pts, reason = _check_contour(pts, where)
            if pts is None:
                warn(f"{reason}; skipped")
                continue
            s.contours.append(pts)
            origin[n].append(ci + 1)
    for gtype, count in skipped.items():
        warn(f"{path}: skipped {count} {gtype} contour(s); only CLOSED_PLANAR contours "
             "define volumes")
    for n, s in structures.items():
        warn_contour_problems(s, path, origin[n])
    refs = ds.get("ReferencedFrameOfReferenceSequence", [])
    for r in refs:
        if r.get("FrameOfReferenceUID"):
            frames.add(text(r.FrameOfReferenceUID))
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
        label=text(ds.get("StructureSetLabel", "")) or None,
    )


def _contour_points(c, where: str) -> "np.ndarray | None":
    """ContourData as ``(n, 3)`` floats, or None (with a warning) when unusable."""
    data = c.get("ContourData")
    if data is None or (isinstance(data, (str, bytes)) and not data):
        warn(f"{where}: no ContourData; skipped")
        return None
    vals = data if isinstance(data, (list, tuple, MultiValue)) else [data]
    try:
        arr = np.asarray(vals, dtype=float).ravel()
    except (TypeError, ValueError):
        bad = next((text(v) for v in vals if not _is_number(v)), "?")
        warn(f"{where}: ContourData holds a non-numeric value {bad!r}; skipped")
        return None
    if arr.size % 3:
        warn(f"{where}: ContourData length {arr.size} is not a multiple of 3; skipped")
        return None
    declared = c.get("NumberOfContourPoints")
    if declared not in (None, ""):
        n_decl = _roi_number(declared)
        if n_decl is not None and n_decl != arr.size // 3:
            warn(f"{where}: ContourData holds {arr.size // 3} points but NumberOfContourPoints "
                 f"is {n_decl}; skipped (the contour is corrupt)")
            return None
    if not np.all(np.isfinite(arr)):
        warn(f"{where}: ContourData has non-finite coordinates (NaN or infinity); skipped")
        return None
    big = float(np.max(np.abs(arr))) if arr.size else 0.0
    if big > ABSURD_COORDINATE_MM:
        warn(f"{where}: ContourData has a coordinate of {big:.4g} mm, beyond "
             f"{ABSURD_COORDINATE_MM:g} mm from the origin; skipped (not a patient contour)")
        return None
    return arr.reshape(-1, 3)


def _is_number(v) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


#: Contour problems warned about one by one per ROI; the rest are summed up.
MAX_CONTOUR_WARNINGS = 5


def warn_contour_problems(structure: Structure, source: "str | Path",
                          contour_numbers: "list[int] | None" = None) -> int:
    """Warn about exact duplicate and self-intersecting contours of one ROI.

    One warning per problem names the file, the ROI, the plane (mm) and the
    contour number, up to :data:`MAX_CONTOUR_WARNINGS` per ROI; one more
    warning then counts the rest, so a bad export does not flood the console.

    Parameters
    ----------
    structure : Structure
        Its contours (LPS mm) are checked, not changed.
    source : path or str
        The file named in each warning.
    contour_numbers : list of int, optional
        The number to show for each contour (1-based position in the file's
        ContourSequence); defaults to ``1..n``.

    Returns
    -------
    int
        How many problems were found.
    """
    numbers_ = contour_numbers or list(range(1, len(structure.contours) + 1))
    problems: list[str] = []
    for i, j in duplicate_contours(structure.contours):
        pl = contour_plane(structure.contours[j])
        problems.append(f"{source}: ROI {structure.name!r} contour {numbers_[j]} on plane {pl} "
                        f"repeats contour {numbers_[i]} exactly; kept (an exact duplicate adds "
                        "no volume)")
    for k, c in enumerate(structure.contours):
        hit = self_intersection(c)
        if hit is not None:
            pl = contour_plane(c)
            problems.append(f"{source}: ROI {structure.name!r} contour {numbers_[k]} on plane "
                            f"{pl} crosses itself (edges {hit[0] + 1} and {hit[1] + 1}); kept, "
                            "its area follows the even-odd rule")
    for msg in problems[:MAX_CONTOUR_WARNINGS]:
        warn(msg)
    if len(problems) > MAX_CONTOUR_WARNINGS:
        warn(f"{source}: ROI {structure.name!r} has {len(problems) - MAX_CONTOUR_WARNINGS} more "
             "duplicate or self-intersecting contour(s) not listed; check it in the planning "
             "system")
    return len(problems)
