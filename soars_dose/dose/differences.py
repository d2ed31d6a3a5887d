"""The eq 6/7 differences against the reference, and the one near-zero rule for their percentages.

    Diff_x = (x(OAR_sub, Dose) - x(OAR_ref, Dose)) / x(OAR_ref, Dose) x 100 %

for x = the mean dose (eq 6), the point maximum (eq 7) and the near-maximum
D0.03cc (eq 7 on the volume-based maximum that serial-organ constraints use).

The near-zero rule
------------------
A percentage of a reference dose close to 0 Gy is meaningless (an
out-of-field brainstem with a reference maximum of 0.23 Gy gives +3499 %),
so each percentage is left empty (NaN, flagged ``reference_<x>_near_zero``)
when *its* reference value is below one threshold per instance:

* ``near_zero_rx_pct`` % of the prescription when the prescription is known
  (default 2 %: 1.4 Gy for 70 Gy), else
* ``near_zero_gy`` (default 1 Gy).

The same threshold applies to the mean, the maximum and D0.03cc alike.
Since the reference mean never exceeds the reference maximum, an instance
whose Diff_max is suppressed has its Diff_mean suppressed too. The
differences in Gy are always given. This module is the only place the
rule is written: :func:`soars_dose.dose.compare.compare` (one patient) and
the cohort report (:mod:`soars_dose.report.cohort`) both call
:func:`add_differences`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..case import COMPUTED, REFERENCE

#: Default absolute near-zero threshold (Gy) when no prescription is known.
NEAR_ZERO_GY = 1.0
#: Default near-zero threshold in % of the prescription, when one is known.
NEAR_ZERO_RX_PCT = 2.0
#: (stats column, suffix of the difference columns, flag word) per compared dose.
QUANTITIES = (("mean_gy", "mean", "mean"), ("max_gy", "max", "max"),
              ("d0_03cc_gy", "d0_03cc", "d0_03cc"))
#: Columns :func:`add_differences` writes, in this order.
DIFF_COLUMNS = ["diff_mean_pct", "diff_max_pct", "diff_d0_03cc_pct", "diff_mean_gy",
                "diff_max_gy", "diff_d0_03cc_gy", "near_zero_threshold_gy", "diff_flag"]


def near_zero_threshold_gy(near_zero_gy: float = NEAR_ZERO_GY,
                           prescription_gy: float | None = None,
                           near_zero_rx_pct: float | None = NEAR_ZERO_RX_PCT) -> float:
    """The reference dose (Gy) below which an eq 6/7 percentage is not reported.

    Parameters
    ----------
    near_zero_gy : float
        Threshold in Gy used when no prescription is known (default 1 Gy).
    prescription_gy : float or None
        The prescription (Gy) of the plan, when known (manifest column
        ``prescription_gy`` or ``--prescription-gy``).
    near_zero_rx_pct : float or None
        Threshold in % of the prescription (default 2 %); None or 0 ignores
        the prescription.

    Returns
    -------
    float
        ``near_zero_rx_pct / 100 * prescription_gy`` when both are given and
        positive, else ``near_zero_gy``.

    Examples
    --------
    >>> near_zero_threshold_gy(), near_zero_threshold_gy(prescription_gy=70.0)
    (1.0, 1.4)
    """
    if (prescription_gy is not None and np.isfinite(prescription_gy) and prescription_gy > 0
            and near_zero_rx_pct):
        return float(near_zero_rx_pct) / 100.0 * float(prescription_gy)
    return float(near_zero_gy)


def add_differences(stats: pd.DataFrame, threshold_gy: "float | dict" = NEAR_ZERO_GY
                    ) -> pd.DataFrame:
    """Append the eq 6/7 differences of every substitute row against its patient's reference.

    Parameters
    ----------
    stats : DataFrame
        One row per (patient, set, roi) (``patient`` optional for one case)
        with ``status``, ``mean_gy``, ``max_gy`` and, if computed,
        ``d0_03cc_gy``. Existing difference columns are replaced.
    threshold_gy : float or dict
        The near-zero threshold (Gy; see :func:`near_zero_threshold_gy`),
        one for every row or a mapping patient -> threshold (patients not in
        it get :data:`NEAR_ZERO_GY`).

    Returns
    -------
    DataFrame
        ``stats`` with :data:`DIFF_COLUMNS` appended (before ``message``
        and ``plausibility`` when present): ``diff_<x>_pct`` (NaN on
        reference rows, on rows without a dose, and where the reference
        value of *that* quantity is below the threshold), ``diff_<x>_gy``
        (always given where both doses exist), ``near_zero_threshold_gy``,
        and ``diff_flag`` (``no_reference`` or ``;``-joined
        ``reference_<x>_near_zero``).
    """
    out = stats.drop(columns=[c for c in DIFF_COLUMNS if c in stats.columns]).copy()
    for c in DIFF_COLUMNS:
        out[c] = "" if c == "diff_flag" else np.nan
    if "patient" in out.columns:
        pat = out["patient"].astype(object)
    else:
        pat = pd.Series("", index=out.index, dtype=object)
    have = [q for q in QUANTITIES if q[0] in out.columns]
    ok = out["status"].isin(COMPUTED)
    ref_mask = (out["set"] == REFERENCE) & ok
    ref = {(p, r): i for i, p, r in zip(out.index[ref_mask], pat[ref_mask], out.loc[ref_mask, "roi"])}
    for i in out.index[ok & (out["set"] != REFERENCE)]:
        key = (pat.at[i], out.at[i, "roi"])
        if key not in ref:
            out.at[i, "diff_flag"] = "no_reference"
            continue
        t = threshold_gy.get(key[0], NEAR_ZERO_GY) if isinstance(threshold_gy, dict) else threshold_gy
        out.at[i, "near_zero_threshold_gy"] = float(t)
        flags = []
        for col, suffix, word in have:
            r, v = float(out.at[ref[key], col]), float(out.at[i, col])
            out.at[i, f"diff_{suffix}_gy"] = v - r
            if r >= t:
                out.at[i, f"diff_{suffix}_pct"] = 100.0 * (v - r) / r
            else:
                flags.append(f"reference_{word}_near_zero")
        out.at[i, "diff_flag"] = ";".join(flags)
    tail = [c for c in ("plausibility", "message") if c in out.columns]
    cols = [c for c in out.columns if c not in DIFF_COLUMNS and c not in tail]
    return out[cols + DIFF_COLUMNS + tail]
