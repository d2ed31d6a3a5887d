"""Unions, parts, TG-263 extras, out-of-scope organs, targets, helpers and suggestions (table-driven)."""

from __future__ import annotations

import pytest

from soars_dose.names import AliasTable, describe_rois, name_key, suggest, tokenize


@pytest.fixture(scope="module")
def table() -> AliasTable:
    return AliasTable.load()


UNIONS = {
    "Constrictors": "Musc_Constrict", "PCMs": "Musc_Constrict", "PCM": "Musc_Constrict",
    "pharyngeal constrictors": "Musc_Constrict", "CONSTRICTORS": "Musc_Constrict",
    "Musc_Constrict": "Musc_Constrict", "Parotids": "Parotids", "Both Parotids": "Parotids",
    "parotid glands": "Parotids", "Lungs": "Lungs", "Eyes": "Eyes", "Cochleas": "Cochleas",
    "Lenses": "Lenses", "OpticNrvs": "OpticNrvs", "Optic Nerves": "OpticNrvs",
    "Submands": "Glnd_Submands", "Glnd_Submands": "Glnd_Submands", "TMJs": "Joint_TMs",
    "BrachialPlexs": "BrachialPlexs", "Parotid bilat": "Parotids",
}


@pytest.mark.parametrize("name, known", UNIONS.items())
def test_a_union_is_never_matched_to_a_part(table, name, known):
    m = table.match(name)
    assert (m.kind, m.canonical, m.known) == ("union", None, known), m


PARTS = {
    "Parotid_L": "Parotid_L", "L Parotid": "Parotid_L", "parotid lt": "Parotid_L",
    "Parotid (R)": "Parotid_R", "PAROTIDLEFT": "Parotid_L", "Musc_Constrict_S": "Musc_Constrict_S",
    "Constrictor_S": "Musc_Constrict_S", "ConstrictorS": "Musc_Constrict_S",
    "PCM_S": "Musc_Constrict_S", "PCM Sup": "Musc_Constrict_S", "SPCM": "Musc_Constrict_S",
    "PCM_M": "Musc_Constrict_M", "Constrictor Inf": "Musc_Constrict_I",
    "Musc_Constrict_I": "Musc_Constrict_I", "Lens_L": "Lens_L", "Eye Rt": "Eye_R",
    "Lung_R": "Lung_R", "Cochlea_L": "Cochlea_L", "L_Cochlea": "Cochlea_L",
    "cochlea rt": "Cochlea_R", "BrachialPlex_L": "BrachialPlex_L",
    "BrachialPlexus_R": "BrachialPlex_R", "Brachial_Plexus_L": "BrachialPlex_L",
    "Lt Brachial Plexus": "BrachialPlex_L", "Cavity_Oral": "Cavity_Oral",
    "Oral_Cavity": "Cavity_Oral", "OralCavity": "Cavity_Oral", "Oral Cavity Extended": "Cavity_Oral",
    "SMGLt": "Glnd_Submand_L", "Hypothalmus": "Hypothalamus",
}


@pytest.mark.parametrize("name, canonical", PARTS.items())
def test_parts_still_match(table, name, canonical):
    m = table.match(name)
    assert m.canonical == canonical, m


TG263_EXTRAS = ["Glottis", "Larynx_SG", "Supraglottic Larynx", "Pharynx", "Lips", "Brain",
                "Lung_L", "Esophagus_S", "Trachea", "Cricopharyngeus"]


@pytest.mark.parametrize("name", TG263_EXTRAS)
def test_tg263_extras_are_known_outside_the_42(table, name):
    frame = describe_rois([(1, name)], table)
    assert frame["status"].iloc[0] == "outside_42", frame.iloc[0].to_dict()
    assert table.match(name).kind == "oar"  # still compared when both sets carry it


OUT_OF_SCOPE = {"Bladder": "Bladder", "Rectum": "Rectum", "Heart": "Heart", "Liver": "Liver",
                "Kidney_L": "Kidney_L", "R Kidney": "Kidney_R", "Femur_Head_L": "Femur_Head_L",
                "Femoral Head Rt": "Femur_Head_R", "Bowel": "Bowel", "BowelBag": "Bowel",
                "Small Bowel": "Bowel_Small", "Stomach": "Stomach", "Prostate": "Prostate"}


@pytest.mark.parametrize("name, known", OUT_OF_SCOPE.items())
def test_organs_outside_head_and_neck_are_known_but_out_of_scope(table, name, known):
    m = table.match(name)
    assert (m.kind, m.canonical, m.known) == ("out_of_scope", None, known), m


OTHERS = {"PTV70": "target", "PTV_56": "target", "CTV_High": "target", "GTVp": "target",
          "GTV-N": "target", "BODY": "external", "External": "external", "Skin": "external",
          "Couch": "ignored", "CouchSurface": "ignored", "Couch_Interior": "ignored",
          "CouchShell": "ignored", "z_Parotid": "derived", "zPTV": "derived",
          "opt_ring": "derived", "Ring_PTV70": "derived", "Parotid_L_PRV": "derived",
          "Cord+5mm": "derived", "Brainstem_3mm": "derived"}


@pytest.mark.parametrize("name, kind", OTHERS.items())
def test_targets_outlines_and_helpers(table, name, kind):
    assert table.match(name).kind == kind


TYPOS = {"Parotd_L": "Parotid_L", "Brianstem": "Brainstem", "Spinalcrd": "SpinalCord",
         "Esophagous": "Esophagus", "OpticChiasim": "OpticChiasm", "Mandibel": "Bone_Mandible"}


@pytest.mark.parametrize("name, expected", TYPOS.items())
def test_typos_get_suggestions_only(table, name, expected):
    assert table.match(name).kind == "unmatched"  # never applied
    assert expected in suggest(name, table)
    row = describe_rois([(7, name)], table).iloc[0]
    assert row["status"] == "unmatched" and expected in row["suggestions"].split("; ")


def test_nothing_close_suggests_nothing(table):
    assert suggest("Xyzzy", table) == []


def test_keys_keep_one_letter_tokens_apart():
    assert name_key("Constrictor S") != name_key("Constrictors")
    assert name_key("PCM S") != name_key("PCMs")
    assert name_key("Brain Stem") == name_key("BrainStem") == "brainstem"
    assert tokenize("PCMs") == ["pcms"] and tokenize("SMGLt") == ["smg", "lt"]


def test_a_user_definition_of_an_out_of_scope_organ_audits_it(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("organs:\n  Heart:\n    lateral: false\n")
    assert AliasTable.load(f).match("Heart").canonical == "Heart"
