"""What the user is told: options spelled in the interface they used, warning lines.

A message that tells the user what to do names an option. From the
command line that is ``--overwrite``; from Python it is ``overwrite=True``.
The CLI marks its calls with :func:`cli_interface`; library code spells
options through :func:`option`, so one message serves both interfaces and
nothing is rewritten after the fact.
"""

from __future__ import annotations

import contextlib
import contextvars

import pandas as pd

_CLI = contextvars.ContextVar("soars_dose_cli", default=False)


@contextlib.contextmanager
def cli_interface():
    """Inside this block, :func:`option` spells options as command-line flags."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


def in_cli() -> bool:
    """Whether the running call came from the ``soars-dose`` command line."""
    return _CLI.get()


def option(name: str, value: str = "True") -> str:
    """``--name`` on the command line, ``name=value`` from Python.

    Underscores become dashes on the command line (``sum_doses`` ->
    ``--sum-doses``).
    """
    if in_cli():
        return "--" + name.replace("_", "-")
    return f"{name}={value}"


def dedupe(messages) -> list[str]:
    """Messages in first-seen order, each once, blank ones dropped."""
    return [m for m in dict.fromkeys(str(m).strip() for m in messages) if m]


def partial_coverage_line(stats: pd.DataFrame, patient: "str | None" = None) -> "str | None":
    """One line naming the structures only partly inside the dose grid, or None.

    Built from a ``stats`` table: rows with ``status == "partial"`` and
    their ``coverage`` (fraction of the structure's volume inside the dose
    grid, 0-1), shown in percent, e.g. ``P003: 2 structures partly outside
    the dose grid (...): Brainstem (set reference) 87.0 %, Parotid_L (set soars) 95.2 %``.
    """
    if not len(stats) or "status" not in stats.columns:
        return None
    part = stats[stats["status"] == "partial"]
    if not len(part):
        return None
    items = []
    for _, r in part.iterrows():
        cov = r.get("coverage")
        known = cov is not None and pd.notna(cov)
        pct = f"{100 * float(cov):.1f} %" if known else "coverage unknown"
        items.append(f"{r['roi']} (set {r['set']}) {pct}")
    n = len(items)
    head = f"{patient}: " if patient else ""
    return (f"{head}{n} structure{'s' if n > 1 else ''} partly outside the dose grid "
            f"(statistics cover only the part inside): {', '.join(items)}")


def console_messages(messages, stats: pd.DataFrame, patient: "str | None" = None) -> list[str]:
    """The warnings to print for one case: each once, the partial-coverage ones as one line.

    The per-structure notes about a structure only partly inside the dose
    grid (kept in full in provenance.json) are replaced by the single
    :func:`partial_coverage_line`.
    """
    line = partial_coverage_line(stats, patient)
    if line is None:
        return dedupe(messages)
    part = stats[stats["status"] == "partial"]
    names = {repr(str(n)) for col in ("roi", "roi_original") if col in part.columns
             for n in part[col].dropna() if str(n)}

    def about_partial(m: str) -> bool:
        return "dose grid" in m and any(n in m for n in names)

    return [m for m in dedupe(messages) if not about_partial(m)] + [line]
