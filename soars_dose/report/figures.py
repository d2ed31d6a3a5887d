"""Plotly figures of the reports: DVHs, DVH bands, box and scatter plots (every string escaped).

The per-patient DVH view (:func:`dvh_widget`) is a small script over one
shared data object: each curve is stored once (cc on a uniform dose step)
and the page converts it to % volume or % of prescription on request, so
switching axes or OARs costs no extra bytes.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..analysis.dvh_bands import dvh_bands
from ..case import REFERENCE
from .page import Widget, escape, json_for_script

#: Line colours of the sets, reference first.
SET_COLORS = ["#222222", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b"]
#: Human axis titles of the metrics the figures plot.
AXIS_TITLES = {"abs_diff_mean_pct": "|Diff mean| (%)", "abs_diff_max_pct": "|Diff max| (%)",
               "diff_mean_pct": "Diff mean (%)", "diff_max_pct": "Diff max (%)",
               "dice": "Dice", "hd95_mm": "HD95 (mm)", "asd_mm": "ASD (mm)",
               "surface_dice": "Surface Dice"}
#: Most points per DVH curve on a page (the tables hold every point).
MAX_POINTS = 400


def _set_color(sets: list[str], name: str) -> str:
    return SET_COLORS[sets.index(name) % len(SET_COLORS)] if name in sets else "#777777"


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _thin(d: np.ndarray, v: np.ndarray, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` points of a cumulative DVH (linear interpolation; the report only)."""
    if d.size <= n:
        return d, v
    x = np.linspace(d[0], d[-1], n)
    return x, np.interp(x, d, v)


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
        label = escape(f"{roi} ({set_name})")
        x, y = _thin(g["dose_gy"].to_numpy(), g["volume_pct"].to_numpy())
        fig.add_trace(go.Scatter(
            x=np.round(x, 2), y=np.round(y, 2), mode="lines", name=label,
            legendgroup=escape(roi), line={"dash": dashes[sets.index(set_name) % len(dashes)]},
            hovertemplate=f"{label}<br>%{{x:.2f}} Gy, %{{y:.1f}} %{extra}<extra></extra>"))
    fig.update_layout(title=escape(f"DVHs, patient {patient}"), xaxis_title="Dose (Gy)",
                      yaxis_title="Volume (%)", margin={"l": 50, "r": 10, "t": 40, "b": 40})
    return fig


# ------------------------------------------------------------------ DVH widget
_DVH_JS = r"""
window.soarsDVH=window.soarsDVH||function(id,D){
 var div=document.getElementById(id);
 function checked(n){return Array.prototype.slice.call(
   document.querySelectorAll('input[name="'+n+'"]:checked')).map(function(e){return e.value;});}
 function draw(){
  var rois=checked(D.names.roi).map(Number),vu=checked(D.names.vol)[0]||'pct',
      du=checked(D.names.dose)[0]||'gy',f=(du==='pct'&&D.rx)?100/D.rx:1,
      xu=f===1?'Gy':'% of prescription',yu=vu==='cc'?'cc':'%',traces=[],shapes=[],ann=[];
  D.curves.forEach(function(c){var k=rois.indexOf(c.r);if(k<0)return;
   var x=[],y=[];for(var i=0;i<c.cc.length;i++){x.push(i*c.s*f);
    y.push(vu==='cc'?c.cc[i]:c.cc[i]*100/c.v);}
   var name=D.rois[c.r]+' ('+D.sets[c.k]+')';
   traces.push({x:x,y:y,mode:'lines',name:name,legendgroup:String(c.r),
    line:{color:D.colors[c.k],dash:['solid','dash','dot','dashdot','longdash'][k%5],
          width:c.k===0?2.5:1.8},
    hovertemplate:name+'<br>%{x:.2f} '+xu+', %{y:.2f} '+yu+c.h+'<extra></extra>'});});
  rois.forEach(function(r){(D.cons[r]||[]).forEach(function(q){
   var y=vu==='cc'?q.cc:q.pct;
   if(q.pct!==null&&q.cc===null&&vu==='cc'&&D.refvol[r])y=q.pct*D.refvol[r]/100;
   if(q.cc!==null&&q.pct===null&&vu!=='cc'&&D.refvol[r])y=q.cc*100/D.refvol[r];
   if(y===null||y===undefined){
    shapes.push({type:'line',x0:q.x*f,x1:q.x*f,yref:'paper',y0:0,y1:1,
                 line:{color:'#b00',dash:'dot',width:1}});
    ann.push({x:q.x*f,yref:'paper',y:1,text:q.label,showarrow:false,textangle:-90,
              xanchor:'right',yanchor:'top',font:{size:10,color:'#b00'}});
   }else{traces.push({x:[q.x*f],y:[y],mode:'markers',name:q.label,showlegend:false,
     marker:{symbol:'x',size:11,color:'#b00'},hovertemplate:q.label+'<extra></extra>'});}});});
  var t=D.title+': '+(rois.length?rois.map(function(r){return D.rois[r];}).join(', '):'no OAR chosen');
  Plotly.react(div,traces,{title:{text:t},xaxis:{title:{text:'Dose ('+xu+')'}},
   yaxis:{title:{text:'Volume ('+yu+')'},rangemode:'tozero'},shapes:shapes,annotations:ann,
   margin:{l:60,r:10,t:50,b:45},legend:{font:{size:10}}},{responsive:true});}
 document.getElementById(id+'-ctl').addEventListener('change',draw);draw();};
"""

