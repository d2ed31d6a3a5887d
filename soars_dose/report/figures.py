"""Plotly figures of the reports: DVHs, box and scatter plots (every string escaped)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..case import REFERENCE
from .page import escape


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
        label = escape(f"{roi} ({set_name})")
        fig.add_trace(go.Scatter(
            x=g["dose_gy"], y=g["volume_pct"], mode="lines", name=label,
            legendgroup=escape(roi),
            line={"dash": dashes[sets.index(set_name) % len(dashes)]},
            hovertemplate=f"{label}<br>%{{x:.2f}} Gy, %{{y:.1f}} %{extra}<extra></extra>",
        ))
    fig.update_layout(title=escape(f"DVHs, patient {patient}"), xaxis_title="Dose (Gy)",
                      yaxis_title="Volume (%)", margin={"l": 50, "r": 10, "t": 40, "b": 40})
    return fig


#: Line colours of the sets, reference first.
SET_COLORS = ["#222222", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b"]


def _set_color(sets: list[str], name: str) -> str:
    return SET_COLORS[sets.index(name) % len(SET_COLORS)] if name in sets else "#777777"


def _thin(d: np.ndarray, v: np.ndarray, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` points of a cumulative DVH (linear interpolation; the report only)."""
    if d.size <= n:
        return d, v
    x = np.linspace(d[0], d[-1], n)
    return x, np.interp(x, d, v)


def dvh_patient_figure(dvh: pd.DataFrame, stats: pd.DataFrame, patient: str) -> go.Figure:
    """DVH overlays of all sets for one patient with a drop-down to pick the OAR.

    Hover gives dose, volume and the set's statistics (mean, max, volume,
    and the eq 6/7 differences for substitute sets).
    """
    sets = list(dict.fromkeys(stats["set"])) if len(stats) else list(dict.fromkeys(dvh["set"]))
    rois = list(dict.fromkeys(dvh["roi"]))
    st = stats.set_index(["set", "roi"]) if len(stats) else None
    fig = go.Figure()
    owner = []
    for roi in rois:
        g_roi = dvh[dvh["roi"] == roi]
        for set_name, g in g_roi.groupby("set", sort=False):
            extra = ""
            if st is not None and (set_name, roi) in st.index:
                r = st.loc[(set_name, roi)]
                extra = (f"<br>mean {r['mean_gy']:.2f} Gy, max {r['max_gy']:.2f} Gy, "
                         f"V {r['volume_cc']:.2f} cc")
                if set_name != REFERENCE and pd.notna(r.get("diff_mean_pct", np.nan)):
                    extra += (f"<br>Diff_mean {r['diff_mean_pct']:+.1f} %, "
                              f"Diff_max {r.get('diff_max_pct', np.nan):+.1f} %")
            x, y = _thin(g["dose_gy"].to_numpy(), g["volume_pct"].to_numpy())
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="lines", name=escape(set_name), visible=(roi == rois[0]),
                line={"color": _set_color(sets, set_name),
                      "dash": "solid" if set_name == REFERENCE else "dash"},
                hovertemplate=f"{escape(roi)} ({escape(set_name)})<br>%{{x:.2f}} Gy, "
                              f"%{{y:.1f}} %{extra}<extra></extra>"))
            owner.append(roi)
    buttons = [dict(label=escape(roi), method="update",
                    args=[{"visible": [o == roi for o in owner]},
                          {"title": escape(f"patient {patient}: {roi}")}]) for roi in rois]
    fig.update_layout(
        title=escape(f"patient {patient}: {rois[0] if rois else ''}"),
        xaxis_title="Dose (Gy)", yaxis_title="Volume (%)",
        updatemenus=[dict(buttons=buttons, x=1.0, xanchor="right", y=1.15, yanchor="top")],
        margin={"l": 50, "r": 10, "t": 60, "b": 40})
    return fig


def box_figure(df: pd.DataFrame, value: str, title: str, sets: list[str]) -> go.Figure:
    """Box plots of ``value`` per OAR, one box per set."""
    fig = go.Figure()
    for set_name in sets:
        g = df[df["set"] == set_name]
        if g.empty:
            continue
        vals = g[value].replace([np.inf, -np.inf], np.nan)
        fig.add_trace(go.Box(x=[escape(r) for r in g["roi"]], y=vals, name=escape(set_name),
                             marker_color=_set_color(sets, set_name), boxmean=True))
    fig.update_layout(title=escape(title), boxmode="group", yaxis_title=escape(value),
                      margin={"l": 50, "r": 10, "t": 40, "b": 80})
    return fig


def scatter_figure(df: pd.DataFrame, x: str, y: str, title: str, sets: list[str]) -> go.Figure:
    """Scatter of ``y`` against ``x`` over all OAR instances, one colour per set."""
    fig = go.Figure()
    for set_name in sets:
        g = df[df["set"] == set_name].replace([np.inf, -np.inf], np.nan)
        if g.empty:
            continue
        text = [escape(f"{p} / {r}") for p, r in zip(g["patient"], g["roi"])]
        fig.add_trace(go.Scatter(x=g[x], y=g[y], mode="markers", name=escape(set_name),
                                 text=text, marker={"color": _set_color(sets, set_name)},
                                 hovertemplate="%{text}<br>%{x:.3g}, %{y:.3g}<extra></extra>"))
    fig.update_layout(title=escape(title), xaxis_title=escape(x), yaxis_title=escape(y),
                      margin={"l": 50, "r": 10, "t": 40, "b": 40})
    return fig
