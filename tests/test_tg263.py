"""Our 42 canonical OAR names against the recorded TG-263 primary names (soars_dose/data/tg263.yaml)."""

from __future__ import annotations

from pathlib import Path

import yaml

import soars_dose
from soars_dose.names import AliasTable
from soars_dose.oars import names

RECORD = yaml.safe_load((Path(soars_dose.__file__).parent / "data" / "tg263.yaml").read_text())


def test_every_catalogue_name_is_recorded_once():
    assert sorted(RECORD) == sorted(names())


def test_each_name_is_its_tg263_name_or_says_why_not():
    table = AliasTable.load()
    for name, entry in RECORD.items():
        tg = entry["tg263"]
        if tg == name:
            continue
        assert entry.get("note"), f"{name} deviates from TG-263 ({tg}) without a note"
        if tg is not None:  # the TG-263 spelling is kept as an alias of ours
            assert table.match(tg).canonical == name, (name, tg)
