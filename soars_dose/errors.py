"""One exception family for everything soars-dose refuses to do.

Every message says *which file* was wrong, *what* was wrong with it and
*what to do*; callers in a cohort run catch :class:`SoarsDoseError` per
patient so that one bad case never stops the run.
"""

from __future__ import annotations

import warnings


class SoarsDoseError(Exception):
    """Base class of every error raised on purpose by soars-dose."""


class DicomReadError(SoarsDoseError):
    """A DICOM file is unreadable, of the wrong modality or misses required attributes."""


class CTSeriesChoiceError(DicomReadError):
    """A CT folder holds several series and none, or one it does not hold, was chosen.

    Attributes
    ----------
    directory : str
        The CT folder.
    series : list of str
        One line per series of the folder: SeriesInstanceUID, description,
        slice count, slice thickness and acquisition date.
    requested : str or None
        The SeriesInstanceUID asked for, when it is not in the folder.
    choose_with : str
        How the user picks a series in the interface they used (e.g.
        ``--ct-series UID``), named in the message.
    """

    def __init__(self, directory: str, series: "list[str]", requested: "str | None",
                 choose_with: str) -> None:
        self.directory, self.series = str(directory), list(series)
        self.requested, self.choose_with = requested, choose_with
        listing = "".join(f"\n  {line}" for line in self.series)
        if requested is None:
            head = (f"{directory}: holds {len(self.series)} CT series; choose one with "
                    f"{choose_with} (its SeriesInstanceUID), or give a folder with one series:")
        else:
            head = (f"{directory}: no CT series with SeriesInstanceUID {requested} (given with "
                    f"{choose_with}); the folder holds:")
        super().__init__(head + listing)

    def with_choice(self, choose_with: str) -> "CTSeriesChoiceError":
        """The same error, naming another way to choose (a manifest column, a flag)."""
        return CTSeriesChoiceError(self.directory, self.series, self.requested, choose_with)


class GeometryError(SoarsDoseError):
    """Geometry we cannot handle correctly (oblique planes, irregular grids, ...)."""


class FrameOfReferenceError(GeometryError):
    """Dose, structures or CT do not share one FrameOfReferenceUID."""


class DoseUnitsError(SoarsDoseError):
    """Dose is not in absolute Gy and no prescription was given to scale it."""


class StructureError(SoarsDoseError):
    """A structure is empty, degenerate or lies outside the dose grid.

    ``status`` is the value its (set, ROI) row gets in ``stats``.
    """

    status = "error"


class EmptyStructureError(StructureError):
    """A structure has no contour (or no contour with area)."""

    status = "empty"


class OutsideGridError(StructureError):
    """A structure lies entirely outside the dose grid."""

    status = "outside_grid"


class NameClashError(SoarsDoseError):
    """ROI names that clash or cannot be matched unambiguously."""


class OutputExistsError(SoarsDoseError):
    """An output already exists and ``overwrite`` was not requested."""


class OutputWriteError(SoarsDoseError):
    """An output could not be written (disk full, read-only file system, permissions).

    Attributes
    ----------
    path : str
        The output file or folder.
    errno : int or None
        The operating system's error number (e.g. ``errno.ENOSPC``).
    """

    def __init__(self, message: str, path: str = "", errno: "int | None" = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno


class OutputLockedError(SoarsDoseError):
    """Another live run holds the lock file of an output folder."""


class InputError(SoarsDoseError):
    """A user-supplied argument or file (alias table, manifest...) is invalid."""


class SoarsDoseWarning(UserWarning):
    """Something was skipped or approximated; the result is still usable."""


def warn(message: str) -> None:
    """Emit a :class:`SoarsDoseWarning` attributed to the caller's caller."""
    warnings.warn(message, SoarsDoseWarning, stacklevel=3)


# ---- case and comparison checks (issue 11) ------------------------------------
class SettingsError(InputError):
    """A :class:`~soars_dose.dose.compare.Settings` value is out of range.

    The message names the field and the command-line option that sets it
    (``factor`` / ``--supersample``, ``bin_width_gy`` / ``--bin-width``, ...).
    """


class NoMatchingOARError(StructureError):
    """The reference structure set has no ROI, or none that is a usable OAR."""


class EmptyStructureSetError(StructureError):
    """A structure set holds no ROI at all."""


class ZeroDoseError(SoarsDoseError):
    """The dose is zero everywhere, or inside every structure: every statistic would be 0 Gy."""


class MemoryLimitError(SoarsDoseError):
    """A structure would need more memory to rasterise than the configured limit."""


class TrainingError(SoarsDoseError):
    """A segmentation training run cannot start or continue."""


class ModelFileError(SoarsDoseError):
    """A segmentation model file cannot be used."""


class NotAModelFileError(ModelFileError):
    """The file is not a torch file, or not a soars-dose model."""


class UnsafeModelFileError(ModelFileError):
    """The file holds objects the weights-only loader refuses (possible code execution)."""


class ModelVersionError(ModelFileError):
    """The model file was written in a format version this soars-dose cannot read."""


class NoModelError(SoarsDoseError):
    """No trained segmentation model was given and none is installed."""


class UnknownOARError(InputError, KeyError):
    """A name that is not one of the 42 catalogue OARs (or a category that does not exist)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