_CONSTRAINT_RE = re.compile(r"^(?:d(?P<d>\d+(?:_\d+)?)(?P<dcc>cc)?_gy|"
                            r"v(?P<v>\d+(?:_\d+)?)gy_(?P<vu>pct|cc)|(?P<pt>mean|max|min)_gy)$")


def constraint_marks(constraints, roi: str) -> list[dict]:
    """Where each constraint of ``roi`` sits on a DVH: dose ``x`` and a volume (% or cc) or none.

    ``d2_gy < 54``: the point (54 Gy, 2 %); ``d0_03cc_gy``: (limit, 0.03 cc);
    ``v30gy_pct < 50``: (30 Gy, 50 %); ``max_gy``/``mean_gy``: a vertical
    line at the limit.
    """
    marks = []
    for c in constraints or ():
        if c.roi != roi:
            continue
        m = _CONSTRAINT_RE.match(c.metric)
        if not m:
            continue
        pct = cc = None
        if m["d"] is not None:
            x, amount = c.limit, float(m["d"].replace("_", "."))
            cc, pct = (amount, None) if m["dcc"] else (None, amount)
        elif m["v"] is not None:
            x = float(m["v"].replace("_", "."))
            cc, pct = (c.limit, None) if m["vu"] == "cc" else (None, c.limit)
        else:
            x = c.limit
        marks.append({"x": x, "pct": pct, "cc": cc, "label": escape(c.label)})
    return marks


def _uniform(d: np.ndarray, v: np.ndarray) -> tuple[float, np.ndarray]:
    """The curve on a uniform dose step from 0 (the table's step, or coarser for long curves)."""
    if d.size < 2:
        return 1.0, v.astype(float)
    step = float(np.median(np.diff(d)))
    step = max(step, float(d[-1]) / MAX_POINTS)
    axis = np.arange(int(np.ceil(d[-1] / step - 1e-9)) + 1) * step
    return step, np.interp(axis, d, v, right=0.0)


def _hover(r) -> str:
    text = (f"<br>mean {r['mean_gy']:.2f} Gy, max {r['max_gy']:.2f} Gy, "
            f"D0.03cc {r.get('d0_03cc_gy', np.nan):.2f} Gy, V {r['volume_cc']:.2f} cc")
    if r["set"] != REFERENCE and pd.notna(r.get("diff_mean_pct", np.nan)):
        text += f"<br>Diff mean {r['diff_mean_pct']:+.1f} %"
    if r["set"] != REFERENCE and pd.notna(r.get("diff_max_pct", np.nan)):
        text += f", Diff max {r['diff_max_pct']:+.1f} %"
    return text


