"""Revision-effort summaries (SOARS Fig. 4) and time saved, on hand-made files."""

import numpy as np
import pandas as pd
import pytest

from soars_dose.analysis.revisions import (
    CATEGORY_MINUTES,
    OAR_CATEGORY,
    instance_times,
    normalize_category,
    read_revisions,
    revision_summary,
    time_saved,
)
from soars_dose.errors import InputError


def write(tmp_path, text, name="rev.csv", bom=False):
    p = tmp_path / name
    p.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return p


def test_oar_category_matches_soars_stratification():
    aliases = {"Bone_Mandible", "Larynx", "OpticNrv", "Glnd_Thyroid"}
    counts = pd.Series({k: v for k, v in OAR_CATEGORY.items() if k not in aliases}).value_counts()
    assert counts.to_dict() == {"mid-level": 19, "small & hard": 14, "anchor": 9}
    assert OAR_CATEGORY["Bone_Mandible"] == "anchor" and OAR_CATEGORY["Larynx"] == "mid-level"


@pytest.mark.parametrize("text, cat", [
    ("none", "none"), ("None", "none"), ("<1 min", "<1 min"), ("lt1", "<1 min"),
    ("<1", "<1 min"), ("1-3 min", "1-3 min"), ("1-3", "1-3 min"), ("1 - 3 minutes", "1-3 min"),
    ("1\u20133 min", "1-3 min"), (">3 min", ">3 min"), ("GT3", ">3 min"), ("> 3 mins", ">3 min"),
    ("2 min", None), ("min", None), ("", None),
])
def test_normalize_category(text, cat):
    assert normalize_category(text) == cat


def test_read_revisions_spellings_minutes_and_lines(tmp_path):
    p = write(tmp_path, "Patient,ROI,Category,Minutes,reader\n"
                        "HN1,Brainstem,none,,dr a\n"
                        "\n"
                        "HN1,Parotid_L,lt1,0.5,dr a\n"
                        "HN1,OpticChiasm,1-3,,dr b\n"
                        "HN2,Cochlea_L,,4.5,dr b\n"
                        "HN2,Lips,>3 min,,dr b\n", bom=True)
    df = read_revisions(p)
    assert list(df["category"].astype(str)) == ["none", "<1 min", "1-3 min", ">3 min", ">3 min"]
    assert df["minutes"].tolist()[1] == 0.5 and np.isnan(df["minutes"].tolist()[0])
    assert list(df["oar_category"]) == ["anchor", "mid-level", "small & hard", "small & hard",
                                        "other"]
    assert list(df["line"]) == ["line 2", "line 4", "line 5", "line 6", "line 7"]
    assert list(df["reader"]) == ["dr a", "dr a", "dr b", "dr b", "dr b"]


@pytest.mark.parametrize("rows, match", [
    ("HN1,Brainstem,none,\nHN1,Eye_L,maybe,\n", r"line 3: unknown revision category 'maybe'"),
    ("HN1,Brainstem,none,\nHN1,Eye_L,<1 min,5\n",
     r"line 3: category '<1 min' disagrees with minutes 5"),
    ("HN1,Brainstem,none,abc\n", r"line 2: minutes 'abc' is not a number"),
    ("HN1,Brainstem,none,-1\n", r"line 2: minutes must be a finite number >= 0"),
    ("HN1,Brainstem,none,\n,Eye_L,none,\n", r"line 3: empty patient"),
    ("HN1,,none,\n", r"line 2: empty roi"),
    ("HN1,Brainstem,,\n", r"line 2: empty category and no minutes"),
    ("HN1,Brainstem,none,\nHN1,Eye_L,none,\nHN1,Brainstem,gt3,\n",
     r"line 4: HN1 / Brainstem is listed twice \(also at line 2\)"),
    ("HN1,Brainstem,none\n", r"line 2: 3 fields where the header has 4"),
])
def test_malformed_lines_named(tmp_path, rows, match):
    p = write(tmp_path, "patient,roi,category,minutes\n" + rows)
    with pytest.raises(InputError, match=match) as exc:
        read_revisions(p)
    assert str(p) in str(exc.value)


def test_malformed_files(tmp_path):
    with pytest.raises(InputError, match=r"line 1: missing column\(s\) \['roi'\]"):
        read_revisions(write(tmp_path, "patient,category\nHN1,none\n"))
    with pytest.raises(InputError, match="comma-separated"):
        read_revisions(write(tmp_path, "patient;roi;category\nHN1;Brainstem;none\n",
                             name="semi.csv"))
    with pytest.raises(InputError, match="empty"):
        read_revisions(write(tmp_path, "", name="empty.csv"))
    with pytest.raises(InputError, match="not found"):
        read_revisions(tmp_path / "absent.csv")
    with pytest.raises(InputError, match="more than once"):
        read_revisions(write(tmp_path, "patient,roi,roi,category\n", name="dup.csv"))


