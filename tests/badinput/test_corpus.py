"""Every hostile file of the corpus is refused by its reader, by name and with the numbers."""

from __future__ import annotations

import warnings

import pytest

from soars_dose.dicom.ct import read_ct_series
from soars_dose.dicom.rtdose import read_rtdose
from soars_dose.dicom.rtstruct import read_rtstruct
from soars_dose.errors import SoarsDoseError

from .corpus import CORPUS

READERS = {"rtdose": read_rtdose, "rtstruct": read_rtstruct, "ct": read_ct_series}


def test_corpus_is_large_and_covers_every_reader():
    kinds = {h.kind for h in CORPUS.values()}
    assert kinds == {"rtdose", "rtstruct", "ct"}
    assert len(CORPUS) >= 75


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_reader_refuses(name, tmp_path):
    h = CORPUS[name]
    target = h.make(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's own value warnings are not ours to test
        with pytest.raises(SoarsDoseError) as info:
            READERS[h.kind](target)
    exc = info.value
    assert type(exc) is h.error, f"{name}: {type(exc).__name__}: {exc}"
    msg = str(exc)
    assert h.named(target) in msg, msg
    for frag in h.fragments:
        assert frag in msg, f"{name}: {frag!r} not in {msg!r}"
