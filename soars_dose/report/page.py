"""A self-contained HTML report page (plotly.js embedded, works offline; every string escaped).

A page is a list of blocks: :class:`Section` (a heading with escaped HTML,
optionally collapsed), plotly figures and :class:`Widget` (HTML plus a
script run once plotly is loaded). :func:`write_report` adds a table of
contents, inlines plotly.js once (gzip-compressed and base64-encoded, it
is unpacked by the browser's ``DecompressionStream``: 2.0 MB instead of
4.8 MB) and writes the file atomically.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.utils import PlotlyJSONEncoder

from ..errors import OutputExistsError
from ..outputs import atomic_write_file, is_p_value

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#f0f0f0;position:sticky;top:0;z-index:1}
td:first-child,th:first-child{text-align:left;position:sticky;left:0;background:#fafafa;z-index:2}
.scroll{overflow:auto;max-width:100%;max-height:70vh}
.plot{width:100%;height:440px} .note{color:#555;font-size:0.9em}
.headline{font-size:1.05em;line-height:1.5} nav.toc{columns:2;font-size:0.9em}
details{margin:0.6em 0} summary{cursor:pointer;font-weight:600}
.controls{font-size:0.85em;margin:0.3em 0} .controls label{margin-right:0.8em;white-space:nowrap}
fieldset{border:1px solid #ddd;margin:0.2em 0;padding:0.2em 0.5em}
"""

#: Human names (with units) of the columns the tables show.
COLUMN_LABELS = {
    "patient": "Patient", "set": "Set", "roi": "OAR", "roi_original": "ROI name in file",
    "status": "Status", "volume_cc": "Volume (cc)", "volume_in_grid_cc": "Volume in dose grid (cc)",
    "coverage": "Share in dose grid", "mean_gy": "Mean (Gy)", "min_gy": "Min (Gy)",
    "max_gy": "Max (Gy)", "d0_03cc_gy": "D0.03cc (Gy)", "d2_gy": "D2% (Gy)", "d50_gy": "D50% (Gy)",
    "d95_gy": "D95% (Gy)", "d98_gy": "D98% (Gy)", "diff_mean_pct": "Diff mean (%)",
    "diff_max_pct": "Diff max (%)", "diff_mean_gy": "Diff mean (Gy)", "diff_max_gy": "Diff max (Gy)",
    "diff_flag": "Flag", "dice": "Dice", "surface_dice": "Surface Dice",
    "tolerance_mm": "Tolerance (mm)", "hd_mm": "Hausdorff (mm)", "hd95_mm": "HD95 (mm)",
    "asd_mm": "ASD (mm)", "apl_mm": "Added path length (mm)", "volume_ref_cc": "Reference volume (cc)",
    "volume_sub_cc": "Set volume (cc)", "volume_diff_cc": "Volume difference (cc)",
    "volume_diff_pct": "Volume difference (%)", "message": "Message", "metric": "Metric",
    "set_a": "Set A", "set_b": "Set B", "n_pairs": "Pairs", "n_dropped": "Dropped",
    "n_zero": "Zero differences", "median_a": "Median A", "median_b": "Median B",
    "median_diff": "Median difference", "ci_low": "CI low", "ci_high": "CI high",
    "statistic": "Statistic", "p": "p", "p_holm": "p (Holm)", "p_bh": "p (BH)",
    "rank_biserial": "Rank-biserial r", "reason": "Not tested because", "family": "Family",
    "contour_metric": "Contour metric", "dose_metric": "Dose metric", "rho": "Spearman rho",
    "n": "n", "constraint": "Constraint", "limit": "Limit", "unit": "Unit", "source": "Source",
    "reference_value": "Value, reference", "value": "Value", "reference_passed": "Met, reference",
    "passed": "Met", "direction": "Change", "threshold_pct": "Threshold (%)",
    "n_evaluated": "Evaluated", "n_over": "Over threshold", "pct_over": "Over threshold (%)",
}


def escape(text) -> str:
    """Escape for HTML and keep plotly's template syntax out of user strings."""
    return html.escape(str(text)).replace("%{", "% {")


def _decimals(column: str) -> int:
    """Decimals a number of this column means: 0.01 Gy, 0.1 %, 0.01 cc, 0.01 mm."""
    c = column.lower()
    if c.endswith("_pct") or c.endswith("(%)") or c.endswith("pct_over"):
        return 1
    return 2


