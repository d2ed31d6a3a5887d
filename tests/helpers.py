"""Small DICOM cases written on the fly for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from soars_dose.dicom.write import write_rtdose, write_rtstruct
from soars_dose.grid import Grid
from soars_dose.structures import Structure

FOR = "1.2.826.0.1.3680043.8.498.77"


def disc_stack(cx, cy, r, z0, z1, dz=2.0, n=48):
    """Contours of a z-cylinder of radius r (mm) from z0 to z1 (plane positions)."""
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [np.c_[cx + r * np.cos(th), cy + r * np.sin(th), np.full(n, z)]
            for z in np.arange(z0, z1 + 1e-9, dz)]


def small_grid() -> Grid:
    return Grid(shape=(20, 30, 30), spacing=(2.5, 2.5, 2.5), origin=(-36.25, -36.25, -23.75))


def gradient_dose(grid: Grid) -> np.ndarray:
    """10 + 0.5 Gy/mm along x, >= 0 on the grid."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    xyz = grid.index_to_world(np.stack([k, j, i], -1).reshape(-1, 3))
    return (30.0 + 0.5 * xyz[:, 0]).reshape(grid.shape)


def write_case(folder: Path, structures: dict[str, list[Structure]], *, dose=None,
               grid: Grid | None = None, frame=FOR, **dose_kw) -> dict[str, Path]:
    """Write an RTDOSE and one RTSTRUCT per entry; returns paths by name (+ 'rtdose')."""
    folder.mkdir(parents=True, exist_ok=True)
    grid = grid or small_grid()
    dose = gradient_dose(grid) if dose is None else dose
    paths = {"rtdose": folder / "rd.dcm"}
    write_rtdose(dose, grid, paths["rtdose"], frame_of_reference_uid=frame, **dose_kw)
    for name, sts in structures.items():
        paths[name] = folder / f"rs_{name}.dcm"
        write_rtstruct(sts, paths[name], frame_of_reference_uid=frame)
    return paths


def oars(shift_x: float = 0.0, names=("Parotid_L", "SpinalCord")) -> list[Structure]:
    """Two OAR-like cylinders; ``shift_x`` moves them (mm)."""
    return [
        Structure(names[0], 1, disc_stack(-10 + shift_x, 0, 6, -8, 8)),
        Structure(names[1], 2, disc_stack(12 + shift_x, 5, 4, -10, 10)),
    ]


def write_ct_folder(folder: Path, series: list[dict], grid: Grid | None = None) -> list[str]:
    """Write several CT series into one folder (one sub-folder each); their UIDs in order.

    Each dict may give ``description``, ``acquisition_date``, ``series_date``
    (DICOM ``YYYYMMDD``) and ``thickness`` (mm: the slice step and SliceThickness).
    """
    import pydicom

    from soars_dose.dicom.write import write_ct_series

    base = grid or small_grid()
    uids = []
    for n, spec in enumerate(series, start=1):
        step = float(spec.get("thickness", base.spacing[0]))
        g = Grid(shape=(max(2, int(round(base.shape[0] * base.spacing[0] / step))),
                        *base.shape[1:]), spacing=(step, *base.spacing[1:]), origin=base.origin)
        info = write_ct_series(np.zeros(g.shape, np.int16), g, folder / f"s{n}", patient_id="P",
                               frame_of_reference_uid=FOR, series_number=n)
        for p in info.paths:
            ds = pydicom.dcmread(p)
            ds.SeriesDescription = spec.get("description", "")
            ds.AcquisitionDate = spec.get("acquisition_date", "")
            ds.SeriesDate = spec.get("series_date", "")
            ds.save_as(p)
        uids.append(info.series_uid)
    return uids


def write_rtplan(path: Path, targets=(("TARGET", "70", "PTV70"),), *, fractions="35",
                 frame: "str | None" = FOR, sop_class: str = "1.2.840.10008.5.1.4.1.1.481.5",
                 modality: str = "RTPLAN") -> Path:
    """Write a minimal RTPLAN: one DoseReferenceSequence item per ``(type, dose, description)``.

    ``dose`` is the TargetPrescriptionDose text (Gy; None leaves it out), written
    into the file as it is, also text pydicom would refuse (``"abc"``, ``"nan"``);
    ``targets=None`` leaves out DoseReferenceSequence; ``fractions`` is
    NumberOfFractionsPlanned of one fraction group (None: no FractionGroupSequence).
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.RTPlanLabel = modality, "P", "plan 1"
    if frame is not None:
        ds.FrameOfReferenceUID = frame
    raw: dict[str, str] = {}
    if targets is not None:
        items = []
        for n, (kind, dose, desc) in enumerate(targets, start=1):
            item = Dataset()
            item.DoseReferenceNumber = n
            item.DoseReferenceStructureType = "VOLUME"
            item.DoseReferenceDescription = desc
            item.DoseReferenceType = kind
            if dose is not None:  # TargetPrescriptionDose: the text patched in below
                width = max(12, len(dose) + len(dose) % 2)
                marker = "98765432" + str(n).zfill(width - 8)
                raw[marker] = dose.ljust(width)
                item.add_new(0x300A0026, "DS", marker)
            items.append(item)
        ds.DoseReferenceSequence = Sequence(items)
    if fractions is not None:
        group = Dataset()
        group.FractionGroupNumber = 1
        group.NumberOfFractionsPlanned = fractions
        ds.FractionGroupSequence = Sequence([group])
    path.parent.mkdir(parents=True, exist_ok=True)
    with pydicom.config.disable_value_validation():
        ds.save_as(path, enforce_file_format=True)
    if raw:
        data = path.read_bytes()
        for marker, value in raw.items():
            data = data.replace(marker.encode(), value.encode(), 1)
        path.write_bytes(data)
    return path


def run_cli(*args, timeout: int = 600):
    """``python -m soars_dose.cli.main ARGS`` in a subprocess (this checkout first on the path)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "soars_dose.cli.main", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)
