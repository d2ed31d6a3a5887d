"""The ``cohort.lock`` of a cohort folder: one run at a time, stale locks taken over."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path

from ..errors import (
    OutputLockedError,
)
from .manifest import LOCK_FILE, out_option


def acquire_lock(out: Path, command: str = "") -> Path:
    """Take ``out/cohort.lock`` for this process, or refuse when a live run holds it.

    A lock whose PID no longer runs on this host is stale: it is taken over
    with a warning. Returns the lock path (give it to :func:`release_lock`).

    Raises
    ------
    OutputLockedError
        Another live run (or a run on another host, or an unreadable lock) holds it.
    """
    import socket
    from datetime import datetime, timezone

    from ..errors import warn

    path = out / LOCK_FILE
    doc = {"pid": os.getpid(), "host": socket.gethostname(),
           "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": command, "token": uuid.uuid4().hex}
    for _ in range(3):
        if _create_exclusive(path, json.dumps(doc, indent=2)):
            return path
        holder = _read_lock(path)
        if holder is None:
            if not path.exists():
                continue  # released meanwhile
            raise OutputLockedError(
                f"{path}: a lock file that cannot be read holds this output folder; if no other "
                f"soars-dose cohort run uses {out}, delete {path} and rerun")
        who = (f"PID {holder.get('pid')} on host {holder.get('host')!r}, started "
               f"{holder.get('started_utc')}, command: {holder.get('command') or '?'}")
        if holder.get("host") == doc["host"] and not _pid_alive(holder.get("pid")):
            warn(f"{path}: taking over a stale lock ({who}): that process no longer runs")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
        where = ("" if holder.get("host") == doc["host"] else
                 " (on another host, so its liveness cannot be checked from here)")
        raise OutputLockedError(
            f"{out}: another soars-dose cohort run is using this output folder ({who}){where}; "
            f"wait for it to finish or choose another {out_option()}; if that run "
            f"is gone, delete {path}")
    raise OutputLockedError(f"{path}: could not take the lock (another run keeps taking it); "
                            "retry when the other run has finished")


def release_lock(path: Path) -> None:
    """Remove the lock at ``path`` if this process still holds it."""
    holder = _read_lock(path)
    if holder is not None and holder.get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists; never shows a half-written lock."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_text(text, encoding="utf-8")
    try:
        os.link(tmp, path)  # atomic, and fails when the lock exists
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links
        try:
            with open(path, "x", encoding="utf-8") as f:
                f.write(text)
            return True
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _read_lock(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _pid_alive(pid) -> bool:
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:
        return True
    return True
