"""Range checks of :class:`soars_dose.dose.compare.Settings` values.

Each field is named in the message together with the command-line option
that sets it, so the same check serves the Python API and the CLI.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from ..errors import SettingsError

#: Largest in-plane supersampling factor accepted (the automatic choice stays <= 16).
MAX_FACTOR = 64
#: Largest DVH bin width (Gy) accepted.
MAX_BIN_WIDTH_GY = 1.0
#: Interpolation methods the dose grid offers.
INTERPOLATIONS = ("linear", "nearest")

#: Command-line option of each Settings field (None: Python only).
OPTION = {
    "factor": "--supersample",
    "bin_width_gy": "--bin-width",
    "d_pct": "--dx",
    "d_cc": "--dcc",
    "v_gy": "--vgy",
    "near_zero_gy": "--near-zero-gy",
    "near_zero_rx_pct": "--near-zero-rx-pct",
    "prescription_gy": "--prescription-gy",
    "dvh_step_gy": "--dvh-step",
    "interpolation": "--interpolation",
    "max_memory_gb": "--max-memory-gb",
    "plausibility_volumes": "--plausibility-volumes",
    "plausibility_air_hu": "--plausibility-air-hu",
    "plausibility_bone_hu": "--plausibility-bone-hu",
    "plausibility_max_share": "--plausibility-max-share",
}


def _fail(field: str, problem: str, value) -> SettingsError:
    opt = OPTION.get(field)
    where = f"Settings.{field}" + (f" ({opt})" if opt else "")
    return SettingsError(f"{where} {problem}, got {value!r}")


def _number(field: str, value, *, lo=None, lo_open=False, hi=None, unit="") -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise _fail(field, f"must be a finite number{(' in ' + unit) if unit else ''}", value)
    v = float(value)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise _fail(field, f"must be {'>' if lo_open else '>='} {lo:g}{(' ' + unit) if unit else ''}",
                    value)
    if hi is not None and v > hi:
        raise _fail(field, f"must be <= {hi:g}{(' ' + unit) if unit else ''}", value)
    return v


def _numbers(field: str, values, *, lo=0.0, hi=None, unit="") -> None:
    try:
        items = list(values)
    except TypeError:
        raise _fail(field, "must be a sequence of numbers", values) from None
    for v in items:
        _number(field, v, lo=lo, hi=hi, unit=unit)


def check_sampling(factor, bin_width_gy) -> None:
    """The in-plane supersampling factor and the DVH bin width, as :func:`validate_settings` checks them.

    Also used where no Settings object is built (``soars-dose tps-check``).

    Raises
    ------
    SettingsError
        ``factor`` is not ``"auto"`` or an even integer in ``[2, MAX_FACTOR]``
        (1 is accepted), or ``bin_width_gy`` is not in ``(0, MAX_BIN_WIDTH_GY]``.
    """
    f = factor
    if f != "auto":
        if isinstance(f, bool) or not isinstance(f, Integral):
            raise _fail("factor", "must be 'auto' or an even integer", f)
        f = int(f)
        if f < 1 or f > MAX_FACTOR:
            raise _fail("factor", f"must be 'auto' or an even integer from 2 to {MAX_FACTOR}", f)
        if f != 1 and f % 2:
            raise _fail("factor", "must be even (odd sub-pixels would straddle the voxel centres "
                        f"where trilinear dose has its kinks); use {f - 1} or {f + 1}", f)
    _number("bin_width_gy", bin_width_gy, lo=0.0, lo_open=True, hi=MAX_BIN_WIDTH_GY, unit="Gy")


def validate_settings(s) -> None:
    """Check every field of a Settings object; raise :class:`SettingsError` on the first bad one.

    Rules
    -----
    * ``factor`` (``--supersample``): ``"auto"`` or an even integer in
      ``[2, MAX_FACTOR]``; 1 is accepted too (one sample per pixel in-plane;
      the rasteriser rounds it up to 2).
    * ``bin_width_gy`` (``--bin-width``): in ``(0, 1]`` Gy.
    * ``d_pct`` (``--dx``) in ``[0, 100]`` %; ``d_cc`` (``--dcc``) and
      ``v_gy`` (``--vgy``) >= 0.
    * ``near_zero_gy`` >= 0 Gy; ``dvh_step_gy`` None or > 0 Gy.
    * ``interpolation``: ``"linear"`` or ``"nearest"``.
    * ``max_memory_gb`` > 0.
    * ``plausibility_air_hu`` < ``plausibility_bone_hu``;
      ``plausibility_max_share`` in ``(0, 1]``.
    """
    check_sampling(s.factor, s.bin_width_gy)
    _numbers("d_pct", s.d_pct, lo=0.0, hi=100.0, unit="%")
    _numbers("d_cc", s.d_cc, lo=0.0, unit="cc")
    _numbers("v_gy", s.v_gy, lo=0.0, unit="Gy")
    _number("near_zero_gy", s.near_zero_gy, lo=0.0, unit="Gy")
    _number("near_zero_rx_pct", s.near_zero_rx_pct, lo=0.0, hi=100.0, unit="%")
    if s.prescription_gy is not None:
        _number("prescription_gy", s.prescription_gy, lo=0.0, lo_open=True, unit="Gy")
    if s.dvh_step_gy is not None:
        _number("dvh_step_gy", s.dvh_step_gy, lo=0.0, lo_open=True, unit="Gy")
    if s.interpolation not in INTERPOLATIONS:
        raise _fail("interpolation", f"must be one of {', '.join(INTERPOLATIONS)}", s.interpolation)
    _number("max_memory_gb", s.max_memory_gb, lo=0.0, lo_open=True, unit="GB")
    if s.plausibility_volumes is not None and not str(s.plausibility_volumes).strip():
        raise _fail("plausibility_volumes", "must be a file path or None", s.plausibility_volumes)
    air = _number("plausibility_air_hu", s.plausibility_air_hu, unit="HU")
    bone = _number("plausibility_bone_hu", s.plausibility_bone_hu, unit="HU")
    if not air < bone:
        raise _fail("plausibility_air_hu", f"must be below plausibility_bone_hu ({bone:g} HU)", air)
    _number("plausibility_max_share", s.plausibility_max_share, lo=0.0, lo_open=True, hi=1.0)
