"""The slice viewer: CT, dose wash, isodose lines and every set's contours of one OAR.

Axial, coronal and sagittal views of :class:`~soars_dose.report.slices.SliceData`,
drawn on canvases by a small script (no plotly, works offline). Display
conventions (radiological): the patient's right on the image's left;
anterior up in the axial view; superior up in the coronal and sagittal
views, anterior on the left in the sagittal one. Pixels are drawn at their
physical aspect ratio.

Controls: the OAR (jumps to its centroid), a CT window (presets and
level/width in HU), the dose wash's opacity and lowest dose (Gy), the
isodose lines, each set's contours on or off, and per view a slice slider
with buttons to the OAR's centroid and to the slices where the sets
disagree most. Beside it, the OAR's numbers for each set.

Contours are the outlines of the masks of :mod:`soars_dose.report.slices`
(pixel edges: what is drawn is exactly what was rasterised, on the DVH's
geometry). The data travel as one gzip-compressed, base64-encoded block
(:func:`~soars_dose.report.slices.page_block`: CT numbers as 8-bit
codes, 3 HU apart in soft tissue; dose in 0.1 Gy steps; bit-packed masks) unpacked by the browser's
``DecompressionStream``. For tests, the viewer's root element carries
``data-ready``, ``data-ready-ms`` (``performance.now()`` when first drawn), ``data-oar``, ``data-slice-axial`` (``-coronal``,
``-sagittal``) and ``data-draws``.
"""

from __future__ import annotations

import base64
import gzip
import math

import pandas as pd

from ..case import REFERENCE
from .page import Widget, escape, json_for_script
from .slices import (
    DOSE_OUTSIDE,
    HU_KNOTS,
    PAGE_DOSE_STEP_GY,
    SliceData,
    header,
    page_block,
)

#: Contour colours of the sets on CT, reference first (bright on grey).
SLICE_COLORS = ["#ffd400", "#00d5ff", "#5cff3a", "#ff3fd2", "#ff8c1a", "#b08cff", "#ffffff"]
#: Isodose levels, % of the dose reference (prescription, else the crop's maximum).
ISODOSE_PCT = [30, 50, 70, 90, 95, 100]
#: Numbers shown per set beside the views (stats / contour-metric columns).
NUMBER_COLUMNS = [("volume_cc", "Volume (cc)", 2), ("mean_gy", "Mean (Gy)", 2),
                  ("max_gy", "Max (Gy)", 2), ("d0_03cc_gy", "D0.03cc (Gy)", 2),
                  ("diff_mean_gy", "Diff mean (Gy)", 2), ("diff_mean_pct", "Diff mean (%)", 1),
                  ("diff_max_gy", "Diff max (Gy)", 2), ("diff_max_pct", "Diff max (%)", 1),
                  ("dice", "Dice", 2), ("hd95_mm", "HD95 (mm)", 2)]

