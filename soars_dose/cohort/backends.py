"""Where the patients run: in this process, a local process pool, or Dask workers."""

from __future__ import annotations

import os
import signal
import uuid
from concurrent.futures import Future
from typing import Any, Iterable

from ..console import in_cli
from ..errors import (
    InputError,
)


class _FutureBackend:
    """What the backends built on :class:`concurrent.futures.Future` share."""

    def cancel(self, futures) -> None:
        for f in futures:
            f.cancel()

    def started(self, fut) -> bool:
        return fut.running()


class SerialBackend(_FutureBackend):
    """Runs each task in this process when its future is collected (``jobs=1``)."""

    description = "in-process (jobs=1)"

    def __init__(self) -> None:
        self._queue: list[tuple[Future, Any, tuple]] = []

    def submit(self, fn, *args) -> Future:
        fut: Future = Future()
        self._queue.append((fut, fn, args))
        return fut

    def as_completed(self, futures: Iterable[Future]):
        wanted = set(map(id, futures))
        for fut, fn, args in self._queue:
            if id(fut) not in wanted or not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except Exception as exc:
                fut.set_exception(exc)
            yield fut

    def close(self, interrupted: bool = False) -> None:
        self._queue.clear()


class PoolBackend(_FutureBackend):
    """A local process pool (spawned processes: safe beside threads, same on every OS)."""

    def __init__(self, jobs: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.description = f"local process pool ({jobs} processes)"
        self._before = {p.pid for p in multiprocessing.active_children()}
        self._ex = ProcessPoolExecutor(max_workers=jobs,
                                       mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_ignore_sigint)

    def submit(self, fn, *args):
        return self._ex.submit(fn, *args)

    def as_completed(self, futures):
        from concurrent.futures import as_completed

        return as_completed(futures)

    def close(self, interrupted: bool = False) -> None:
        import multiprocessing

        if not interrupted:
            self._ex.shutdown(wait=True)
            return
        # Stop now: queued patients are dropped and running ones are ended, so that what
        # the interrupt message reports from the disk afterwards is final.
        self._ex.shutdown(wait=False, cancel_futures=True)
        workers = [p for p in multiprocessing.active_children() if p.pid not in self._before]
        for p in workers:
            p.terminate()
        for p in workers:
            p.join(timeout=10)


class DaskBackend:
    """A Dask distributed cluster: an address, a ``distributed.Client`` or a cluster object."""

    def __init__(self, scheduler) -> None:
        try:
            from distributed import Client
        except ImportError as exc:  # pragma: no cover - a dependency
            raise InputError(f"{'--scheduler' if in_cli() else 'scheduler='} needs "
                             f"dask.distributed ({exc})") from None
        self._own = not isinstance(scheduler, Client)
        if self._own:
            try:
                self.client = Client(scheduler, timeout="30s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise InputError(f"cannot connect to the Dask scheduler {scheduler!r} ({exc}); "
                                 "check the address and that the scheduler is running") from None
        else:
            self.client = scheduler
        self.description = f"dask distributed ({self.client.scheduler.address})"
        self._run = uuid.uuid4().hex[:8]

    def submit(self, fn, task):
        return self.client.submit(fn, task, pure=False,
                                  key=f"soars-patient-{task.row.patient}-{self._run}")

    def as_completed(self, futures):
        from distributed import as_completed

        return as_completed(futures)

    #: Tasks already running on a Dask worker cannot be stopped from here.
    running_may_finish = True

    def cancel(self, futures) -> None:
        try:
            self.client.cancel(list(futures))
        except Exception:  # pragma: no cover - a closing client
            pass

    def started(self, fut) -> bool:
        return fut.status in ("pending", "processing") and not fut.done()

    def close(self, interrupted: bool = False) -> None:
        if self._own:
            self.client.close()


def _ignore_sigint() -> None:
    """Pool workers ignore Ctrl-C: the main process alone decides what stops (see close)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_jobs() -> int:
    """Number of CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


# ============================================================== results
