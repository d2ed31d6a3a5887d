"""A self-contained HTML report (plotly.js embedded, works offline; every string escaped)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.utils import PlotlyJSONEncoder

from ..errors import OutputExistsError
from ..outputs import atomic_write_file

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:0.85em;margin:1em 0}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}
.scroll{overflow-x:auto;max-width:100%}
th{background:#f0f0f0} td:first-child,th:first-child{text-align:left}
.plot{width:100%;height:420px} .note{color:#555;font-size:0.9em}
"""


def html_table(df: pd.DataFrame, digits: int = 2) -> str:
    """HTML table with every cell escaped (pandas escapes with ``escape=True``)."""
    body = df.to_html(index=False, escape=True, float_format=lambda v: f"{v:.{digits}f}",
                      na_rep="", border=0)
    return f"<div class='scroll'>{body}</div>"


def escape(text) -> str:
    """Escape for HTML and keep plotly's template syntax out of user strings."""
    return html.escape(str(text)).replace("%{", "% {")


def write_report(path: "str | Path", *, title: str,
                 blocks: "list[tuple[str, str] | go.Figure]", overwrite: bool = False) -> Path:
    """Write one HTML file with plotly.js inlined.

    ``blocks`` are shown in order: ``(title, html_body)`` sections (the
    title is escaped here; the body must already be escaped) or plotly
    figures. The file is written to a temporary name and renamed into place.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: already exists; pass --overwrite to replace it")
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>",
        # errors are collected in the page itself so a headless browser test can read them
        "<script>window.__errors=[];window.addEventListener('error',function(e){"
        "window.__errors.push(String(e.message));document.documentElement.setAttribute("
        "'data-js-errors',window.__errors.length);});</script>",
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    n = 0
    for block in blocks:
        if isinstance(block, go.Figure):
            spec = json.dumps(block.to_plotly_json(), cls=PlotlyJSONEncoder)
            # '</' inside a JSON string would end the script element
            spec = spec.replace("</", "<\\/")
            parts.append(f"<div id='fig{n}' class='plot'></div><script>(function(){{var s={spec};"
                         f"Plotly.newPlot('fig{n}',s.data,s.layout,{{responsive:true}});}})();</script>")
            n += 1
        else:
            head, body = block
            parts.append(f"<h2>{html.escape(head)}</h2>{body}")
    parts.append(f"<script>document.documentElement.setAttribute('data-plots-expected',{n});"
                 "document.documentElement.setAttribute('data-plots-rendered',"
                 "document.querySelectorAll('.js-plotly-plot .main-svg').length>0?"
                 "document.querySelectorAll('.js-plotly-plot').length:0);</script>")
    parts.append("</body></html>")
    page = "".join(parts).encode("utf-8")
    return atomic_write_file(path, lambda f: f.write(page), mode=None)
