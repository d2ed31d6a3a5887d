"""Cohort summaries of the ``stats`` tables (eq 6/7 differences per set and OAR)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..case import REFERENCE


def instance_table(stats: pd.DataFrame) -> pd.DataFrame:
    """Substitute-set rows with a computed difference (one row per patient x set x OAR)."""
    sub = stats[(stats["set"] != REFERENCE) & stats["status"].isin(["ok", "partial"])]
    return sub[sub["diff_flag"].fillna("") != "no_reference"].copy()


def per_set_summary(stats: pd.DataFrame, thresholds=(10.0, 30.0)) -> pd.DataFrame:
    """Per substitute set: mean/median |Diff_mean| and |Diff_max| (%), and shares above thresholds.

    Missing OARs are counted separately (``n_missing``), never silently dropped.
    """
    rows = []
    for set_name, g in stats[stats["set"] != REFERENCE].groupby("set", sort=False):
        inst = instance_table(g)
        am = inst["diff_mean_pct"].abs()
        ax = inst["diff_max_pct"].abs()
        row = {
            "set": set_name,
            "n_instances": int(len(inst)),
            "n_missing": int((g["status"] == "missing").sum()),
            "n_other_status": int((~g["status"].isin(["ok", "partial", "missing"])).sum()),
            "mean_abs_diff_mean_pct": float(am.mean()) if len(am) else np.nan,
            "median_abs_diff_mean_pct": float(am.median()) if len(am) else np.nan,
            "mean_abs_diff_max_pct": float(ax.mean()) if len(ax) else np.nan,
            "median_abs_diff_max_pct": float(ax.median()) if len(ax) else np.nan,
        }
        for t in thresholds:
            valid_m, valid_x = am.notna().sum(), ax.notna().sum()
            row[f"pct_diff_mean_over_{t:g}"] = 100 * (am > t).sum() / valid_m if valid_m else np.nan
            row[f"pct_diff_max_over_{t:g}"] = 100 * (ax > t).sum() / valid_x if valid_x else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def per_oar_summary(stats: pd.DataFrame) -> pd.DataFrame:
    """Per (set, OAR): n, mean and median |Diff_mean| %, |Diff_max| %."""
    inst = instance_table(stats)
    inst = inst.assign(abs_diff_mean_pct=inst["diff_mean_pct"].abs(),
                       abs_diff_max_pct=inst["diff_max_pct"].abs())
    g = inst.groupby(["set", "roi"], sort=False)
    return g.agg(
        n=("abs_diff_mean_pct", "size"),
        mean_abs_diff_mean_pct=("abs_diff_mean_pct", "mean"),
        median_abs_diff_mean_pct=("abs_diff_mean_pct", "median"),
        mean_abs_diff_max_pct=("abs_diff_max_pct", "mean"),
        median_abs_diff_max_pct=("abs_diff_max_pct", "median"),
    ).reset_index()
