"""ROI name normalisation and TG-263 alias matching (soars_dose.names)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from soars_dose.errors import InputError, NameClashError, SoarsDoseError
from soars_dose.names import (
    AliasTable,
    NameMatch,
    _packaged_text,
    match_names,
    name_key,
    tokenize,
)


@pytest.fixture(scope="module")
def table() -> AliasTable:
    return AliasTable.load()


def write(tmp_path: Path, text: str, name: str = "aliases.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------
# tokenizer
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, tokens", [
    ("LeftParotid", ["left", "parotid"]),
    ("parotid (L)", ["parotid", "l"]),
    ("OpticNerve_Lt", ["optic", "nerve", "lt"]),
    ("Optic-Nerve-Lt", ["optic", "nerve", "lt"]),
    ("PAROTID LEFT", ["parotid", "left"]),
    ("SMGLt", ["smg", "lt"]),
    ("Eye.L", ["eye", "l"]),
    ("Brainstem+3mm", ["brainstem", "3", "mm"]),
    ("  Glnd_Submand_L ", ["glnd", "submand", "l"]),
    ("", []),
])
def test_tokenize(name, tokens):
    assert tokenize(name) == tokens


@pytest.mark.parametrize("name", ["Brain Stem", "BrainStem", "brain_stem", "Brainstem", "BRAIN-STEM"])
def test_name_key_ignores_case_and_separators(name):
    assert name_key(name) == "brainstem"


# ---------------------------------------------------------------------------
# what institutions write
# ---------------------------------------------------------------------------

INSTITUTION_EXAMPLES = [
    # laterality as prefix or suffix, in many forms
    ("L Parotid", "Parotid_L"),
    ("Parotid Lt", "Parotid_L"),
    ("LeftParotid", "Parotid_L"),
    ("Parotid_L", "Parotid_L"),
    ("PAROTID LEFT", "Parotid_L"),
    ("Lt_Parotid", "Parotid_L"),
    ("parotid (L)", "Parotid_L"),
    ("Parotid-Lt", "Parotid_L"),
    ("RightParotid", "Parotid_R"),
    ("Parotid R", "Parotid_R"),
    ("PAROTIDLEFT", "Parotid_L"),   # glued, all capitals
    ("parotidr", "Parotid_R"),      # glued, all lower case
    ("ParotidL", "Parotid_L"),
    ("R. Parotid", "Parotid_R"),
    ("Parotid [Rt]", "Parotid_R"),
    # brainstem
    ("Brain Stem", "Brainstem"),
    ("BrainStem", "Brainstem"),
    ("brain_stem", "Brainstem"),
    ("Brainstem", "Brainstem"),
    # spinal cord
    ("Cord", "SpinalCord"),
    ("Spinal Cord", "SpinalCord"),
    ("SpinalCord", "SpinalCord"),
    ("Spinal-Cord", "SpinalCord"),
    # chiasm
    ("Chiasm", "OpticChiasm"),
    ("Optic Chiasm", "OpticChiasm"),
    ("OpticChiasm", "OpticChiasm"),
    ("Chiasma", "OpticChiasm"),
    # optic nerves
    ("Optic Nerve L", "OpticNrv_L"),
    ("ON_L", "OpticNrv_L"),
    ("OpticNerve_Lt", "OpticNrv_L"),
    ("Optic-Nerve-Lt", "OpticNrv_L"),
    ("OpticNrv_R", "OpticNrv_R"),
    ("OpticNrv", "OpticNrv"),
    # eyes
    ("Globe L", "Eye_L"),
    ("Eye L", "Eye_L"),
    ("Eye-Lt", "Eye_L"),
    # TM joints
    ("TMJ L", "Joint_TM_L"),
    ("TM Joint L", "Joint_TM_L"),
    ("Joint_TM_L", "Joint_TM_L"),
    ("TMJ_R", "Joint_TM_R"),
    # mandible (TG-263 whole bone; custom split halves)
    ("Mandible", "Bone_Mandible"),
    ("Bone_Mandible", "Bone_Mandible"),
    ("Bone_Mandible_L", "Bone_Mandible_L"),
    ("Mandible Rt", "Bone_Mandible_R"),
    # submandibular glands
    ("Submandibular-Lt", "Glnd_Submand_L"),
    ("SMG L", "Glnd_Submand_L"),
    ("Submand L", "Glnd_Submand_L"),
    ("Glnd_Submand_R", "Glnd_Submand_R"),
    # DeepMind-style names
    ("Lacrimal-Lt", "Glnd_Lacrimal_L"),
    ("Cochlea-Rt", "Cochlea_R"),
    ("Spinal-Canal", "SpinalCanal"),
    ("Lung-Lt", "Lung_L"),
    ("Orbit-Rt", "Orbit_R"),
    # the rest of the head-and-neck catalogue
    ("Lens_L", "Lens_L"),
    ("Brain", "Brain"),
    ("Cerebellum", "Cerebellum"),
    ("Larynx", "Larynx"),
    ("Larynx_GSL", "Larynx_GSL"),
    ("Esophagus", "Esophagus"),
    ("Oesophagus", "Esophagus"),
    ("Oral Cavity", "Cavity_Oral"),
    ("Cavity_Oral", "Cavity_Oral"),
    ("Musc_Constrict_S", "Musc_Constrict_S"),
    ("Musc_Constrict_M", "Musc_Constrict_M"),
    ("Musc_Constrict_I", "Musc_Constrict_I"),
    ("Superior Constrictor", "Musc_Constrict_S"),
    ("Temporal Lobe L", "Lobe_Temporal_L"),
    ("Lobe_Temporal_R", "Lobe_Temporal_R"),
    ("Brachial Plexus R", "BrachialPlex_R"),
    ("BrachialPlex_L", "BrachialPlex_L"),
    ("Thyroid", "Glnd_Thyroid"),
    ("Glnd_Thyroid_L", "Glnd_Thyroid_L"),
    ("Thyroid Rt", "Glnd_Thyroid_R"),
    ("Glnd_Lacrimal_R", "Glnd_Lacrimal_R"),
    ("Inner Ear L", "Ear_Internal_L"),
    ("Ear_Internal_R", "Ear_Internal_R"),
    ("Hypothalamus", "Hypothalamus"),
    ("Pituitary", "Pituitary"),
    ("Pineal", "Pineal"),
    ("Epiglottis", "Epiglottis"),
    ("Basal Ganglia L", "BasalGanglia_L"),
    ("BasalGanglia_R", "BasalGanglia_R"),
    ("Lips", "Lips"),
    ("Lung_R", "Lung_R"),
    ("SpinalCanal", "SpinalCanal"),
    ("Orbit_L", "Orbit_L"),
    ("Cochlea_L", "Cochlea_L"),
]


@pytest.mark.parametrize("name, canonical", INSTITUTION_EXAMPLES)
def test_institution_names_map(table, name, canonical):
    m = table.match(name)
    assert isinstance(m, NameMatch)
    assert (m.original, m.canonical, m.kind) == (name, canonical, "oar"), m.reason
    assert m.matched and m.reason


@pytest.mark.parametrize("name", ["BODY", "Body", "Skin", "Outline", "External", "EXTERNAL"])
def test_external(table, name):
    m = table.match(name)
    assert (m.canonical, m.kind) == ("External", "external")


# ---------------------------------------------------------------------------
# never guessed
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, reason", [
    ("Parotid", "no side"),
    ("Lens", "no side"),
    ("Optic Nerve Left Right", "conflicting sides"),
    ("Parotid L R", "conflicting sides"),
    ("Brainstem L", "midline"),
    ("Lt SpinalCord", "midline"),
    ("Cord_R", "midline"),
    ("Bone_Hyoid", "not in the alias table"),
    ("Parotid_L_deep", "not in the alias table"),
    ("L", "only a side"),
    ("", "empty"),
    ("   ", "empty"),
    ("---", "no letters"),
])
def test_unmatched_with_reason(table, name, reason):
    m = table.match(name)
    assert m.canonical is None
    assert m.kind == "unmatched"
    assert reason in m.reason


@pytest.mark.parametrize("name", [
    "Parotid_L_PRV", "PRV SpinalCord", "opt_Parotid", "z_Brainstem", "Parotid_L-PTV",
    "Brainstem+3mm", "Cord_PRV05", "SpinalCord PRV5mm", "zParotid_L", "Brainstem 3mm",
    "Parotid_L avoid", "Ring_Brainstem", "Parotid_L+R",
])
def test_derived_structures_do_not_match(table, name):
    m = table.match(name)
    assert (m.canonical, m.kind) == (None, "derived")
    assert m.reason.startswith("derived structure")


@pytest.mark.parametrize("name", ["PTV70", "PTV_54", "CTV_High", "GTVp", "GTV-N", "ctv 60", "ITV"])
def test_targets_are_reported_not_mapped(table, name):
    m = table.match(name)
    assert (m.canonical, m.kind) == (None, "target")


@pytest.mark.parametrize("name", ["Couch", "CouchSurface", "Couch Interior", "Isocenter"])
def test_ignored(table, name):
    m = table.match(name)
    assert (m.canonical, m.kind) == (None, "ignored")


def test_synonym_using_a_derived_word_still_matches(table):
    # "opt" marks optimisation helpers, but "Opt Nerve" is a synonym
    assert table.match("Opt Nerve R").canonical == "OpticNrv_R"
    assert table.match("opt_Parotid_R").kind == "derived"


def test_non_string_name_is_refused(table):
    with pytest.raises(InputError, match="string"):
        table.match(3)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# the packaged table
# ---------------------------------------------------------------------------

REQUIRED_CANONICAL = """
Brainstem SpinalCord Eye_L Eye_R Lens_L Lens_R OpticChiasm OpticNrv_L OpticNrv_R
Parotid_L Parotid_R Joint_TM_L Joint_TM_R Cochlea_L Cochlea_R Glnd_Submand_L
Glnd_Submand_R Bone_Mandible Bone_Mandible_L Bone_Mandible_R Brain Cerebellum Larynx
Larynx_GSL Esophagus Cavity_Oral Musc_Constrict_S Musc_Constrict_M Musc_Constrict_I
Lobe_Temporal_L Lobe_Temporal_R BrachialPlex_L BrachialPlex_R Glnd_Thyroid
Glnd_Thyroid_L Glnd_Thyroid_R Glnd_Lacrimal_L Glnd_Lacrimal_R Ear_Internal_L
Ear_Internal_R Hypothalamus Pituitary Pineal Epiglottis BasalGanglia_L BasalGanglia_R
Lips Lung_L Lung_R OpticNrv SpinalCanal Orbit_L Orbit_R External
""".split()


def test_packaged_canonical_names_are_unique_and_tg263_shaped(table):
    text, _ = _packaged_text()
    # duplicate mapping keys would be silently collapsed by yaml.safe_load
    organs_node = next(v for k, v in yaml.compose(text).value if k.value == "organs")
    bases = [k.value for k, _ in organs_node.value]
    assert len(bases) == len(set(bases))
    names = table.canonical_names()
    assert len(names) == len(set(names))
    assert len({n.casefold() for n in names}) == len(names)
    for n in names:
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n) and len(n) <= 16, n
    assert set(REQUIRED_CANONICAL) <= set(names)


def test_every_canonical_name_matches_itself(table):
    for name in table.canonical_names():
        for spelling in (name, name.upper(), name.replace("_", " ")):
            m = table.match(spelling)
            if table.kind_of(name) in ("union", "out_of_scope"):  # known, never mapped
                assert (m.kind, m.canonical, m.known) == (table.kind_of(name), None, name), m
            else:
                assert m.canonical == name, (spelling, m.reason)


STUDY_OARS = ["Brainstem", "Eye_L", "Eye_R", "Lens_L", "Lens_R", "OpticChiasm", "OpticNrv_L",
              "OpticNrv_R", "Parotid_L", "Parotid_R", "SpinalCord", "Joint_TM_L", "Joint_TM_R"]

DEEPMIND = {
    "Brain": "Brain", "Brainstem": "Brainstem",
    "Cochlea-Lt": "Cochlea_L", "Cochlea-Rt": "Cochlea_R",
    "Lacrimal-Lt": "Glnd_Lacrimal_L", "Lacrimal-Rt": "Glnd_Lacrimal_R",
    "Lens-Lt": "Lens_L", "Lens-Rt": "Lens_R",
    "Lung-Lt": "Lung_L", "Lung-Rt": "Lung_R",
    "Mandible": "Bone_Mandible",
    "Optic-Nerve-Lt": "OpticNrv_L", "Optic-Nerve-Rt": "OpticNrv_R",
    "Orbit-Lt": "Orbit_L", "Orbit-Rt": "Orbit_R",
    "Parotid-Lt": "Parotid_L", "Parotid-Rt": "Parotid_R",
    "Spinal-Canal": "SpinalCanal", "Spinal-Cord": "SpinalCord",
    "Submandibular-Lt": "Glnd_Submand_L", "Submandibular-Rt": "Glnd_Submand_R",
}

OPENKBP = {
    "Brainstem": "Brainstem", "SpinalCord": "SpinalCord", "RightParotid": "Parotid_R",
    "LeftParotid": "Parotid_L", "Esophagus": "Esophagus", "Larynx": "Larynx",
    "Mandible": "Bone_Mandible",
}


@pytest.mark.parametrize("names, expected", [
    (STUDY_OARS, {n: n for n in STUDY_OARS}),
    (list(DEEPMIND), DEEPMIND),
    (list(OPENKBP), OPENKBP),
], ids=["study-13", "deepmind", "openkbp"])
def test_reference_name_sets_map_completely(names, expected):
    report = match_names(names, source="reference set")
    assert report.mapping == expected
    assert report.duplicates == {}
    assert report.unmatched == []


# ---------------------------------------------------------------------------
# one structure set
# ---------------------------------------------------------------------------

def test_duplicates_are_never_resolved_silently():
    names = ["Parotid_L", "L Parotid", "Parotid R", "Cord", "Spinal Cord", "Brainstem"]
    report = match_names(names, source="rs.dcm")
    assert report.duplicates == {"Parotid_L": ["Parotid_L", "L Parotid"],
                                 "SpinalCord": ["Cord", "Spinal Cord"]}
    assert report.mapping == {"Parotid R": "Parotid_R", "Brainstem": "Brainstem"}
    frame = report.to_frame()
    dup = frame[frame.status == "duplicate"]
    assert sorted(dup.original) == ["Cord", "L Parotid", "Parotid_L", "Spinal Cord"]
    assert set(dup.canonical) == {"Parotid_L", "SpinalCord"}
    assert dup.reason.str.contains("none is used").all()
    with pytest.raises(NameClashError, match=r"rs\.dcm.*Parotid_L") as info:
        report.raise_for_duplicates()
    assert isinstance(info.value, SoarsDoseError)


def test_same_name_twice_is_a_duplicate():
    report = match_names(["Brainstem", "Brainstem"])
    assert report.duplicates == {"Brainstem": ["Brainstem", "Brainstem"]}
    assert report.mapping == {}


def test_report_frame_statuses():
    names = ["Parotid_L", "PTV70", "Parotid_L_PRV", "Couch", "Parotid", "BODY", "GTVp"]
    report = match_names(names)
    frame = report.to_frame()
    assert list(frame.columns) == ["original", "canonical", "kind", "status", "reason"]
    assert list(frame.original) == names
    assert list(frame.status) == ["matched", "target", "derived", "ignored", "unmatched",
                                  "matched", "target"]
    assert list(frame.kind) == ["oar", "target", "derived", "ignored", "unmatched",
                                "external", "target"]
    assert frame.canonical.isna().tolist() == [False, True, True, True, True, False, True]
    assert frame.canonical[0] == "Parotid_L" and frame.canonical[5] == "External"
    assert report.mapping == {"Parotid_L": "Parotid_L", "BODY": "External"}
    assert [m.original for m in report.unmatched] == ["PTV70", "Parotid_L_PRV", "Couch",
                                                      "Parotid", "GTVp"]
    assert [m.original for m in report.unexpected] == ["Parotid"]
    report.raise_for_duplicates()  # no clash, no error


def test_match_names_refuses_a_single_string():
    with pytest.raises(InputError, match="list of ROI names"):
        match_names("Parotid_L")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# user alias files
# ---------------------------------------------------------------------------

def test_user_file_extends_and_overrides(tmp_path):
    path = write(tmp_path, """
        organs:
          Trachea:              # new organ
            lateral: false
            synonyms: [Windpipe]
          Parotid:              # extend an existing organ
            synonyms: [Parotis]
          Orbit:                # take a synonym away from Eye
            synonyms: [Globe]
          Cochlea:
            lateral: optional   # override lateral
        exact:
          "Parotid Sup L": Parotid_L
          "Trach 1": Trachea
        ignore: [Bolus]
        """)
    t = AliasTable.load(path)
    assert t.match("Windpipe").canonical == "Trachea"
    assert t.match("trachea").canonical == "Trachea"
    assert t.match("Parotis Lt").canonical == "Parotid_L"
    assert t.match("Parotid Lt").canonical == "Parotid_L"
    assert t.match("Globe L").canonical == "Orbit_L"
    assert t.match("Eye L").canonical == "Eye_L"
    assert t.match("Cochlea").canonical == "Cochlea"
    assert t.match("parotid  SUP l").canonical == "Parotid_L"
    assert t.match("parotid  SUP l").reason == "exact override"
    assert t.match("Trach 1").canonical == "Trachea"
    assert t.match("bolus").kind == "ignored"
    assert "Trachea" in t.canonical_names()
    # the packaged table is untouched
    default = AliasTable.default()
    assert default.match("Globe L").canonical == "Eye_L"
    assert default.match("Windpipe").kind == "unmatched"
    assert match_names(["Windpipe"], table=t).mapping == {"Windpipe": "Trachea"}


def test_empty_user_file_changes_nothing(tmp_path):
    t = AliasTable.load(write(tmp_path, "# nothing yet\n"))
    assert t.canonical_names() == AliasTable.default().canonical_names()


@pytest.mark.parametrize("text, problem, line", [
    ("organs:\n  Trachea: {lateral: false\n", "not valid YAML", True),
    ("organs:\n  Parotid:\n    synonyms: [Parotis]\n   lateral: true\n", "not valid YAML", True),
    ("organ:\n  Trachea: {lateral: false}\n", "unknown key 'organ'", True),
    ("- Parotid\n- Brainstem\n", "must be a mapping", True),
    ("organs:\n  Trachea:\n    lateral: maybe\n", "must be true, false or optional", True),
    ("organs:\n  Trachea:\n    lateral: false\n    synonyms: Windpipe\n", "must be a list", True),
    ("organs:\n  Trachea:\n    lateral: false\n    colour: red\n", "unknown key 'colour'", True),
    ("organs:\n  Trachea: {lateral: false}\n  Trachea: {lateral: true}\n", "duplicate key", True),
    ("organs:\n  Hyoid:\n    synonyms: [Hyoid Bone]\n", "needs 'lateral", False),
    ("organs:\n  Trach-ea: {lateral: false}\n", "letters, digits", True),
    ("organs:\n  Parotid_L: {lateral: true}\n", "without its _L/_R", True),
    ("organs:\n  Parotid:\n    synonyms: [Parotis Left]\n", "carries a side", True),
    ("organs:\n  A1: {lateral: false, synonyms: [Foo]}\n  B1: {lateral: false, synonyms: [foo]}\n",
     "both claim", True),
    ("organs:\n  Trachea: {lateral: false, synonyms: [Parotid]}\n", "canonical name of organ",
     False),
    ("exact:\n  Foo: NotAnOrgan_L\n", "not a canonical name", False),
    ("ignore: Couch\n", "must be a list", True),
    ("organs:\n  Trachea: {lateral: false, kind: target}\n", "'kind' of Trachea", True),
])
def test_malformed_user_file(tmp_path, text, problem, line):
    path = write(tmp_path, text, name="my_aliases.yaml")
    with pytest.raises(InputError) as info:
        AliasTable.load(path)
    message = str(info.value)
    assert "my_aliases.yaml" in message
    assert problem in message
    if line:
        assert re.search(r"line \d+", message), message


def test_missing_user_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        AliasTable.load(tmp_path / "nope.yaml")


def test_yaml_syntax_error_points_at_the_line(tmp_path):
    path = write(tmp_path, "organs:\n  Trachea:\n    lateral: false\n    synonyms: [a, b\n")
    with pytest.raises(InputError, match=r"line [45]"):
        AliasTable.load(path)


def test_yaml_1_1_booleans_stay_names(tmp_path):
    # ON (optic nerve) and NO are booleans in YAML 1.1; as names they must stay text
    t = AliasTable.load(write(tmp_path, "organs:\n  NervusO: {lateral: false, synonyms: [NO]}\n"))
    assert t.match("NO").canonical == "NervusO"
    assert t.match("ON_R").canonical == "OpticNrv_R"