def dvh_widget(dvh: pd.DataFrame, stats: pd.DataFrame, *, title: str, uid: str = "dvh",
               constraints=None, prescription_gy: "float | None" = None) -> Widget:
    """The DVH view of one patient: every set overlaid, any OARs at once, axis units switchable.

    Check boxes choose the OARs (several at once; the title names them),
    radio buttons switch volume between % and cc and dose between Gy and
    % of prescription (when ``prescription_gy`` is known). Each chosen
    OAR's constraints are marked (see :func:`constraint_marks`).

    Parameters
    ----------
    dvh, stats : DataFrame
        One patient's ``dvh`` and ``stats`` tables.
    title : str
        Plain text (escaped here).
    uid : str
        Element id, unique on the page (letters, digits, ``-``).
    constraints : list of Constraint, optional
    prescription_gy : float, optional
    """
    sets = list(dict.fromkeys([*stats.get("set", pd.Series(dtype=str)), *dvh["set"]]))
    rois = list(dict.fromkeys(dvh["roi"]))
    st = {(r["set"], r["roi"]): r for r in stats.to_dict("records")} if len(stats) else {}
    curves, refvol = [], {}
    for (roi, set_name), g in dvh.groupby(["roi", "set"], sort=False):
        d, cc, pct = (g[c].to_numpy(float) for c in ("dose_gy", "volume_cc", "volume_pct"))
        i = int(np.argmax(pct > 0)) if (pct > 0).any() else -1
        vol = float(cc[i] * 100 / pct[i]) if i >= 0 else 1.0
        step, u = _uniform(d, cc)
        r = rois.index(roi)
        if set_name == REFERENCE:
            refvol[r] = round(vol, 4)
        rec = st.get((set_name, roi))
        curves.append({"r": r, "k": sets.index(set_name), "s": round(step, 6), "v": round(vol, 4),
                       "cc": np.round(u, 3 if vol < 100 else 1).tolist(),
                       "h": _hover(rec) if rec is not None else ""})
    names = {"roi": f"{uid}-roi", "vol": f"{uid}-vol", "dose": f"{uid}-dose"}
    data = {"title": escape(title), "sets": [escape(s) for s in sets],
            "colors": [_set_color(sets, s) for s in sets], "rois": [escape(r) for r in rois],
            "curves": curves, "refvol": refvol,
            "rx": float(prescription_gy) if prescription_gy else None,
            "cons": {i: constraint_marks(constraints, r) for i, r in enumerate(rois)},
            "names": names}
    boxes = "".join(f"<label><input type='checkbox' name='{names['roi']}' value='{i}'"
                    f"{' checked' if i == 0 else ''}>{escape(r)}</label>" for i, r in enumerate(rois))
    rx_off = "" if prescription_gy else " disabled title='no prescription known'"
    controls = (
        f"<div class='controls' id='{uid}-ctl'><fieldset><legend>OARs</legend>{boxes}</fieldset>"
        f"<label><input type='radio' name='{names['vol']}' value='pct' checked>volume %</label>"
        f"<label><input type='radio' name='{names['vol']}' value='cc'>volume cc</label>"
        f"<label><input type='radio' name='{names['dose']}' value='gy' checked>dose Gy</label>"
        f"<label><input type='radio' name='{names['dose']}' value='pct'{rx_off}>"
        f"dose % of prescription</label></div>")
    body = f"{controls}<div id='{uid}' class='plot'></div>"
    script = f"{_DVH_JS}\nwindow.soarsDVH('{uid}',{json_for_script(data)});"
    return Widget(body=body, script=script)


