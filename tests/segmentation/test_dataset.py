"""The training data set format: a phantom data set written and read back, refusals."""

import json

import numpy as np
import pytest

from soars_dose import oars as catalogue
from soars_dose.errors import InputError, OutputExistsError
from soars_dose.segmentation import dataset
from soars_dose.synthetic import oars42 as phantom42


def test_dataset_round_trip(tmp_path):
    out = phantom42.write_dataset(tmp_path / "ds", 3, seed=2)
    meta, cases = dataset.load_dataset(out)
    assert meta["format"] == "soars-dose-dataset" and len(cases) == 3
    ref = phantom42.make_case(2 * 100003 + 1)
    c = cases[1]
    assert c.case_id == "case_0001" and c.grid.same_as(ref.grid)
    np.testing.assert_array_equal(c.annotated, ref.annotated)
    np.testing.assert_allclose(c.hu, np.round(ref.hu), atol=0.5)
    for b in catalogue.CATEGORIES:
        np.testing.assert_array_equal(c.labels[b], ref.annotated_labels(b))
    with pytest.raises(OutputExistsError):
        phantom42.write_dataset(out, 1)
    (out / "dataset.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="format"):
        dataset.load_dataset(out)
    with pytest.raises(InputError, match="dataset.json"):
        dataset.load_dataset(tmp_path)
