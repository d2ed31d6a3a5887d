"""The SOARS OAR catalogue: counts, names, partners, colours, label maps."""

import pytest

from soars_dose import oars as cat
from soars_dose.errors import InputError, SoarsDoseError
from soars_dose.names import AliasTable


def test_counts_per_category():
    assert len(cat.CATALOGUE) == 42
    assert [len(cat.by_category(c)) for c in cat.CATEGORIES] == [9, 19, 14]
    assert {o.name for o in cat.by_category("anchor")} == {
        "Brainstem", "Cerebellum", "Eye_L", "Eye_R", "Bone_Mandible_L", "Bone_Mandible_R",
        "SpinalCord", "Joint_TM_L", "Joint_TM_R"}
    assert {o.name for o in cat.by_category("small_hard")} == {
        "Cochlea_L", "Cochlea_R", "Hypothalamus", "Ear_Internal_L", "Ear_Internal_R",
        "Glnd_Lacrimal_L", "Glnd_Lacrimal_R", "Lens_L", "Lens_R", "OpticNrv_L", "OpticNrv_R",
        "OpticChiasm", "Pineal", "Pituitary"}


def test_unique_names_and_colours():
    names = [o.name for o in cat.CATALOGUE]
    colours = [o.color for o in cat.CATALOGUE]
    assert len(set(names)) == 42
    assert len(set(colours)) == 42
    for o in cat.CATALOGUE:
        assert len(o.color) == 3 and all(0 <= c <= 255 and isinstance(c, int) for c in o.color)
        assert 5.0 <= o.max_extent_mm <= 300.0


def test_partner_symmetry():
    for o in cat.CATALOGUE:
        if o.partner is None:
            assert not o.name.endswith(("_L", "_R"))
            assert cat.swap_lr(o.name) == o.name
            assert o.side is None
        else:
            p = cat.get(o.partner)
            assert p.partner == o.name
            assert p.category == o.category
            assert p.max_extent_mm == o.max_extent_mm
            assert {o.side, p.side} == {"L", "R"}
            assert o.name[:-2] == p.name[:-2]
            assert cat.swap_lr(cat.swap_lr(o.name)) == o.name


def test_every_name_matches_itself_in_the_alias_table():
    table = AliasTable.load()
    for o in cat.CATALOGUE:
        m = table.match(o.name)
        assert (m.kind, m.canonical) == ("oar", o.name), m


def test_get_and_errors():
    assert cat.get("Parotid_L").category == "mid_level"
    with pytest.raises(cat.UnknownOARError, match="'Parotid'"):
        cat.get("Parotid")
    with pytest.raises(KeyError):
        cat.get("L Parotid")
    with pytest.raises(SoarsDoseError, match="category"):
        cat.by_category("tiny")


def test_label_map_and_lr_permutation():
    names = ["Parotid_L", "Brainstem", "Parotid_R"]
    assert cat.label_map(names) == {"Parotid_L": 1, "Brainstem": 2, "Parotid_R": 3}
    assert cat.lr_permutation(names) == [0, 3, 2, 1]
    with pytest.raises(InputError, match="twice"):
        cat.label_map(["Lens_L", "Lens_L"])
    with pytest.raises(InputError, match="string"):
        cat.label_map("Lens_L")
    with pytest.raises(InputError, match="partner"):
        cat.lr_permutation(["Lens_L"])
    assert list(cat.label_map(cat.names())) == cat.names()
    assert cat.names("anchor")[0] == "Brainstem"
