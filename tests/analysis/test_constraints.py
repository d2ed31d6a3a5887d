"""Dose constraints: the packaged table, user files, evaluation and verdict flips."""

import textwrap

import numpy as np
import pandas as pd
import pytest

from soars_dose.analysis.constraints import (
    METRIC_RE,
    Constraint,
    constraint_flips,
    evaluate_constraints,
    load_constraints,
)
from soars_dose.errors import InputError
from soars_dose.names import AliasTable


def test_packaged_table_is_valid_and_canonical():
    cs = load_constraints()
    assert len(cs) >= 20
    canonical = set(AliasTable.load().canonical_names())
    for c in cs:
        assert c.roi in canonical, c
        assert METRIC_RE.match(c.metric) and c.op in ("<", "<=") and c.source
    by = {(c.roi, c.metric): c for c in cs}
    # serial organs on the near-maximum D0.03cc (issue 13), the point maximum on request
    for roi in ("Brainstem", "SpinalCord", "OpticChiasm", "OpticNrv_L", "Lens_R"):
        assert (roi, "max_gy") not in by and (roi, "d0_03cc_gy") in by, roi
    assert by[("Brainstem", "d0_03cc_gy")].limit == 54
    assert by[("SpinalCord", "d0_03cc_gy")].limit == 45
    assert by[("Lens_L", "d0_03cc_gy")].limit == 10
    point = {(c.roi, c.metric): c for c in load_constraints(point_max=True)}
    assert point[("Brainstem", "max_gy")].limit == 54 and ("Brainstem", "d0_03cc_gy") not in point
    assert point[("Parotid_R", "mean_gy")].limit == 26
    assert by[("Parotid_R", "mean_gy")].limit == 26
    assert by[("Cochlea_L", "mean_gy")].op == "<="
    assert by[("Larynx", "v50gy_pct")].unit == "%"


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def test_user_file_replaces_default(tmp_path):
    p = write(tmp_path, """\
        # my limits
        - roi: [Parotid_L, Parotid_R]
          metric: mean_gy
          op: "<"
          limit: 20
          source: QUANTEC (Deasy et al. 2010), one gland
        - roi: SpinalCord
          metric: d0_03cc_gy
          op: "<="
          limit: 48
          source: local protocol
        """)
    cs = load_constraints(p)
    assert [c.label for c in cs] == ["Parotid_L mean_gy < 20 Gy", "Parotid_R mean_gy < 20 Gy",
                                     "SpinalCord d0_03cc_gy <= 48 Gy"]


@pytest.mark.parametrize("entry, match", [
    ('  op: ">"', r"entry 2 \(Brainstem\): op must be '<' or '<='"),
    ('  op: "<"\n  extra: 1', r"entry 2: unknown key\(s\) \['extra'\]"),
    ('  op: "<"\n  limit2: 3', r"entry 2: unknown key"),
])
def test_malformed_entry_named(tmp_path, entry, match):
    text = ("- roi: SpinalCord\n  metric: max_gy\n  op: '<'\n  limit: 45\n  source: RTOG\n"
            "- roi: Brainstem\n  metric: max_gy\n" + entry + "\n  limit: 54\n  source: QUANTEC\n")
    p = write(tmp_path, text)
    with pytest.raises(InputError, match=match) as exc:
        load_constraints(p)
    assert str(p) in str(exc.value) and "line " in str(exc.value)


@pytest.mark.parametrize("body, match", [
    ("- roi: Brainstem\n  metric: max_gy\n  op: '<'\n  source: x\n", r"line 1\): entry 1: missing key"),
    ("- roi: Brainstem\n  metric: dmax\n  op: '<'\n  limit: 54\n  source: x\n",
     r"line 2\): entry 1 \(Brainstem\): metric 'dmax' is not a stats column"),
    ("- roi: Brainstem\n  metric: max_gy\n  op: '<'\n  limit: lots\n  source: x\n",
     r"line 4\): entry 1 \(Brainstem\): limit must be a finite number"),
    ("- roi: Brainstem\n  metric: max_gy\n  op: '<'\n  limit: -1\n  source: x\n", "limit must be"),
    ("- roi: Brainstem\n  metric: max_gy\n  op: '<'\n  limit: 54\n  source: x\n"
     "- roi: Brainstem\n  metric: max_gy\n  op: '<'\n  limit: 54\n  source: y\n",
     r"entry 2 \(Brainstem\): constraint 'Brainstem max_gy < 54 Gy' repeats entry 1"),
    ("roi: Brainstem\n", "must be a list"),
    ("", "contains no constraints"),
    ("- roi: [Brainstem\n", "not valid YAML"),
    ("- roi: []\n  metric: max_gy\n  op: '<'\n  limit: 54\n  source: x\n", "empty list"),
])
def test_malformed_files(tmp_path, body, match):
    p = write(tmp_path, body)
    with pytest.raises(InputError, match=match) as exc:
        load_constraints(p)
    assert str(p) in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_constraints(tmp_path / "nope.yaml")


