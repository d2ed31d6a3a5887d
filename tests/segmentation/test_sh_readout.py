"""The S&H segmentation read-out: VOI crop -> network -> merged class -> component -> CT grid.

An *oracle* network that outputs the true labels of whatever voxels it is
given must come back as the true organ masks on the CT grid (Dice 1): the
VOI placement, the crop offsets, the left/right pair merge, the group
index of the organ, the connected component at the centre and
``_box_to_ct`` are all checked, without any training.
"""

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from soars_dose import oars as catalogue  # noqa: E402
from soars_dose.segmentation import branches as B  # noqa: E402
from soars_dose.segmentation import inference  # noqa: E402
from soars_dose.segmentation.preprocess import (  # noqa: E402
    Preprocessing,
    prepare_ct,
    prepare_labels,  # noqa: E402
)
from soars_dose.synthetic import oars42 as phantom42  # noqa: E402

NAMES = catalogue.names("small_hard")


class _Oracle(torch.nn.Module):
    """Reads voxel ids from its input (the image *is* the flat voxel index) and returns
    confident one-hot logits of the true label of each voxel (background for padding)."""

    def __init__(self, labels: np.ndarray):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.flat = torch.from_numpy(labels.astype(np.int64).ravel())

    def forward(self, x):
        ids = x[0, 0].round().long()
        inside = ids >= 0
        lab = torch.where(inside, self.flat[ids.clamp(min=0)], torch.zeros_like(ids))
        onehot = torch.nn.functional.one_hot(lab, len(NAMES) + 1).permute(3, 0, 1, 2)
        return 20.0 * onehot[None].float()


def _dice(a, b):
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


@pytest.fixture(scope="module")
def oracle_case():
    case = phantom42.make_case(9001, partial=False)
    pre = Preprocessing(target_spacing_mm=tuple(case.grid.spacing), window_hu=(-200.0, 500.0))
    prep = prepare_ct(case.hu, case.grid, pre)
    assert np.any(np.asarray(prep.crop_start) != 0)  # the body crop offset is exercised
    labels = prepare_labels(case.labels["small_hard"], prep).astype(np.uint8)
    ids = np.arange(labels.size, dtype=np.float32).reshape(labels.shape)
    branch = SimpleNamespace(role=B.SH_SEG, net=_Oracle(labels), oar_names=NAMES,
                             meta={"voi_factor": 3.0, "sh_min_patch": [16, 24, 24]})
    return case, prep, labels, ids, branch


@pytest.mark.parametrize("tta", [False, True])
def test_oracle_network_reads_out_every_sh_organ_exactly_on_the_ct_grid(oracle_case, tta):
    case, prep, labels, ids, branch = oracle_case
    for c, name in enumerate(NAMES, start=1):
        centre = np.argwhere(labels == c).mean(axis=0)
        start, mask = inference.segment_voi(branch, ids, name, centre, prep.grid.spacing,
                                            fill=-1.0, tta=tta)
        # on the network grid: the VOI holds exactly this organ (not its partner)
        full = np.zeros(labels.shape, bool)
        lo = np.maximum(start, 0)
        hi = np.minimum(start + np.asarray(mask.shape), labels.shape)
        full[tuple(slice(a, b) for a, b in zip(lo, hi))] = mask[
            tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))]
        assert np.array_equal(full, labels == c), name
        # on the CT grid
        box = inference._box_to_ct(mask, start, prep)
        out = np.zeros(case.hu.shape, bool)
        out[tuple(slice(a, a + s) for a, s in zip(box.start, box.mask.shape))] = box.mask
        assert _dice(out, case.mask(name)) == 1.0, name


def test_oracle_read_out_survives_a_detection_error_of_two_voxels(oracle_case):
    case, prep, labels, ids, branch = oracle_case
    rng = np.random.default_rng(3)
    for c, name in enumerate(NAMES, start=1):
        centre = np.argwhere(labels == c).mean(axis=0) + rng.uniform(-2.0, 2.0, 3)
        start, mask = inference.segment_voi(branch, ids, name, centre, prep.grid.spacing,
                                            fill=-1.0)
        gt = B.extract(torch.from_numpy((labels == c).astype(np.uint8)), start,
                       mask.shape).numpy() > 0
        assert _dice(mask, gt) == 1.0, name


def test_component_falls_back_to_the_nearest_not_the_largest():
    mask = np.zeros((9, 21, 21), bool)
    mask[3:6, 2:9, 2:5] = True        # the partner organ: large, far from the centre
    mask[4, 10:12, 12:14] = True      # this organ: small, next to (not on) the centre
    centre = np.array([4, 10, 10])
    out = inference._component(mask, centre)
    assert out.sum() == 4 and out[4, 10, 12] and not out[4, 5, 3]
    # the component on the centre wins whatever its size
    mask[4, 10, 10] = True
    mask[4, 10, 11] = True
    out = inference._component(mask, centre)
    assert out[4, 10, 10] and out.sum() == 6 and not out[4, 5, 3]
    # one component or none: unchanged
    single = np.zeros_like(mask)
    single[0, 0, 0] = True
    assert np.array_equal(inference._component(single, centre), single)
    assert not inference._component(np.zeros_like(mask), centre).any()
