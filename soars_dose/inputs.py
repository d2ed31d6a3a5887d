"""Checks of the paths a user gives as inputs, with messages that say what was expected.

A folder given where a file is wanted, or a file where a folder is
wanted, is the commonest slip on the command line; the operating system
reports both as "no such file" or "Is a directory", which hides the fix.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError


def require_file(path: "str | Path", what: str, *, error: type = InputError,
                 missing: "str | None" = None) -> Path:
    """``path`` as a Path if it is an existing file; otherwise raise ``error`` saying why.

    Parameters
    ----------
    path : path
    what : str
        What the file should be, e.g. ``"a DICOM RTSTRUCT file"`` or
        ``"a CSV manifest file"``.
    error : type
        The :class:`~soars_dose.errors.SoarsDoseError` subclass to raise.
    missing : str, optional
        The message for a path that does not exist (default: ``"PATH: no
        such file (expected WHAT); check the path"``).

    Raises
    ------
    error
        ``path`` is a folder ("is a folder, expected WHAT"), does not exist,
        or is something else (a device, a socket).
    """
    p = Path(path)
    if p.is_dir():
        raise error(f"{p}: is a folder, expected {what}; give the file itself")
    if not p.exists():
        raise error(missing or f"{p}: no such file (expected {what}); check the path")
    if not p.is_file():
        raise error(f"{p}: not a regular file, expected {what}")
    return p


def require_folder(path: "str | Path", what: str, *, error: type = InputError) -> Path:
    """``path`` as a Path if it is an existing folder; otherwise raise ``error`` saying why.

    Raises
    ------
    error
        ``path`` is a file ("is a file, expected WHAT") or does not exist.
    """
    p = Path(path)
    if p.is_dir():
        return p
    if p.exists():
        raise error(f"{p}: is a file, expected {what}; give the folder that holds it")
    raise error(f"{p}: no such folder (expected {what}); check the path")
