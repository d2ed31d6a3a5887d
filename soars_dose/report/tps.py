"""The offline HTML page of ``soars-dose tps-check``: our DVH over the planning system's.

One section per ROI: an overlay of the two cumulative DVHs (cm^3 against
Gy) and the comparison rows with their causes. plotly.js is inlined by
:func:`soars_dose.report.page.write_report` (no CDN); every string
from the files (ROI names above all) is HTML-escaped and kept out of
plotly's template syntax.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..outputs import check_writable, provenance, write_output_dir
from .page import write_report

#: Most points per plotted curve (the page only; the table holds the numbers).
MAX_POINTS = 400


def _esc(text) -> str:
    """HTML-escaped, with plotly's ``%{`` template opener broken."""
    return html.escape(str(text)).replace("%{", "% {")


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if x.size <= MAX_POINTS:
        return x, y
    t = np.linspace(x[0], x[-1], MAX_POINTS)
    return t, np.interp(t, x, y)


def overlay_figure(label: str, ours, theirs) -> go.Figure:
    """Cumulative DVHs (cm^3 vs Gy) of ours and the TPS's for one ROI."""
    fig = go.Figure()
    for dvh, name, dash in ((ours, "soars-dose", "solid"), (theirs, "planning system", "dash")):
        x, y = _thin(np.asarray(dvh.edges_gy, float), np.asarray(dvh.cumulative_cc, float))
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=name, line={"dash": dash},
                                 hovertemplate=f"{name}<br>%{{x:.3f}} Gy, %{{y:.4g}} cc"
                                               "<extra></extra>"))
    fig.update_layout(title=_esc(label), xaxis_title="Dose (Gy)", yaxis_title="Volume (cc)",
                      margin={"l": 60, "r": 10, "t": 40, "b": 40})
    return fig


def _html_table(df: pd.DataFrame) -> str:
    body = df.to_html(index=False, escape=True, na_rep="", border=0,
                      float_format=lambda v: f"{v:.4g}")
    return f"<div class='scroll'>{body}</div>"


def write_tps_page(path: "str | Path", table: pd.DataFrame, curves: dict,
                   messages: list[str], *, title: str = "Planning-system DVH check",
                   overwrite: bool = False) -> Path:
    """Write the page: summary, then per ROI the overlay and its rows.

    Parameters
    ----------
    path : path
        HTML file to write (atomically).
    table : DataFrame
        ``compare_with_tps(...).table``.
    curves : dict
        ``label -> {"ours": DVH, "theirs": DVH, "roi_number": int}``.
    messages : list of str
        What was not compared, shown first.
    """
    cols = ["metric", "unit", "ours", "theirs", "diff", "diff_pct", "tolerance", "cause",
            "detail"]
    flagged = table[table["cause"].fillna("").astype(str) != ""]
    summary = ("<p class='note'>Our DVH (soars-dose kernel, Gy, cc) beside the DVH the planning "
               "system stored in the RTDOSE. A difference above tolerance gets the first cause "
               "that explains it: end caps, clipped (dose grid), bin width, or none of these.</p>")
    summary += f"<p>{len(curves)} ROI(s) compared; {len(flagged)} difference(s) above tolerance.</p>"
    if messages:
        summary += "<ul>" + "".join(f"<li>{_esc(m)}</li>" for m in messages) + "</ul>"
    blocks: list = [("Summary", summary)]
    for label, pair in curves.items():
        blocks.append(overlay_figure(label, pair["ours"], pair["theirs"]))
        rows = table[(table["roi_number"] == pair["roi_number"]) & (table["status"] == "ok")]
        blocks.append((label, _html_table(rows.reindex(columns=cols))))
    others = table[table["status"] != "ok"]
    if len(others):
        blocks.append(("Not compared", _html_table(others.reindex(
            columns=["roi_number", "roi", "status", "note"]))))
    return write_report(path, title=title, blocks=blocks, overwrite=overwrite)


def write_tps_outputs(result, out_dir: "str | Path", *, overwrite: bool = False,
                      command: str = "") -> Path:
    """Write ``tps_check.csv`` / ``.parquet``, ``provenance.json`` and ``tps_check.html``.

    The table and provenance are renamed into place together (see
    :func:`soars_dose.outputs.write_output_dir`), then the page is written
    atomically into the new folder.

    Parameters
    ----------
    result : soars_dose.dose.tps.TPSCheckResult
    out_dir : path
        Folder to create; an existing one is replaced only with ``overwrite``.
    command : str
        The command line, for the provenance.
    """
    out = check_writable(out_dir, overwrite)
    prov = provenance(result.settings, result.inputs, result.messages, command=command,
                      outputs=["tps_check.csv", "tps_check.parquet", "tps_check.html"])
    out = write_output_dir(out, {"tps_check": result.table}, prov, overwrite=overwrite)
    write_tps_page(out / "tps_check.html", result.table, result.curves, result.messages,
                   overwrite=True)
    return out