_JS = r"""
window.soarsSlices=window.soarsSlices||function(id,H,b64){
var root=document.getElementById(id),q=function(s){return root.querySelector(s);};
function fail(e){(window.__errors=window.__errors||[]).push(String(e));
 document.documentElement.setAttribute('data-js-errors',window.__errors.length);}
var b=atob(b64),u=new Uint8Array(b.length);for(var i=0;i<b.length;i++)u[i]=b.charCodeAt(i);
new Response(new Blob([u]).stream().pipeThrough(new DecompressionStream('gzip'))).arrayBuffer()
.then(function(buf){try{start(buf);}catch(e){fail(e);}}).catch(fail);
function start(buf){
 var nz=H.shape[0],ny=H.shape[1],nx=H.shape[2],n=nz*ny*nx,dz=H.spacing[0],dy=H.spacing[1],
     dx=H.spacing[2],codes=new Uint8Array(buf,0,n),lo8=new Uint8Array(buf,n,n),
     hi8=new Uint8Array(buf,2*n,n),hu=new Int16Array(n),dose=new Int16Array(n),lut=new Int16Array(256),
     off=3*n,masks={},K=H.hu_knots,acc=0;
 // HU codes -> HU (piecewise linear); dose: int16 steps of H.dstep Gy, differenced, bytes split
 for(var c=0;c<256;c++){for(var k=1;k<K.length-1&&K[k][1]<c;k++);var a=K[k-1],z=K[k];
  lut[c]=Math.round(a[0]+(c-a[1])*(z[0]-a[0])/(z[1]-a[1]));}
 for(var t=0;t<n;t++){hu[t]=lut[codes[t]];acc=(acc+((lo8[t]|(hi8[t]<<8))<<16>>16))<<16>>16;dose[t]=acc;}
 H.masks.forEach(function(m){var sz=m[3][0]*m[3][1]*m[3][2],nb=Math.ceil(sz/8),
   bits=new Uint8Array(buf,off,nb),v=new Uint8Array(sz);off+=nb;
   for(var t=0;t<sz;t++)v[t]=(bits[t>>3]>>(7-(t&7)))&1;
   (masks[m[0]]=masks[m[0]]||{})[m[1]]={o:m[2],s:m[3],v:v};});
 var S={oar:H.oars[0],pos:[0,0,0],wl:40,ww:400,alpha:0.35,low:H.dref*0.1,iso:true,
        on:{},draws:0};
 H.sets.forEach(function(s){S.on[s]=true;});
 // views: rows/cols of a slice, the flat index of (slice, r, c), mm per row/col
 var V=[{name:'axial',axis:0,rows:ny,cols:nx,rmm:dy,cmm:dx,
         at:function(s,r,c){return (s*ny+r)*nx+c;},ijk:function(s,r,c){return [s,r,c];}},
        {name:'coronal',axis:1,rows:nz,cols:nx,rmm:dz,cmm:dx,
         at:function(s,r,c){return ((nz-1-r)*ny+s)*nx+c;},ijk:function(s,r,c){return [nz-1-r,s,c];}},
        {name:'sagittal',axis:2,rows:nz,cols:ny,rmm:dz,cmm:dy,
         at:function(s,r,c){return ((nz-1-r)*ny+c)*nx+s;},ijk:function(s,r,c){return [nz-1-r,c,s];}}];
 V.forEach(function(v){
  v.canvas=q('canvas[data-view="'+v.name+'"]');v.slider=q('input[data-view="'+v.name+'"]');
  // each view fills a 380 px box at its physical aspect ratio
  v.label=q('span[data-view="'+v.name+'"]');v.scale=Math.min(380/(v.cols*v.cmm),380/(v.rows*v.rmm));
  v.canvas.width=Math.max(1,Math.round(v.cols*v.cmm*v.scale));
  v.canvas.height=Math.max(1,Math.round(v.rows*v.rmm*v.scale));
  v.slider.max=[nz,ny,nx][v.axis]-1;
  v.off=document.createElement('canvas');v.off.width=v.cols;v.off.height=v.rows;
  v.slider.addEventListener('input',function(){S.pos[v.axis]=+v.slider.value;drawAll();});
  v.canvas.addEventListener('mousemove',function(e){hover(v,e);});
 });
 function jet(t){var r=Math.min(1,Math.max(0,1.5-Math.abs(4*t-3))),
   g=Math.min(1,Math.max(0,1.5-Math.abs(4*t-2))),bb=Math.min(1,Math.max(0,1.5-Math.abs(4*t-1)));
   return [255*r,255*g,255*bb];}
 function maskAt(m,k,j,i){k-=m.o[0];j-=m.o[1];i-=m.o[2];
  if(k<0||j<0||i<0||k>=m.s[0]||j>=m.s[1]||i>=m.s[2])return 0;return m.v[(k*m.s[1]+j)*m.s[2]+i];}
 function edges(ctx,v,inside,color,width){
  // outline = pixel edges between inside and outside (what was rasterised, nothing smoothed)
  var sx=v.canvas.width/v.cols,sy=v.canvas.height/v.rows,R=v.rows,C=v.cols,a=new Uint8Array(R*C),any=0;
  for(var r=0;r<R;r++)for(var c=0;c<C;c++){if(inside(r,c)){a[r*C+c]=1;any=1;}}
  if(!any)return 0;
  ctx.beginPath();
  for(r=0;r<=R;r++)for(c=0;c<C;c++){var up=r>0?a[(r-1)*C+c]:0,dn=r<R?a[r*C+c]:0;
    if(up!==dn){ctx.moveTo(c*sx,r*sy);ctx.lineTo((c+1)*sx,r*sy);}}
  for(r=0;r<R;r++)for(c=0;c<=C;c++){var lf=c>0?a[r*C+c-1]:0,rt=c<C?a[r*C+c]:0;
    if(lf!==rt){ctx.moveTo(c*sx,r*sy);ctx.lineTo(c*sx,(r+1)*sy);}}
  ctx.strokeStyle=color;ctx.lineWidth=width;ctx.stroke();return 1;}
 function draw(v){
  var s=S.pos[v.axis],octx=v.off.getContext('2d'),img=octx.createImageData(v.cols,v.rows),
      p=img.data,lo=S.wl-S.ww/2,w=Math.max(S.ww,1),top=H.dref*1.1;
  for(var r=0;r<v.rows;r++)for(var c=0;c<v.cols;c++){
   var f=v.at(s,r,c),g=Math.min(255,Math.max(0,(hu[f]-lo)/w*255)),o=4*(r*v.cols+c),
       R=g,G=g,B=g,d=dose[f];
   if(d>=0&&S.alpha>0&&d*H.dstep>=S.low){var col=jet(Math.min(1,d*H.dstep/top));
    R=(1-S.alpha)*g+S.alpha*col[0];G=(1-S.alpha)*g+S.alpha*col[1];B=(1-S.alpha)*g+S.alpha*col[2];}
   p[o]=R;p[o+1]=G;p[o+2]=B;p[o+3]=255;}
  octx.putImageData(img,0,0);
  var ctx=v.canvas.getContext('2d');ctx.imageSmoothingEnabled=false;
  ctx.drawImage(v.off,0,0,v.canvas.width,v.canvas.height);
  if(S.iso)H.iso.forEach(function(L){var cg=L.gy/H.dstep-1e-6;
   edges(ctx,v,function(r,c){return dose[v.at(s,r,c)]>=cg;},L.color,1);});
  var shown=0,mm=masks[S.oar]||{};
  H.sets.forEach(function(name,k){var m=mm[name];if(!m||!S.on[name])return;
   shown+=edges(ctx,v,function(r,c){var x=v.ijk(s,r,c);return maskAt(m,x[0],x[1],x[2]);},
                H.colors[k],name===H.ref?2.5:1.6);});
  // where the other two views cut this one
  ctx.strokeStyle='rgba(255,255,255,0.35)';ctx.lineWidth=1;ctx.setLineDash([4,4]);ctx.beginPath();
  var cx,cy,sx=v.canvas.width/v.cols,sy=v.canvas.height/v.rows;
  if(v.axis===0){cx=S.pos[2];cy=S.pos[1];}else if(v.axis===1){cx=S.pos[2];cy=nz-1-S.pos[0];}
  else{cx=S.pos[1];cy=nz-1-S.pos[0];}
  ctx.moveTo((cx+0.5)*sx,0);ctx.lineTo((cx+0.5)*sx,v.canvas.height);
  ctx.moveTo(0,(cy+0.5)*sy);ctx.lineTo(v.canvas.width,(cy+0.5)*sy);ctx.stroke();ctx.setLineDash([]);
  v.slider.value=s;
  var mmpos=H.origin[2-v.axis]+s*H.spacing[v.axis];
  v.label.textContent=v.name+' '+(s+1)+'/'+(+v.slider.max+1)+', '+['z','y','x'][v.axis]+' = '+
    mmpos.toFixed(1)+' mm'+(shown?'':' (OAR not on this slice)');
  root.setAttribute('data-slice-'+v.name,s);}
 function drawAll(){V.forEach(draw);S.draws++;root.setAttribute('data-draws',S.draws);
  root.setAttribute('data-oar',S.oar);}
 function hover(v,e){var b=v.canvas.getBoundingClientRect(),
   c=Math.floor((e.clientX-b.left)/b.width*v.cols),r=Math.floor((e.clientY-b.top)/b.height*v.rows);
  if(r<0||c<0||r>=v.rows||c>=v.cols)return;var f=v.at(S.pos[v.axis],r,c),d=dose[f];
  q('.readout').textContent=hu[f]+' HU, '+(d<0?'outside the dose grid':(d*H.dstep).toFixed(1)+' Gy');}
 function go(where){var p=(where==='largest'?H.largest_difference:H.centroid)[S.oar];
  if(p){S.pos=p.slice();}drawAll();}
 function numbers(){var t=q('table.numbers'),rows=H.numbers[S.oar]||{},cols=H.columns;
  while(t.firstChild)t.removeChild(t.firstChild);
  var tr=document.createElement('tr');['Set'].concat(cols.map(function(c){return c[1];}))
   .forEach(function(h){var th=document.createElement('th');th.textContent=h;tr.appendChild(th);});
  t.appendChild(tr);
  H.sets.forEach(function(name,k){var rec=rows[name];if(!rec)return;tr=document.createElement('tr');
   var td=document.createElement('td');td.textContent=name;td.style.borderLeft='6px solid '+H.colors[k];
   tr.appendChild(td);
   cols.forEach(function(c){td=document.createElement('td');var x=rec[c[0]];
    td.textContent=(x===null||x===undefined)?'':(x==='inf'?'∞':(+x).toFixed(c[2]));tr.appendChild(td);});
   t.appendChild(tr);});}
 var sel=q('select.oar');
 H.oars.forEach(function(o){var e=document.createElement('option');e.value=o;e.textContent=o;sel.appendChild(e);});
 sel.addEventListener('change',function(){S.oar=sel.value;numbers();go('centroid');});
 q('select.window').addEventListener('change',function(e){var w=e.target.value.split(',');
  S.wl=+w[0];S.ww=+w[1];q('input.wl').value=S.wl;q('input.ww').value=S.ww;drawAll();});
 q('input.wl').addEventListener('change',function(e){S.wl=+e.target.value;drawAll();});
 q('input.ww').addEventListener('change',function(e){S.ww=+e.target.value;drawAll();});
 q('input.alpha').addEventListener('input',function(e){S.alpha=+e.target.value;drawAll();});
 var low=q('input.low');low.value=S.low.toFixed(1);
 low.addEventListener('change',function(e){S.low=+e.target.value;drawAll();});
 q('input.iso').addEventListener('change',function(e){S.iso=e.target.checked;drawAll();});
 root.querySelectorAll('input.set').forEach(function(e){
  e.addEventListener('change',function(){S.on[e.value]=e.checked;drawAll();});});
 q('button.centroid').addEventListener('click',function(){go('centroid');});
 q('button.largest').addEventListener('click',function(){go('largest');});
 numbers();go('centroid');root.setAttribute('data-ready-ms',Math.round(performance.now()));
 root.setAttribute('data-ready','1');}
};
"""