def test_set_column_allows_same_oar_per_set(tmp_path):
    p = write(tmp_path, "patient,set,roi,category\nHN1,soars,Brainstem,none\n"
                        "HN1,revised,Brainstem,lt1\n")
    assert len(read_revisions(p)) == 2


REV = pd.DataFrame({
    "patient": ["P1", "P2", "P3", "P4"] * 2,
    "roi": ["Brainstem"] * 4 + ["OpticChiasm"] * 4,
    "category": ["none", "none", "<1 min", "1-3 min", ">3 min", "1-3", "gt3", "none"],
})


def test_revision_summary_percentages_by_hand():
    s = revision_summary(REV)
    pct = {(r.level, r.group, r.revision): r.pct for r in s.itertuples()}
    cnt = {(r.level, r.group, r.revision): r.count for r in s.itertuples()}
    assert [pct[("roi", "Brainstem", c)] for c in ("none", "<1 min", "1-3 min", ">3 min")] == [
        50.0, 25.0, 25.0, 0.0]
    assert [pct[("oar_category", "small & hard", c)]
            for c in ("none", "<1 min", "1-3 min", ">3 min")] == [25.0, 0.0, 25.0, 50.0]
    assert [pct[("all", "all", c)] for c in ("none", "<1 min", "1-3 min", ">3 min")] == [
        37.5, 12.5, 25.0, 25.0]
    assert cnt[("all", "all", "none")] == 3
    assert set(s.loc[s["level"] == "oar_category", "group"]) == {"anchor", "small & hard"}
    assert s.groupby(["level", "group"])["pct"].sum().eq(100).all()


def test_time_saved_by_hand():
    t = time_saved(REV, from_scratch_min=10)
    # Brainstem: 0 + 0 + 0.5 + 2 = 2.5 min of revision against 4 x 10 min
    b = t[(t["level"] == "roi") & (t["group"] == "Brainstem")].iloc[0]
    assert b["revision_min_total"] == pytest.approx(2.5)
    assert b["from_scratch_min_total"] == 40 and b["saved_min_total"] == pytest.approx(37.5)
    assert b["saved_pct"] == pytest.approx(93.75) and b["n_minutes_recorded"] == 0
    # OpticChiasm: 4 + 2 + 4 + 0 = 10
    a = t[t["level"] == "all"].iloc[0]
    assert a["revision_min_total"] == pytest.approx(12.5) and a["n"] == 8
    assert a["saved_pct"] == pytest.approx(100 * 67.5 / 80)


def test_time_uses_recorded_minutes_and_dict_lookup():
    rev = REV.assign(minutes=[0, np.nan, 0.25, np.nan, 7.0, np.nan, np.nan, np.nan])
    it = instance_times(rev, {"Brainstem": 6, "small & hard": 12})
    assert it["revision_min"].tolist() == [0, 0, 0.25, 2, 7, 2, 4, 0]
    assert it["from_scratch_min"].tolist() == [6] * 4 + [12] * 4
    assert it["minutes_recorded"].sum() == 3
    assert (it["saved_min"] == it["from_scratch_min"] - it["revision_min"]).all()
    it2 = instance_times(rev, {"default": 3})
    assert (it2["from_scratch_min"] == 3).all()
    assert it2["saved_min"].min() == pytest.approx(-4)        # 7 min revision vs 3 from scratch
    with pytest.raises(InputError, match=r"no time for \['OpticChiasm'\]"):
        instance_times(rev, {"Brainstem": 6})
    with pytest.raises(InputError, match="finite"):
        instance_times(rev, -1)
    assert CATEGORY_MINUTES == {"none": 0.0, "<1 min": 0.5, "1-3 min": 2.0, ">3 min": 4.0}


def test_dataframe_input_validated_with_row_numbers():
    bad = REV.copy()
    bad.loc[5, "category"] = "soon"
    with pytest.raises(InputError, match=r"revisions table, row 6: unknown revision category"):
        revision_summary(bad)


def test_summary_from_path(tmp_path):
    p = write(tmp_path, "patient,roi,category\nP1,Lens_L,none\nP2,Lens_L,gt3\n")
    s = revision_summary(p)
    r = s[(s["level"] == "roi") & (s["revision"] == ">3 min")].iloc[0]
    assert r["count"] == 1 and r["pct"] == 50.0 and r["oar_category"] == "small & hard"
