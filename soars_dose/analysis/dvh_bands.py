"""DVH bands across a cohort: per OAR and set, percentiles of the patients' cumulative DVHs.

Every patient's cumulative DVH (``volume_pct`` against ``dose_gy`` from
the ``dvh`` table) is interpolated linearly onto one common dose axis
(0 to the highest dose any curve reaches, in ``step_gy`` steps); beyond a
curve's last point its volume is 0 (a cumulative DVH is 0 above the
maximum dose). At each dose the percentiles over patients are taken with
``numpy.percentile`` (linear method): the median and the 25-75 % and
5-95 % bands.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Percentiles of a band table, in its column order.
PERCENTILES = (5, 25, 50, 75, 95)


def common_dose_axis(dvh: pd.DataFrame, step_gy: float) -> np.ndarray:
    """0 to the highest dose of the table (rounded up to a step), ``step_gy`` apart."""
    top = float(dvh["dose_gy"].max()) if len(dvh) else 0.0
    n = int(np.ceil(top / step_gy - 1e-9)) + 1
    return np.round(np.arange(n) * step_gy, 9)


def interpolate_curve(dose_gy: np.ndarray, volume: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """One cumulative DVH on ``axis``: linear between its points, 0 above its last dose."""
    order = np.argsort(dose_gy, kind="stable")
    return np.interp(axis, np.asarray(dose_gy, float)[order], np.asarray(volume, float)[order],
                     right=0.0)


def dvh_bands(dvh: pd.DataFrame, *, step_gy: float = 0.5, volume: str = "volume_pct",
              percentiles: tuple[float, ...] = PERCENTILES) -> pd.DataFrame:
    """Percentile bands of the cumulative DVHs per OAR and set.

    Parameters
    ----------
    dvh : DataFrame
        ``patient, set, roi, dose_gy`` and the ``volume`` column.
    step_gy : float
        Step of the common dose axis.
    volume : str
        ``volume_pct`` (default) or ``volume_cc``.
    percentiles : tuple of float

    Returns
    -------
    DataFrame
        ``roi, set, dose_gy, n`` (patients with a curve) and one column
        ``p<q>`` per percentile (``p5, p25, p50, p75, p95``).
    """
    axis = common_dose_axis(dvh, step_gy)
    cols = [f"p{q:g}" for q in percentiles]
    frames = []
    for (roi, set_name), g in dvh.groupby(["roi", "set"], sort=False):
        curves = np.array([interpolate_curve(c["dose_gy"].to_numpy(), c[volume].to_numpy(), axis)
                           for _, c in g.groupby("patient", sort=False)])
        q = np.percentile(curves, percentiles, axis=0)
        frame = pd.DataFrame({"roi": roi, "set": set_name, "dose_gy": axis, "n": len(curves)})
        for name, row in zip(cols, q):
            frame[name] = row
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["roi", "set", "dose_gy", "n", *cols])
    return pd.concat(frames, ignore_index=True)
