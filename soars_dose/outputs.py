"""Atomic, non-clobbering output folders with tidy tables and a provenance JSON."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Mapping

import pandas as pd

from .errors import OutputExistsError


def version() -> str:
    """Installed soars-dose version."""
    try:
        return metadata.version("soars-dose")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_file(path: "str | Path", write) -> Path:
    """Write one file atomically: ``write(f)`` fills a temporary file beside it, then rename.

    A reader never sees a half-written file and a failure leaves no
    temporary file behind. The parent folder is created; the file gets mode
    0644. Whether an existing file may be replaced is the caller's decision.

    Parameters
    ----------
    path : path
    write : callable
        Called with the open binary file object.

    Returns
    -------
    Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def check_writable(out_dir: "str | Path", overwrite: bool) -> Path:
    """Fail early when ``out_dir`` exists and ``overwrite`` is not set."""
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise OutputExistsError(
            f"{out}: already exists; choose another --out or pass --overwrite to replace it"
        )
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder; refusing to replace it")
    return out


def software_versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers."""
    out = {"python": platform.python_version(), "soars-dose": version()}
    for pkg in ("numpy", "scipy", "pandas", "pydicom", "pyarrow", "dicompyler-core"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance(settings: Mapping, inputs: list[dict], messages: list[str], **extra) -> dict:
    """A provenance record: version, time, platform, settings, inputs, messages."""
    return {
        "tool": "soars-dose",
        "version": version(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "software": software_versions(),
        "settings": dict(settings),
        "inputs": inputs,
        "messages": list(messages),
        **extra,
    }


def write_output_dir(
    out_dir: "str | Path",
    tables: Mapping[str, pd.DataFrame],
    provenance_record: Mapping,
    *,
    overwrite: bool = False,
    formats: tuple[str, ...] = ("csv", "parquet"),
) -> Path:
    """Write tables (CSV and Parquet) and ``provenance.json`` into ``out_dir`` atomically.

    Everything is written into a hidden temporary folder beside ``out_dir``
    and renamed into place only when complete, so a crash leaves either
    the old folder or the new one, never a half-written mix.

    Raises
    ------
    OutputExistsError
        ``out_dir`` exists and ``overwrite`` is False.
    """
    out = check_writable(out_dir, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for name, df in tables.items():
            if "csv" in formats:
                df.to_csv(tmp / f"{name}.csv", index=False)
            if "parquet" in formats:
                df.to_parquet(tmp / f"{name}.parquet", index=False)
        with open(tmp / "provenance.json", "w", encoding="utf-8") as f:
            json.dump(provenance_record, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        # mkdtemp makes the folder private; the result follows the user's umask
        os.chmod(tmp, 0o777 & ~_umask())
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