def _cell(value, decimals: int, p_value: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if p_value:
            return "<0.001" if v < 0.001 else f"{v:.3f}"
        text = f"{v:.{decimals}f}"
        # -0.00 says "negative" of a difference that rounds to nothing
        return text[1:] if text.startswith("-") and float(text) == 0 else text
    return str(value)


def html_table(df: pd.DataFrame, digits: "int | None" = None, *, labels: bool = True,
               caption: str = "") -> str:
    """An HTML table, every cell escaped, numbers rounded to what they mean.

    Gy, cc and mm to two decimals, percentages to one, p-values to three
    (``<0.001`` below). Column names are replaced by :data:`COLUMN_LABELS`
    where known. The table scrolls inside its box (its header row and
    first column stay in place), so no table is wider than the page.

    Parameters
    ----------
    df : DataFrame
    digits : int, optional
        Decimals of every float column (overrides the per-unit rule).
    labels : bool
        Replace known column names by human ones.
    caption : str
        Plain text shown above the table (escaped here).
    """
    cols = list(df.columns)
    head = "".join(f"<th>{escape(COLUMN_LABELS.get(c, c) if labels else c)}</th>" for c in cols)
    dec = [digits if digits is not None else _decimals(str(c)) for c in cols]
    isp = [is_p_value(str(c)) for c in cols]
    rows = []
    for rec in df.itertuples(index=False, name=None):
        rows.append("<tr>" + "".join(f"<td>{escape(_cell(v, d, p))}</td>"
                                     for v, d, p in zip(rec, dec, isp)) + "</tr>")
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return (f"<div class='scroll'><table>{cap}<thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


@dataclass
class Section:
    """A heading and its body (already-escaped HTML); ``collapsed`` folds it into ``<details>``."""

    title: str
    body: str = ""
    collapsed: bool = False
    level: int = 2


@dataclass
class Widget:
    """HTML (already escaped) and a script run once plotly.js is loaded.

    Elements of class ``plot`` in ``body`` count as the page's plots.
    """

    body: str
    script: str = ""


Block = Union[Section, Widget, go.Figure, "tuple[str, str]"]


def json_for_script(obj) -> str:
    """JSON safe inside a ``<script>`` element (``<`` written as ``\\u003c``)."""
    return json.dumps(obj, cls=PlotlyJSONEncoder, separators=(",", ":")).replace("<", "\\u003c")


@functools.lru_cache(maxsize=1)
def _plotly_gz_b64() -> str:
    # mtime=0: the same plotly.js gives the same page bytes
    return base64.b64encode(gzip.compress(get_plotlyjs().encode("utf-8"), 9, mtime=0)).decode()


# Unpacks plotly.js, then runs every figure and widget; sets data-* attributes a headless
# browser test reads (plots expected / rendered, JS errors, milliseconds until rendered).
_LOADER = """
(function(){
function fail(e){window.__errors.push(String(e));
 document.documentElement.setAttribute('data-js-errors',window.__errors.length);}
function finish(){
 var n=document.querySelectorAll('.plot').length;
 document.documentElement.setAttribute('data-plots-expected',n);
 document.documentElement.setAttribute('data-plots-rendered',
  document.querySelectorAll('.plot.js-plotly-plot').length);
 document.documentElement.setAttribute('data-render-ms',Math.round(performance.now()));}
function run(){
 var specs=document.querySelectorAll('script[type="application/json"].figspec');
 specs.forEach(function(el){try{var s=JSON.parse(el.textContent);
  Plotly.newPlot(el.getAttribute('data-for'),s.data,s.layout,{responsive:true});}catch(e){fail(e);}});
 (window.__widgets||[]).forEach(function(w){try{w();}catch(e){fail(e);}});
 finish();}
if(!window.DecompressionStream){document.getElementById('nojs').textContent=
 'This browser cannot unpack the embedded plotly.js (it needs DecompressionStream: '+
 'Chrome 80, Firefox 113, Safari 16.4 or newer); the tables are complete.';finish();return;}
var b=atob(document.getElementById('plotly-gz').textContent),u=new Uint8Array(b.length);
for(var i=0;i<b.length;i++)u[i]=b.charCodeAt(i);
new Response(new Blob([u]).stream().pipeThrough(new DecompressionStream('gzip'))).text()
 .then(function(src){var s=document.createElement('script');s.text=src;
  document.head.appendChild(s);run();}).catch(function(e){fail(e);finish();});
})();
"""


def render_page(title: str, blocks: "list[Block]", *, intro: str = "") -> bytes:
    """The page's bytes: title, ``intro`` (escaped HTML), table of contents, then ``blocks``."""
    toc, parts = [], []
    n_fig = n_sec = 0
    for block in blocks:
        if isinstance(block, tuple):
            block = Section(*block)
        if isinstance(block, go.Figure):
            spec = json_for_script(block.to_plotly_json())
            parts.append(f"<div id='fig{n_fig}' class='plot'></div><script type='application/json'"
                         f" class='figspec' data-for='fig{n_fig}'>{spec}</script>")
            n_fig += 1
        elif isinstance(block, Widget):
            parts.append(block.body)
            if block.script:
                parts.append("<script>(window.__widgets=window.__widgets||[]).push(function(){"
                             f"{block.script}}});</script>")
        else:
            sid = f"s{n_sec}"
            n_sec += 1
            head = f"<h{block.level} id='{sid}'>{escape(block.title)}</h{block.level}>"
            if block.collapsed:
                parts.append(f"<details id='{sid}'><summary>{escape(block.title)}</summary>"
                             f"{block.body}</details>")
            else:
                parts.append(head + block.body)
            if block.level == 2:
                toc.append(f"<li><a href='#{sid}'>{escape(block.title)}</a></li>")
    nav = f"<nav class='toc'><b>Contents</b><ol>{''.join(toc)}</ol></nav>" if len(toc) > 2 else ""
    page = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{escape(title)}</title><style>{_STYLE}</style>",
        # errors are collected in the page itself so a headless browser test can read them
        "<script>window.__errors=[];window.addEventListener('error',function(e){"
        "window.__errors.push(String(e.message));document.documentElement.setAttribute("
        "'data-js-errors',window.__errors.length);});</script></head><body>",
        f"<h1>{escape(title)}</h1><p id='nojs' class='note'></p>", intro, nav, *parts,
        f"<script type='application/octet-stream' id='plotly-gz'>{_plotly_gz_b64()}</script>",
        f"<script>{_LOADER}</script></body></html>",
    ]
    return "".join(page).encode("utf-8")


def write_report(path: "str | Path", *, title: str, blocks: "list[Block]",
                 overwrite: bool = False, intro: str = "") -> Path:
    """Write one HTML file with plotly.js inlined, atomically (temporary name, then rename).

    ``blocks`` are shown in order (see :func:`render_page`); titles are
    escaped here, bodies must already be escaped.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: already exists; pass --overwrite to replace it")
    page = render_page(title, blocks, intro=intro)
    return atomic_write_file(path, lambda f: f.write(page), mode=None)