CS = [
    Constraint("Brainstem", "max_gy", "<", 54.0, "QUANTEC"),
    Constraint("Parotid_L", "mean_gy", "<", 26.0, "RTOG 0225"),
    Constraint("Cochlea_L", "mean_gy", "<=", 45.0, "QUANTEC"),
    Constraint("Larynx", "v50gy_pct", "<", 27.0, "QUANTEC"),
]


def cohort():
    rows = [
        # patient, set, roi, status, mean_gy, max_gy
        ("P1", "reference", "Brainstem", "ok", 30.0, 53.0),
        ("P1", "soars", "Brainstem", "ok", 31.0, 55.0),       # pass -> fail
        ("P1", "reader", "Brainstem", "ok", 30.0, 53.9),      # pass, no flip
        ("P1", "reference", "Parotid_L", "ok", 27.0, 60.0),
        ("P1", "soars", "Parotid_L", "ok", 25.0, 60.0),        # fail -> pass
        ("P1", "reader", "Parotid_L", "missing", np.nan, np.nan),
        ("P1", "reference", "Cochlea_L", "ok", 45.0, 50.0),    # <= boundary: pass
        ("P1", "soars", "Cochlea_L", "partial", 45.01, 50.0),  # fail
        ("P1", "reference", "Larynx", "ok", 40.0, 60.0),
        ("P1", "reference", "Lens_L", "ok", 2.0, 3.0),         # no constraint in CS
        ("P2", "reference", "Brainstem", "ok", 30.0, 54.0),   # < boundary: fail
        ("P2", "soars", "Brainstem", "ok", 30.0, 54.0),       # fail, no flip
    ]
    return pd.DataFrame(rows, columns=["patient", "set", "roi", "status", "mean_gy", "max_gy"])


def test_evaluate_constraints_by_hand():
    ev = evaluate_constraints(cohort(), CS)
    assert len(ev) == 11       # every row with a constraint; Lens_L has none
    get = ev.set_index(["patient", "set", "roi"])
    assert bool(get.loc[("P1", "reference", "Brainstem"), "passed"])
    assert not bool(get.loc[("P1", "soars", "Brainstem"), "passed"])
    assert get.loc[("P1", "soars", "Brainstem"), "value"] == 55.0
    assert bool(get.loc[("P1", "reference", "Cochlea_L"), "passed"])
    assert not bool(get.loc[("P2", "reference", "Brainstem"), "passed"])
    miss = get.loc[("P1", "reader", "Parotid_L")]
    assert miss["status"] == "no_value" and pd.isna(miss["passed"])
    assert miss["roi_status"] == "missing"
    lar = get.loc[("P1", "reference", "Larynx")]
    assert lar["status"] == "not_available" and pd.isna(lar["passed"])
    assert lar["constraint"] == "Larynx v50gy_pct < 27 %"
    assert str(ev["passed"].dtype) == "boolean"


def test_constraint_flips_by_hand():
    flips = constraint_flips(evaluate_constraints(cohort(), CS))
    got = {(r.patient, r.set, r.roi): (r.direction, r.reference_value, r.value)
           for r in flips.itertuples()}
    assert got == {
        ("P1", "soars", "Brainstem"): ("pass->fail", 53.0, 55.0),
        ("P1", "soars", "Parotid_L"): ("fail->pass", 27.0, 25.0),
        ("P1", "soars", "Cochlea_L"): ("pass->fail", 45.0, 45.01),
    }
    assert list(flips.columns)[:4] == ["patient", "set", "roi", "constraint"]


def test_evaluate_with_packaged_default_and_table_input():
    st = cohort()
    ev = evaluate_constraints(st, load_constraints(point_max=True))   # packaged, point max
    assert {"Brainstem max_gy < 54 Gy", "Parotid_L mean_gy < 26 Gy"} <= set(ev["constraint"])
    assert "Lens_L max_gy < 10 Gy" in set(ev["constraint"])
    table = pd.DataFrame([{"roi": "Brainstem", "metric": "max_gy", "op": "<", "limit": 54,
                           "source": "x"}])
    assert len(evaluate_constraints(st, table)) == 5
    with pytest.raises(InputError, match="lacks the column"):
        evaluate_constraints(st.drop(columns="status"), CS)
