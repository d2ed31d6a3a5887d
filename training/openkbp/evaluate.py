"""Evaluate a trained SOARS segmentation model on OpenKBP: contour accuracy and the dose study.

What it does, per patient of an OpenKBP split (``pt_N.npz`` files or raw
``pt_N/`` CSV folders):

1. reads the patient (:func:`soars_dose.datasets.openkbp.read_patient`: CT in HU,
   clinical dose in Gy, clinical OAR and PTV masks under catalogue names);
2. segments the CT with the model
   (:func:`soars_dose.segmentation.inference.segment_volume`), timed;
3. measures contour accuracy of every OAR that the clinical plan contours
   and the model covers, on the CT grid's voxel masks
   (:func:`soars_dose.analysis.metrics.contour_metrics`: Dice, HD, HD95,
   ASD, surface Dice at 2 mm, volumes; the DeepMind surface-distance
   definitions; an empty prediction gives Dice 0 and infinite distances);
4. writes the patient as DICOM (:func:`soars_dose.datasets.openkbp.write_dicom`:
   ``CT/``, ``RTDOSE.dcm``, ``RTSTRUCT_reference.dcm`` from the clinical
   masks) and the model's masks as a substitute RTSTRUCT
   (:func:`soars_dose.datasets.openkbp.write_masks_rtstruct`, label ``soars``: every
   OAR the model covers, whether or not the clinical plan has it).

A patient that fails at any step is recorded (``patients.csv``) and the run
goes on. Then, on every patient written, the project's own audit machinery
runs exactly as ``soars-dose cohort`` / ``soars-dose report`` would:
reference set = clinical contours, substitute set ``soars`` = the model's,
the clinical dose grid fixed (:func:`soars_dose.cohort.run_cohort`,
:func:`soars_dose.report.cohort.build_report`): per-OAR Diff_mean
and Diff_max (eq 6/7 of the SOARS study, relative to the reference), DVHs,
contour metrics on a common fine grid, the share of OAR instances with
\\|Diff\\| above 10 % and 30 %, Wilcoxon matched-pairs tests, and the HTML
report with DVH overlays.

Output folder (``--out DIR``; a non-empty DIR is refused unless
``--overwrite``)::

    DIR/summary.md                  the headline: command, machine, accuracy per OAR,
                                    segmentation time, dosimetric table, published figures
    DIR/accuracy.csv                patient x OAR contour metrics (voxel masks, CT grid)
    DIR/accuracy_summary.csv        per OAR (and ALL): n, mean, SD, median [IQR] of each metric
    DIR/patients.csv                per patient: status, failing stage, error, seconds per stage
    DIR/evaluate.json               provenance: command, model, machine, settings, versions
    DIR/data/<patient>/             CT/, RTDOSE.dcm, RTSTRUCT_reference.dcm, RTSTRUCT_soars.dcm
    DIR/data/manifest.csv           the cohort manifest (soars-dose cohort format)
    DIR/audit/                      soars-dose cohort output (patients/, cohort/ tables)
    DIR/audit/report/report.html    soars-dose report (and its tables: summary_by_oar,
                                    threshold_counts, paired_tests, table5, ...)

The dosimetric numbers in ``summary.md`` are read from the report's tables
(``summary_by_oar.csv``: mean \\|Diff_mean\\| and \\|Diff_max\\|;
``threshold_counts.csv``: % of instances above 10 % and 30 %;
``paired_tests.csv``: Wilcoxon p of the mean / max dose against the
reference), never recomputed here.

Run (from the repository root)::

    .venv/bin/python training/openkbp/evaluate.py \\
        --model RUN/searched/anchor/model.soars.pt RUN/searched/mid_level/model.soars.pt \\
        --split ../shared/data/openkbp/validation --out eval_openkbp

``--model`` takes a bundle file or the branch model files (anything
:func:`soars_dose.segmentation.bundle.load_models` reads); ``--patients
pt_201 pt_202`` or ``--limit N`` restrict the patients; ``--device cuda``
runs the networks on a GPU; ``--jobs`` sets the cohort's processes (default
1: segmentation already uses the cores through torch).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import sys
import time
import traceback
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

#: Substitute set name of the model's contours in the manifest and every table.
SET_NAME = "soars"
#: Surface-Dice tolerance of ``accuracy.csv`` (mm).
SURFACE_TOLERANCE_MM = 2.0
#: Columns of ``accuracy.csv`` after ``patient, oar``.
ACCURACY_METRICS = ("dice", "surface_dice_2mm", "hd_mm", "hd95_mm", "asd_mm",
                    "volume_ref_cc", "volume_sub_cc", "volume_diff_pct")
#: Metrics summarised in ``accuracy_summary.csv``.
SUMMARY_METRICS = ("dice", "surface_dice_2mm", "hd95_mm", "asd_mm")

#: Published figures of the SOARS study (Guo, Ge, Ye et al.), external validation, for
#: comparison only (another cohort, 42 OARs, other contouring guidelines).
PUBLISHED_DICE_PCT = {"Brainstem": 81.0, "SpinalCord": 84.0, "Bone_Mandible": 89.0,
                      "Parotid_L": 85.0, "Parotid_R": 85.0}
PUBLISHED_DICE_NOTE = ("SOARS external validation: Dice Brainstem 81 %, SpinalCord 84 %, "
                       "Mandible 89 %, Parotids 85 %, one figure for both parotids")
PUBLISHED_DIFF_MEAN_PCT = 3.7
PUBLISHED_DIFF_MAX_PCT = 2.9
PUBLISHED_N_OARS = 13
PUBLISHED_N_PATIENTS = 30
#: From the design notes: SOARS OAR instances over 10 % (reader: 12 %); the notes do not
#: say whether of Diff_mean or Diff_max.
PUBLISHED_OVER_10_PCT = 6.0


# ---------------------------------------------------------------- arguments
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="training/openkbp/evaluate.py",
        description="Contour accuracy and the dosimetric experiment of a SOARS model on "
                    "OpenKBP patients (see the module docstring).")
    p.add_argument("--model", nargs="+", required=True,
                   help="bundle file, branch model files or a folder of them")
    p.add_argument("--split", required=True,
                   help="OpenKBP split folder, e.g. ../shared/data/openkbp/validation")
    p.add_argument("--out", required=True, help="output folder (must be empty or absent)")
    p.add_argument("--patients", nargs="+", default=None, metavar="PID",
                   help="only these patient ids (e.g. pt_201 pt_202)")
    p.add_argument("--limit", type=int, default=None, help="only the first N patients")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out folder")
    p.add_argument("--device", default=None,
                   help="run the networks there (cpu, cuda, cuda:0); default: CPU")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's own)")
    p.add_argument("--tta", action="store_true", help="left-right mirror test-time augmentation")
    p.add_argument("--jobs", type=int, default=1,
                   help="processes of the cohort audit (default 1)")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit must be >= 1, got {args.limit}")
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    return args


def select_patients(split, patients=None, limit=None) -> list[Path]:
    """The patient files of ``split``, restricted to ``patients`` (in that order) and ``limit``."""
    from soars_dose.datasets.openkbp import list_patients
    from soars_dose.errors import InputError

    paths = list_patients(split)
    if patients:
        by_id = {(q.stem if q.suffix == ".npz" else q.name): q for q in paths}
        unknown = [pid for pid in patients if pid not in by_id]
        if unknown:
            raise InputError(f"{split}: no patient(s) {', '.join(unknown)} "
                             f"(it has {len(by_id)}, e.g. {', '.join(list(by_id)[:3])})")
        paths = [by_id[pid] for pid in dict.fromkeys(patients)]
    if limit is not None:
        paths = paths[:limit]
    return paths


def prepare_out(out: Path, overwrite: bool, protected: list[Path]) -> None:
    """Create ``out``; a non-empty one only with ``overwrite`` (never one holding inputs)."""
    from soars_dose.errors import InputError, OutputExistsError

    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{out}: exists and is not empty; choose another --out or "
                                    "pass --overwrite to replace it")
        ro = out.resolve()
        for p in protected:
            rp = p.resolve()
            if rp == ro or ro in rp.parents:
                raise InputError(f"{out}: --overwrite would delete the input {p}; "
                                 "choose another --out")
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
        shutil.rmtree(old, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------- accuracy
def accuracy_rows(patient_id: str, reference: dict, predicted, spacing_mm, oars) -> list[dict]:
    """Contour metrics of each OAR in both ``reference`` and ``oars`` (the model's OARs).

    Parameters
    ----------
    patient_id : str
    reference : dict of str -> ndarray of bool
        Clinical masks, indexed ``[k, j, i]`` on the CT grid.
    predicted : mapping of str -> ndarray of bool
        The model's masks on the same grid (accessed once per OAR).
    spacing_mm : sequence of 3 float
        CT voxel spacing in ``[k, j, i]`` order (mm).
    oars : sequence of str
        The OARs the model covers.

    Returns
    -------
    list of dict
        ``patient, oar, status`` and :data:`ACCURACY_METRICS`, one per OAR
        in ``oars`` order that the clinical plan contours.
    """
    from soars_dose.analysis.metrics import contour_metrics

    rows = []
    for oar in oars:
        if oar not in reference:
            continue
        m = contour_metrics(reference[oar], predicted[oar], spacing_mm, SURFACE_TOLERANCE_MM)
        rows.append({"patient": patient_id, "oar": oar, "status": m["status"],
                     "dice": m["dice"], "surface_dice_2mm": m["surface_dice"],
                     "hd_mm": m["hd_mm"], "hd95_mm": m["hd95_mm"], "asd_mm": m["asd_mm"],
                     "volume_ref_cc": m["volume_ref_cc"], "volume_sub_cc": m["volume_sub_cc"],
                     "volume_diff_pct": m["volume_diff_pct"]})
    return rows


def summarize_accuracy(acc: pd.DataFrame, oars) -> pd.DataFrame:
    """Per OAR (in ``oars`` order, then ``ALL`` pooled): ``describe`` of each metric.

    Follows the conventions of :mod:`soars_dose.analysis.statistics`
    (:func:`~soars_dose.analysis.statistics.describe`): an infinite
    distance (empty prediction) is kept out of mean and SD but counted in
    ``n_inf`` and ordered last for the median; ``n_empty`` counts the
    empty predictions (``status == 'missing_in_set'``, Dice 0).
    """
    from soars_dose.analysis.statistics import describe

    rows = []
    present = [o for o in oars if len(acc) and (acc["oar"] == o).any()]
    groups = [(o, acc[acc["oar"] == o]) for o in present] + ([("ALL", acc)] if len(acc) else [])
    for roi, g in groups:
        for metric in SUMMARY_METRICS:
            d = describe(g[metric].to_numpy(dtype=float))
            rows.append({"oar": roi, "metric": metric, "n": d["n"], "n_inf": d["n_inf"],
                         "n_empty": int((g["status"] == "missing_in_set").sum()),
                         "mean": d["mean"], "sd": d["sd"], "median": d["median"],
                         "q1": d["q1"], "q3": d["q3"]})
    return pd.DataFrame(rows, columns=["oar", "metric", "n", "n_inf", "n_empty", "mean", "sd",
                                       "median", "q1", "q3"])


# ------------------------------------------------------------- one patient
def evaluate_patient(path: Path, models, data_dir: Path, args) -> tuple[dict, list[dict]]:
    """Read, segment, measure and write one patient; never raises for a bad patient.

    Returns the ``patients.csv`` record and the ``accuracy.csv`` rows.
    """
    from soars_dose.datasets import openkbp as ok
    from soars_dose.segmentation.inference import segment_volume

    pid = path.stem if path.suffix == ".npz" else path.name
    rec = {"patient": pid, "status": "ok", "stage": "", "error": "", "message": "",
           "clinical_oars": "", "spacing_mm": "", "model_oars_written": "", "empty_predictions": "",
           "seconds_read": math.nan, "seconds_segment": math.nan,
           "seconds_metrics": math.nan, "seconds_dicom": math.nan}
    rows: list[dict] = []
    stage = "read"
    try:
        t = time.perf_counter()
        pt = ok.read_patient(path)
        rec["seconds_read"] = time.perf_counter() - t
        rec["clinical_oars"] = " ".join(pt.oars)
        rec["spacing_mm"] = " ".join(f"{v:g}" for v in pt.grid.spacing)  # [k, j, i]
        covered = models.available_oars()

        stage = "segment"
        t = time.perf_counter()
        seg = segment_volume(pt.ct_hu, pt.grid, models, progress=False, device=args.device,
                             tta=args.tta)
        rec["seconds_segment"] = time.perf_counter() - t
        for k, v in seg.timings_s.items():
            rec[f"seg_{k}_s"] = v

        stage = "metrics"
        t = time.perf_counter()
        rows = accuracy_rows(pid, pt.masks, seg.masks, pt.grid.spacing, covered)
        rec["seconds_metrics"] = time.perf_counter() - t

        stage = "dicom"
        t = time.perf_counter()
        pdir = data_dir / pid
        export = ok.write_dicom(pt, pdir)
        masks = {n: seg.masks[n] for n in covered}
        empty = [n for n, m in masks.items() if not m.any()]
        rec["model_oars_written"] = " ".join(masks)
        rec["empty_predictions"] = " ".join(empty)
        ok.write_masks_rtstruct(masks, export, pdir / f"RTSTRUCT_{SET_NAME}.dcm", label=SET_NAME,
                                patient_id=pid)
        rec["seconds_dicom"] = time.perf_counter() - t
    except Exception as exc:  # one bad patient never stops the run
        rec.update(status="failed", stage=stage, error=type(exc).__name__,
                   message=str(exc).splitlines()[0][:500] if str(exc) else "")
        from soars_dose.errors import SoarsDoseError

        if not isinstance(exc, SoarsDoseError):
            traceback.print_exc()
        rows = []
    return rec, rows


def write_manifest(records: list[dict], data_dir: Path) -> Path:
    """``data/manifest.csv`` of the patients written (paths relative to ``data/``)."""
    from soars_dose.outputs import write_csv_rows

    rows = [["patient", "rtdose", "reference", f"set:{SET_NAME}", "ct"]]
    for r in records:
        if r["status"] != "ok":
            continue
        p = r["patient"]
        rows.append([p, f"{p}/RTDOSE.dcm", f"{p}/RTSTRUCT_reference.dcm",
                     f"{p}/RTSTRUCT_{SET_NAME}.dcm", f"{p}/CT"])
    return write_csv_rows(data_dir / "manifest.csv", rows)


# ----------------------------------------------------------------- summary
def dose_headline(report_dir: Path, oars, set_name: str = SET_NAME) -> pd.DataFrame:
    """Per OAR (then ALL) the dosimetric figures, read from the report's own tables.

    Columns: ``oar``, ``n`` (instances with a \\|Diff_mean\\|), ``n_not_evaluable``
    (soars rows without a dose or without a clinical OAR: an empty prediction, or an OAR
    the clinical plan lacks), ``abs_diff_mean_pct``,
    ``abs_diff_max_pct`` (means of :func:`~soars_dose.analysis.statistics.summary_by_oar`),
    ``mean_over_10_pct``, ``mean_over_30_pct``, ``max_over_10_pct``, ``max_over_30_pct``
    (``pct_over`` of :func:`~soars_dose.analysis.statistics.threshold_counts`),
    ``p_mean_gy``, ``p_max_gy`` (Wilcoxon, set vs reference, Holm-adjusted; NaN below
    6 pairs).
    """
    summ = pd.read_csv(report_dir / "summary_by_oar.csv")
    thr = pd.read_csv(report_dir / "threshold_counts.csv")
    tests_file = report_dir / "paired_tests.csv"
    tests = pd.read_csv(tests_file) if tests_file.is_file() else pd.DataFrame()
    summ, thr = summ[summ["set"] == set_name], thr[thr["set"] == set_name]
    rois = [o for o in oars if (summ["roi"] == o).any()] + ["ALL"]
    out = []
    for roi in rois:
        row = {"oar": roi}
        for metric, key in (("abs_diff_mean_pct", "abs_diff_mean_pct"),
                            ("abs_diff_max_pct", "abs_diff_max_pct")):
            v = summ[(summ["roi"] == roi) & (summ["metric"] == metric)]
            row[key] = float(v["mean"].iloc[0]) if len(v) else math.nan
            row[f"sd_{key}"] = float(v["sd"].iloc[0]) if len(v) else math.nan
            if metric == "abs_diff_mean_pct":
                row["n"] = int(v["n"].iloc[0]) if len(v) else 0
        for metric, short in (("abs_diff_mean_pct", "mean"), ("abs_diff_max_pct", "max")):
            for th in (10, 30):
                v = thr[(thr["roi"] == roi) & (thr["metric"] == metric)
                        & (thr["threshold_pct"] == th)]
                row[f"{short}_over_{th}_pct"] = float(v["pct_over"].iloc[0]) if len(v) else math.nan
                if th == 10 and short == "mean":
                    row["n_not_evaluable"] = int(v["n_not_evaluable"].iloc[0]) if len(v) else 0
        for m in ("mean_gy", "max_gy"):
            p = math.nan
            if len(tests):
                v = tests[(tests["metric"] == m) & (tests["roi"] == roi)
                          & (tests["set_a"] == set_name) & (tests["set_b"] == "reference")]
                if len(v):
                    p = float(v["p_holm"].iloc[0]) if "p_holm" in v else float(v["p"].iloc[0])
            row[f"p_{m}"] = p
        out.append(row)
    return pd.DataFrame(out)


def compare_dice(acc: pd.DataFrame, cohort_cm: pd.DataFrame, set_name: str = SET_NAME) -> str:
    """One sentence comparing the voxel-mask Dice of ``accuracy.csv`` with the audit's."""
    if not len(acc) or cohort_cm is None or not len(cohort_cm):
        return ""
    cm = cohort_cm[cohort_cm["set"] == set_name][["patient", "roi", "dice"]]
    m = acc.merge(cm, left_on=["patient", "oar"], right_on=["patient", "roi"],
                  suffixes=("", "_audit"))
    d = (m["dice"] - m["dice_audit"]).abs().dropna()
    if not len(d):
        return "No OAR instance could be matched with the audit's contour metrics."
    return (f"Over the {len(d)} matched OAR instances the two Dice values differ by at most "
            f"{d.max():.4f} (mean {d.mean():.4f}).")


def _f(v, digits=1, pct=False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    s = f"{v:.{digits}f}"
    return s + (" %" if pct else "")


def _spacing_text(records: list[dict]) -> str:
    sp = np.array([[float(v) for v in r["spacing_mm"].split()] for r in records
                   if r.get("spacing_mm")]).reshape(-1, 3)
    if not len(sp):
        return "voxel size unknown"
    inplane = np.concatenate([sp[:, 1], sp[:, 2]])
    return (f"voxels here {inplane.min():.2f}-{inplane.max():.2f} mm in-plane, "
            f"{sp[:, 0].min():.2f}-{sp[:, 0].max():.2f} mm slices")


def _pm(mean, sd, digits=1) -> str:
    """``mean ± sd`` (the mean alone without an SD)."""
    if isinstance(sd, float) and math.isnan(sd):
        return _f(mean, digits)
    return f"{_f(mean, digits)} ± {_f(sd, digits)}"


def _ms(summary: pd.DataFrame, oar: str, metric: str, scale=1.0, digits=1) -> tuple[str, dict]:
    v = summary[(summary["oar"] == oar) & (summary["metric"] == metric)]
    if not len(v):
        return "–", {}
    r = v.iloc[0].to_dict()
    text = _pm(r["mean"] * scale, r["sd"] * scale, digits)
    if r["n_inf"]:
        text += f" ({int(r['n_inf'])} inf)"
    return text, r


def machine_info(device) -> dict:
    import torch

    from soars_dose.machine import machine

    m = machine()
    info = {"platform": m["platform"], "processor": m["cpu"], "cpu_count": os.cpu_count(),
            "cpu_affinity": m["nproc"], "ram": m["ram"], "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "device": str(device or "cpu")}
    if device and str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def write_summary(out: Path, *, command: str, model_desc: str, split: str, records: list[dict],
                  summary: pd.DataFrame, oars, machine: dict, headline: pd.DataFrame | None,
                  report: Path | None, cohort_note: str, tta: bool = False,
                  dice_check: str = "") -> Path:
    """Write ``summary.md``."""
    ok_recs = [r for r in records if r["status"] == "ok"]
    failed = [r for r in records if r["status"] != "ok"]
    seg_s = [r["seconds_segment"] for r in records if not math.isnan(r["seconds_segment"])]
    L = ["# SOARS model on OpenKBP: contour accuracy and dosimetric experiment", "",
         "```", command, "```", "",
         f"- model: {model_desc}",
         f"- split: `{split}`; patients: {len(records)} selected, {len(ok_recs)} evaluated, "
         f"{len(failed)} failed"
         + (" (" + "; ".join(f"{r['patient']} at {r['stage']}: {r['error']}" for r in failed)
            + ")" if failed else ""),
         f"- segmentation: median {_f(float(np.median(seg_s)) if seg_s else math.nan, 1)} s "
         f"per patient (min {_f(min(seg_s) if seg_s else math.nan, 1)}, max "
         f"{_f(max(seg_s) if seg_s else math.nan, 1)}; {len(seg_s)} patients; "
         f"`segment_volume`{', with TTA' if tta else ''}; see `patients.csv`)",
         f"- machine: {machine['platform']}; {machine['processor']}, {machine['cpu_count']} CPUs"
         + (f" ({machine['cpu_affinity']} usable)" if "cpu_affinity" in machine else "")
         + f"; torch {machine['torch']} ({machine['torch_threads']} threads); device "
           f"{machine['device']}" + (f" ({machine['gpu']})" if "gpu" in machine else ""),
         ""]

    L += ["## Contour accuracy (model vs clinical contours)", "",
          "Voxel masks on the OpenKBP CT grid, `soars_dose.analysis.metrics.contour_metrics` "
          "(DeepMind surface-distance definitions). Mean ± SD over the patients whose clinical "
          "plan contours the OAR; an empty prediction counts as Dice 0 and its infinite "
          "distances are left out of the distance means (counted as `inf`). "
          "Per patient: `accuracy.csv`; quartiles: `accuracy_summary.csv`.", "",
          "| OAR | n | Dice % | HD95 mm | ASD mm | surface Dice 2 mm % | published Dice % |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    present = [o for o in oars if (summary["oar"] == o).any()]
    per_oar_dice = []
    for o in present + (["ALL"] if len(summary) else []):
        dice_t, r = _ms(summary, o, "dice", 100.0)
        if o != "ALL" and r and not math.isnan(r["mean"]):
            per_oar_dice.append(r["mean"] * 100.0)
        hd_t, _ = _ms(summary, o, "hd95_mm")
        asd_t, _ = _ms(summary, o, "asd_mm")
        sd_t, _ = _ms(summary, o, "surface_dice_2mm", 100.0)
        pub = PUBLISHED_DICE_PCT.get(o)
        name = "all instances pooled" if o == "ALL" else o
        L.append(f"| {name} | {r.get('n', 0)} | {dice_t} | {hd_t} | {asd_t} | {sd_t} | "
                 f"{_f(pub, 0) if pub else '–'} |")
    mean_dice = float(np.mean(per_oar_dice)) if per_oar_dice else math.nan
    pub_mean = float(np.mean([PUBLISHED_DICE_PCT[o] for o in present if o in PUBLISHED_DICE_PCT])
                     ) if any(o in PUBLISHED_DICE_PCT for o in present) else math.nan
    L += ["", f"**Mean Dice over the {len(per_oar_dice)} OARs (mean of the per-OAR means): "
          f"{_f(mean_dice, 1, pct=True)}.**",
          f"Published ({PUBLISHED_DICE_NOTE}); over the OARs of that list present here: "
          f"{_f(pub_mean, 1, pct=True)}.", ""]

    L += ["## Dosimetric experiment (clinical dose fixed, model contours in place of clinical)",
          ""]
    if headline is None or not len(headline):
        L += [f"Not available: {cohort_note}", ""]
    else:
        L += ["From the cohort audit's tables (`audit/report/summary_by_oar.csv`, "
              "`threshold_counts.csv`, `paired_tests.csv`): Diff_mean / Diff_max are eq 6/7 of "
              "the study relative to the clinical contours; means of |Diff| over the OAR "
              "instances with a dose; share of instances with |Diff| strictly above 10 % / "
              "30 %; p: Wilcoxon matched-pairs of the soars vs the clinical mean (max) dose, "
              "Holm-adjusted ('–' below 6 pairs). An OAR the model left empty has no dose: "
              "it is counted as 'empty' and is not in the means or the shares.", "",
              "| OAR | n | mean abs(Diff_mean) % | mean abs(Diff_max) % | Diff_mean > 10 % | "
              "> 30 % | Diff_max > 10 % | > 30 % | p mean dose | p max dose |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for _, h in headline.iterrows():
            name = "all instances pooled" if h["oar"] == "ALL" else h["oar"]
            _, acc_row = _ms(summary, h["oar"], "dice")
            n_empty = int(acc_row.get("n_empty", 0))
            n_text = str(int(h["n"])) + (f" ({n_empty} empty)" if n_empty else "")
            if h["oar"] != "ALL" and h["oar"] not in present:
                continue  # no clinical contour of this OAR in any patient
            L.append(
                f"| {name} | {n_text} | {_pm(h['abs_diff_mean_pct'], h['sd_abs_diff_mean_pct'])}"
                f" | {_pm(h['abs_diff_max_pct'], h['sd_abs_diff_max_pct'])}"
                f" | {_f(h['mean_over_10_pct'], 0, True)} | "
                f"{_f(h['mean_over_30_pct'], 0, True)} | {_f(h['max_over_10_pct'], 0, True)} | "
                f"{_f(h['max_over_30_pct'], 0, True)} | {_f(h['p_mean_gy'], 3)} | "
                f"{_f(h['p_max_gy'], 3)} |")
        allrow = headline[headline["oar"] == "ALL"].iloc[0]
        L += ["",
              f"**Here: mean |Diff_mean| {_f(allrow['abs_diff_mean_pct'], 1, True)}, mean "
              f"|Diff_max| {_f(allrow['abs_diff_max_pct'], 1, True)} over "
              f"{int(allrow['n'])} OAR instances ({len(present)} OARs, "
              f"{len(ok_recs)} patients); {_f(allrow['mean_over_10_pct'], 0, True)} of "
              f"instances with |Diff_mean| > 10 %.**",
              f"Published (SOARS): mean-dose difference {PUBLISHED_DIFF_MEAN_PCT} %, max-dose "
              f"difference {PUBLISHED_DIFF_MAX_PCT} % over {PUBLISHED_N_OARS} OARs in "
              f"{PUBLISHED_N_PATIENTS} patients; {PUBLISHED_OVER_10_PCT:.0f} % of OAR instances "
              "over 10 % (design notes).", ""]
        if cohort_note:
            L += [cohort_note, ""]
    L += ["## Caveats", "",
          "- The published figures come from another cohort, another contouring guideline and "
          "the full 42-OAR model; OpenKBP's clinical contours come from several institutions "
          "(see `soars_dose.datasets.openkbp.DEFINITION_NOTES`: the mandible is one structure, the "
          "larynx definition and the oesophagus extent vary).",
          "- The OpenKBP CT is cropped to the planned region on a 128³ grid; "
          + _spacing_text(records) + "; distances are limited by that resolution.",
          "- Contour metrics here are on voxel masks of the CT grid; the audit's own "
          "`contour_metrics` (report, Table 5a) are computed from the RTSTRUCT contours. "
          + (dice_check or "They were not compared (no cohort audit)."), ""]
    L += ["## Files", "",
          "- `accuracy.csv`, `accuracy_summary.csv`, `patients.csv`, `evaluate.json`",
          "- `data/<patient>/` (CT/, RTDOSE.dcm, RTSTRUCT_reference.dcm, "
          f"RTSTRUCT_{SET_NAME}.dcm), `data/manifest.csv`",
          "- `audit/` (soars-dose cohort tables)"
          + (f", `{report.relative_to(out).as_posix()}` (HTML report, DVH overlays)"
             if report else ""), ""]
    path = out / "summary.md"
    path.write_text("\n".join(L), encoding="utf-8")
    return path


# -------------------------------------------------------------------- main
def _log(msg: str) -> None:
    print(msg, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    import json

    import torch

    from soars_dose.cohort import run_cohort
    from soars_dose.errors import SoarsDoseError
    from soars_dose.outputs import software_versions, version
    from soars_dose.report.cohort import build_report
    from soars_dose.segmentation.bundle import load_models

    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = "python training/openkbp/evaluate.py " + shlex.join(argv_list)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    t_start = time.perf_counter()
    try:
        paths = select_patients(args.split, args.patients, args.limit)
        models = load_models(args.model)
        if args.device:
            from soars_dose.segmentation.device import resolve_device

            models.to(resolve_device(args.device))
        prepare_out(out, args.overwrite, [Path(args.split)] + [Path(m) for m in args.model])
    except SoarsDoseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    oars = models.available_oars()
    machine = machine_info(args.device)
    model_desc = (", ".join(f"{role} ({', '.join(b.oar_names)}) from `{b.meta.get('_source')}`"
                            for role, b in models.branches.items()))
    _log(f"evaluate: {len(paths)} patients of {args.split}; model covers {', '.join(oars)}; "
         f"out {out}")

    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    acc_rows: list[dict] = []
    for n, path in enumerate(paths, start=1):
        rec, rows = evaluate_patient(path, models, data_dir, args)
        records.append(rec)
        acc_rows += rows
        if rec["status"] == "ok":
            dice = " ".join(f"{r['oar']}={r['dice']:.2f}" for r in rows)
            _log(f"[{n}/{len(paths)}] {rec['patient']}: segmentation "
                 f"{rec['seconds_segment']:.1f} s, metrics {rec['seconds_metrics']:.1f} s, "
                 f"DICOM {rec['seconds_dicom']:.1f} s; Dice {dice}")
        else:
            _log(f"[{n}/{len(paths)}] {rec['patient']}: FAILED at {rec['stage']}: "
                 f"{rec['error']}: {rec['message']}")
        # keep the tables current, so that an interrupted run leaves what it measured
        pd.DataFrame(records).to_csv(out / "patients.csv", index=False)
        pd.DataFrame(acc_rows, columns=["patient", "oar", "status", *ACCURACY_METRICS]).to_csv(
            out / "accuracy.csv", index=False)

    acc = pd.DataFrame(acc_rows, columns=["patient", "oar", "status", *ACCURACY_METRICS])
    summary = summarize_accuracy(acc, oars)
    summary.to_csv(out / "accuracy_summary.csv", index=False)

    headline, report, cohort_note, dice_check = None, None, "", ""
    n_ok = sum(r["status"] == "ok" for r in records)
    if n_ok:
        manifest = write_manifest(records, data_dir)
        audit = out / "audit"
        t = time.perf_counter()
        _log(f"cohort audit of {n_ok} patients -> {audit}")
        try:
            res = run_cohort(manifest, audit, jobs=args.jobs, progress=True,
                             command=f"soars-dose cohort {manifest} --out {audit} "
                                     f"--jobs {args.jobs}")
            if res.n_failed:
                cohort_note = (f"The cohort audit failed for {res.n_failed} patient(s): "
                               + "; ".join(f"{r['patient']}: {r.get('message', '')}"[:200]
                                           for _, r in res.failures.iterrows())
                               + " (see audit/cohort/failures.csv).")
                _log(cohort_note)
            _log(f"cohort: {res.n_ok} ok, {res.n_failed} failed, "
                 f"{time.perf_counter() - t:.1f} s; building the report")
            t = time.perf_counter()
            report = build_report(audit, command=f"soars-dose report {audit}")
            _log(f"report: {report} ({time.perf_counter() - t:.1f} s)")
            headline = dose_headline(report.parent, oars)
            headline.to_csv(out / "dose_headline.csv", index=False)
            dice_check = compare_dice(acc, res.contour_metrics)
        except Exception as exc:  # keep the accuracy results whatever happens here
            traceback.print_exc()
            cohort_note = f"the cohort audit / report failed: {type(exc).__name__}: {exc}"
            _log(cohort_note)
    else:
        cohort_note = "no patient could be segmented and written, so no cohort audit ran."

    record = {
        "tool": "training/openkbp/evaluate.py", "soars_dose_version": version(),
        "command": command, "argv": argv_list, "cwd": os.getcwd(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "split": str(Path(args.split).resolve()), "patients": [r["patient"] for r in records],
        "model": {"sources": models.sources, "branches": {
            role: {"oar_names": b.oar_names, "patch_size": list(b.patch_size),
                   "source": b.meta.get("_source")} for role, b in models.branches.items()},
            "preprocessing": models.preprocessing.to_dict()},
        "settings": {"set_name": SET_NAME, "surface_tolerance_mm": SURFACE_TOLERANCE_MM,
                     "device": args.device, "tta": args.tta, "jobs": args.jobs,
                     "threads": args.threads},
        "machine": machine, "software": software_versions(),
        "seconds_total": time.perf_counter() - t_start,
    }
    (out / "evaluate.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    md = write_summary(out, command=command, model_desc=model_desc, split=args.split,
                       records=records, summary=summary, oars=oars, machine=machine,
                       headline=headline, report=report, cohort_note=cohort_note,
                       tta=args.tta, dice_check=dice_check)
    _log(f"done in {time.perf_counter() - t_start:.0f} s: {md}")
    return 0 if n_ok else 1


if __name__ == "__main__":
    sys.exit(main())
