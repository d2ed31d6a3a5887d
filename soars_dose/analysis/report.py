"""A self-contained HTML report (plotly.js embedded, works offline; every string escaped)."""

from __future__ import annotations

import html
import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.utils import PlotlyJSONEncoder

from ..case import REFERENCE
from ..errors import OutputExistsError

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:0.85em;margin:1em 0}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f0f0f0} td:first-child,th:first-child{text-align:left}
.plot{width:100%;height:420px} .note{color:#555;font-size:0.9em}
"""


def _table(df: pd.DataFrame, digits: int = 2) -> str:
    """HTML table with every cell escaped (pandas escapes with ``escape=True``)."""
    return df.to_html(index=False, escape=True, float_format=lambda v: f"{v:.{digits}f}",
                      na_rep="", border=0)


def dvh_figure(dvh: pd.DataFrame, stats: pd.DataFrame, patient: str) -> go.Figure:
    """Cumulative DVH overlays of every set for one patient; hover shows the set's statistics."""
    fig = go.Figure()
    dashes = ["solid", "dash", "dot", "dashdot", "longdash"]
    sets = list(dict.fromkeys(dvh["set"]))
    st = stats.set_index(["set", "roi"])
    for (set_name, roi), g in dvh.groupby(["set", "roi"], sort=False):
        s = st.loc[(set_name, roi)] if (set_name, roi) in st.index else None
        extra = ""
        if s is not None:
            extra = (f"<br>mean {s['mean_gy']:.2f} Gy, max {s['max_gy']:.2f} Gy, "
                     f"V {s['volume_cc']:.2f} cc")
            if set_name != REFERENCE and pd.notna(s.get("diff_mean_pct")):
                extra += f"<br>Diff_mean {s['diff_mean_pct']:+.1f} %"
        # escaped for HTML; '%{' would start a plotly template field
        label = html.escape(f"{roi} ({set_name})").replace("%{", "% {")
        fig.add_trace(go.Scatter(
            x=g["dose_gy"], y=g["volume_pct"], mode="lines", name=label,
            legendgroup=html.escape(str(roi)),
            line={"dash": dashes[sets.index(set_name) % len(dashes)]},
            hovertemplate=f"{label}<br>%{{x:.2f}} Gy, %{{y:.1f}} %{extra}<extra></extra>",
        ))
    fig.update_layout(title=html.escape(f"DVHs, patient {patient}"), xaxis_title="Dose (Gy)",
                      yaxis_title="Volume (%)", margin={"l": 50, "r": 10, "t": 40, "b": 40})
    return fig


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
    parts.append("</body></html>")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(parts))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