_WINDOWS = [("Soft tissue (L 40, W 400)", "40,400"), ("Bone (L 400, W 1800)", "400,1800"),
            ("Brain (L 40, W 80)", "40,80"), ("Lung (L -600, W 1500)", "-600,1500")]


def _pack(data: SliceData) -> str:
    """:func:`~soars_dose.report.slices.page_block`, gzip-compressed and base64-encoded."""
    return base64.b64encode(gzip.compress(page_block(data), 6, mtime=0)).decode()


def _value(v):
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    v = float(v)
    if math.isinf(v):
        return "inf"
    return v


def _numbers(stats: pd.DataFrame, cm: "pd.DataFrame | None", data: SliceData) -> dict:
    """``{oar: {set: {column: value}}}`` of the columns in :data:`NUMBER_COLUMNS`."""
    out: dict = {}
    frames = [stats] + ([cm] if cm is not None and len(cm) else [])
    for df in frames:
        cols = [c for c, _, _ in NUMBER_COLUMNS if c in df.columns]
        for rec in df.to_dict("records"):
            if rec.get("roi") not in data.oars:
                continue
            row = out.setdefault(rec["roi"], {}).setdefault(rec["set"], {})
            row.update({c: _value(rec.get(c)) for c in cols})
    return out


def slice_viewer(data: SliceData, stats: pd.DataFrame,
                 contour_metrics: "pd.DataFrame | None" = None, *, uid: str = "slices",
                 prescription_gy: "float | None" = None) -> Widget:
    """The viewer widget of one patient (see the module docstring).

    Parameters
    ----------
    data : SliceData
    stats, contour_metrics : DataFrame
        The patient's tables (numbers shown beside the views).
    uid : str
        Element id, unique on the page (letters, digits, ``-``).
    prescription_gy : float, optional
        Isodose levels are % of it; without it, % of the crop's maximum dose.
    """
    inside = data.dose_cgy[data.dose_cgy != DOSE_OUTSIDE]
    dmax = float(inside.max()) / 100 if inside.size else 0.0
    dref = float(prescription_gy) if prescription_gy else (dmax or 1.0)
    ref_name = "prescription" if prescription_gy else "maximum dose shown"
    colors = [SLICE_COLORS[k % len(SLICE_COLORS)] for k in range(len(data.sets))]
    iso_colors = ["#3060ff", "#00c0c0", "#40d040", "#ffff00", "#ff9000", "#ff0000"]
    head = {**header(data),
            "ref": REFERENCE, "colors": colors, "dref": dref, "dstep": PAGE_DOSE_STEP_GY,
            "hu_knots": [list(k) for k in HU_KNOTS],
            "iso": [{"pct": p, "gy": dref * p / 100, "color": iso_colors[k % len(iso_colors)]}
                    for k, p in enumerate(ISODOSE_PCT)],
            "numbers": _numbers(stats, contour_metrics, data),
            "columns": [list(c) for c in NUMBER_COLUMNS]}
    sets_html = "".join(
        f"<label><input type='checkbox' class='set' value='{escape(s)}' checked>"
        f"<span style='color:{c};text-shadow:0 0 2px #000'>&#9632;</span> {escape(s)}</label>"
        for s, c in zip(data.sets, colors))
    iso_html = " ".join(f"<span style='color:{i['color']};text-shadow:0 0 2px #000'>&#9472;</span>"
                        f" {i['pct']} %" for i in head["iso"])
    windows = "".join(f"<option value='{v}'>{escape(t)}</option>" for t, v in _WINDOWS)
    views = "".join(
        f"<div class='view'><canvas data-view='{v}'></canvas><br>"
        f"<input type='range' min='0' value='0' data-view='{v}' aria-label='{v} slice'>"
        f"<br><span class='note' data-view='{v}'></span></div>"
        for v in ("axial", "coronal", "sagittal"))
    notes = "".join(f"<p class='note'>{escape(n)}</p>" for n in data.notes)
    body = (
        f"<div id='{uid}' class='slices'>"
        "<div class='controls'><label>OAR <select class='oar'></select></label>"
        "<button type='button' class='centroid'>Centroid</button> "
        "<button type='button' class='largest'>Largest difference between sets</button> "
        f"<label>Window <select class='window'>{windows}</select></label>"
        "<label>level <input type='number' class='wl' value='40' step='10' style='width:5em'>"
        "</label><label>width <input type='number' class='ww' value='400' step='10' "
        "style='width:5em'></label></div>"
        "<div class='controls'><label>Dose wash opacity <input type='range' class='alpha' "
        "min='0' max='1' step='0.05' value='0.35'></label><label>from <input type='number' "
        "class='low' step='0.5' min='0' style='width:5em'> Gy</label>"
        f"<label><input type='checkbox' class='iso' checked> isodose lines</label> {iso_html} "
        f"(% of the {ref_name}, {dref:.2f} Gy)</div>"
        f"<div class='controls'>Contours: {sets_html}</div>"
        f"<div class='views' style='display:flex;flex-wrap:wrap;gap:8px'>{views}</div>"
        "<p class='note readout'>Point at the images for CT number and dose.</p>"
        "<div class='scroll'><table class='numbers'></table></div>"
        "<p class='note'>Contours: the outline of each set's mask (occupancy &ge; 50 %) on the "
        "grid shown, rasterised from the contours with the DVH's end caps. Dose: the RTDOSE "
        "interpolated at the pixel centres. Patient's right on the image's left.</p>"
        f"{notes}</div>"
        f"<script type='application/json' id='{uid}-head'>{json_for_script(head)}</script>"
        f"<script type='application/octet-stream' id='{uid}-data'>{_pack(data)}</script>")
    script = (_JS + f"soarsSlices('{uid}',JSON.parse(document.getElementById('{uid}-head')"
              f".textContent),document.getElementById('{uid}-data').textContent);")
    return Widget(body, script)
