"""The tiny phantom samples, prepared once per module."""

import pytest

pytest.importorskip("torch")

from soars_dose.segmentation import training  # noqa: E402
from soars_dose.segmentation.dataset import DatasetCase  # noqa: E402
from soars_dose.segmentation.preprocess import Preprocessing  # noqa: E402
from soars_dose.synthetic import oars42 as phantom42  # noqa: E402

from .training_helpers import SMALL  # noqa: E402


@pytest.fixture(scope="module")
def small_samples():
    cases = [DatasetCase.from_phantom(phantom42.make_case(s, **SMALL)) for s in range(3)]
    s = training.prepare_samples(cases, "anchor", Preprocessing(target_spacing_mm=SMALL["spacing"]))
    return s[:2], s[2:]