# ------------------------------------------------------------------ DVH bands
def dvh_band_figure(dvh: pd.DataFrame, sets: list[str], *, step_gy: float = 0.5,
                    title: str = "DVH bands across the cohort") -> go.Figure:
    """Per OAR (drop-down), every set's median DVH with its 25-75 % and 5-95 % bands.

    The bands come from :func:`soars_dose.analysis.dvh_bands.dvh_bands` on
    a common dose axis; the drop-down keeps the title naming the OAR.
    """
    bands = dvh_bands(dvh, step_gy=step_gy)
    fig = go.Figure()
    rois = list(dict.fromkeys(bands["roi"]))
    owner: list[str] = []
    for roi in rois:
        b_roi = bands[bands["roi"] == roi]
        top = b_roi.loc[b_roi["p95"] > 0, "dose_gy"].max()
        b_roi = b_roi[b_roi["dose_gy"] <= (top if pd.notna(top) else 0) + step_gy]
        for set_name in [s for s in sets if s in set(b_roi["set"])]:
            b = b_roi[b_roi["set"] == set_name]
            color, x, vis = _set_color(sets, set_name), b["dose_gy"].round(2), roi == rois[0]
            n = int(b["n"].iloc[0])
            label = escape(f"{set_name} (n {n})")
            for lo, hi, alpha, what in (("p5", "p95", 0.10, "5-95 %"), ("p25", "p75", 0.25, "25-75 %")):
                fig.add_trace(go.Scatter(x=x, y=b[lo].round(1), mode="lines", line={"width": 0},
                                         legendgroup=label, showlegend=False, visible=vis,
                                         hoverinfo="skip"))
                fig.add_trace(go.Scatter(x=x, y=b[hi].round(1), mode="lines", line={"width": 0},
                                         fill="tonexty", fillcolor=_rgba(color, alpha),
                                         legendgroup=label, showlegend=False, visible=vis,
                                         hoverinfo="skip", name=f"{label} {what}"))
            fig.add_trace(go.Scatter(x=x, y=b["p50"].round(1), mode="lines", name=label,
                                     legendgroup=label, visible=vis, line={"color": color},
                                     hovertemplate=f"{label} median<br>%{{x:.2f}} Gy, "
                                                   "%{y:.1f} %<extra></extra>"))
            owner += [roi] * 5
    buttons = [dict(label=escape(roi), method="update",
                    args=[{"visible": [o == roi for o in owner]},
                          {"title.text": escape(f"{title}: {roi}")}]) for roi in rois]
    fig.update_layout(
        title={"text": escape(f"{title}: {rois[0] if rois else ''}")},
        xaxis_title="Dose (Gy)", yaxis_title="Volume (%)",
        updatemenus=[dict(buttons=buttons, x=1.0, xanchor="right", y=1.15, yanchor="top")],
        margin={"l": 50, "r": 10, "t": 60, "b": 40})
    return fig


# ------------------------------------------------------------------ box and scatter
def box_figure(df: pd.DataFrame, value: str, title: str, sets: list[str]) -> go.Figure:
    """Box plots of ``value`` per OAR, one box per set."""
    fig = go.Figure()
    for set_name in sets:
        g = df[df["set"] == set_name]
        if g.empty:
            continue
        vals = g[value].replace([np.inf, -np.inf], np.nan).round(3)
        fig.add_trace(go.Box(x=[escape(r) for r in g["roi"]], y=vals, name=escape(set_name),
                             marker_color=_set_color(sets, set_name), boxmean=True))
    fig.update_layout(title=escape(title), boxmode="group",
                      yaxis_title=escape(AXIS_TITLES.get(value, value)),
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
        fig.add_trace(go.Scatter(x=g[x].round(3), y=g[y].round(3), mode="markers",
                                 name=escape(set_name), text=text,
                                 marker={"color": _set_color(sets, set_name)},
                                 hovertemplate="%{text}<br>%{x:.3g}, %{y:.3g}<extra></extra>"))
    fig.update_layout(title=escape(title), xaxis_title=escape(AXIS_TITLES.get(x, x)),
                      yaxis_title=escape(AXIS_TITLES.get(y, y)),
                      margin={"l": 50, "r": 10, "t": 40, "b": 40})
    return fig
