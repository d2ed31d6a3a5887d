"""Issue 11, class 5: contours that cannot be what their name says are flagged, never dropped.

Truth is independent of the kernel: volumes of boxes and cylinders in closed form, shares of
a disc on either side of a tissue boundary from shapely polygon clipping, extents beyond the
CT from the slice positions written.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from shapely.geometry import Polygon, box

from soars_dose import audit
from soars_dose import oars as catalogue
from soars_dose.analysis.plausibility import (
    TISSUES,
    load_volume_table,
    tissue_shares,
    volume_flags,
)
from soars_dose.dicom.ct import read_ct_series
from soars_dose.dicom.write import write_ct_series
from soars_dose.dose.compare import Settings
from soars_dose.errors import InputError, SoarsDoseWarning
from soars_dose.grid import Grid
from soars_dose.structures import Structure

from ..helpers import FOR, disc_stack, write_case

GRID = Grid(shape=(48, 60, 60), spacing=(2.5, 2.5, 2.5), origin=(-73.75, -73.75, -58.75))


def _linear(grid):
    k, j, i = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    xyz = grid.index_to_world(np.stack([k, j, i], -1).reshape(-1, 3))
    return (40.0 + 0.2 * xyz[:, 0]).reshape(grid.shape)


def _block(cx, cy, hx, hy, z0, z1, dz=2.5):
    return [np.array([[cx - hx, cy - hy, z], [cx + hx, cy - hy, z], [cx + hx, cy + hy, z],
                      [cx - hx, cy + hy, z]], float) for z in np.arange(z0, z1 + 1e-9, dz)]


def _compare(tmp_path, ref, sub=None, ct=None, settings=None):
    paths = write_case(tmp_path, {"reference": ref, "auto": sub or ref}, grid=GRID,
                       dose=_linear(GRID))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case = audit.load_case(paths["rtdose"], {"reference": paths["reference"],
                                                 "auto": paths["auto"]}, ct=ct)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SoarsDoseWarning)
        res = audit.compare(case, settings)
    return paths, res, [str(w.message) for w in caught]


# ------------------------------------------------------------------ the table
def test_table_covers_every_catalogue_oar_and_fits_its_extent():
    table = load_volume_table()
    for oar in catalogue.CATALOGUE + catalogue.EXTRAS:
        e = table[oar.name]
        assert 0 < e.min_cc < e.max_cc
        assert e.tissue in TISSUES
        # no organ can exceed the cube of its largest dimension
        assert e.max_cc <= oar.max_extent_mm ** 3 / 1000.0, oar.name
        assert e.source
    assert table["Bone_Mandible_L"].tissue == "bone"
    assert table["Cavity_Oral"].tissue == "air"
    assert table["Parotid_L"].tissue == "soft"


@pytest.mark.parametrize("oar,cc,flags", [
    ("SpinalCord", 1359.0, ["volume_high"]), ("SpinalCord", 20.0, []),
    ("SpinalCord", 0.5, ["volume_low"]), ("Parotid_L", 0.2, ["volume_low"]),
    ("Parotid_R", 25.0, []), ("Lens_L", 5.0, ["volume_high"]), ("Unknown", 1e6, []),
    ("Brainstem", float("nan"), []),
])
def test_volume_flags(oar, cc, flags):
    assert volume_flags(oar, cc, load_volume_table()) == flags


def test_user_file_overrides_entries_and_bad_files_are_named(tmp_path):
    f = tmp_path / "vol.yaml"
    f.write_text("SpinalCord: {min_cc: 1000, max_cc: 2000, tissue: soft, source: our block}\n")
    t = load_volume_table(f)
    assert t["SpinalCord"].min_cc == 1000 and t["SpinalCord"].source == "our block"
    assert t["Parotid_L"].max_cc == load_volume_table()["Parotid_L"].max_cc
    for text in ("SpinalCord: [1, 2]\n", "SpinalCord: {min_cc: 5, max_cc: 1}\n",
                 "SpinalCord: {min_cc: a, max_cc: 1}\n", "SpinalCord: {min_cc: 1, max_cc: 2, tissue: gas}\n",
                 "SpinalCord: {min_cc: 1, max_cc: 2, colour: red}\n", "x: [unclosed\n"):
        f.write_text(text)
        with pytest.raises(InputError, match="vol.yaml"):
            load_volume_table(f)


# ----------------------------------------------------------- volume in compare
def test_block_named_spinal_cord_is_flagged_not_dropped(tmp_path):
    """A 110 x 110 x 112.5 mm box named SpinalCord: 1361.25 cc, flagged volume_high."""
    cord = Structure("SpinalCord", 1, _block(5, 0, 55, 55, -55, 55))
    par = Structure("Parotid_L", 2, disc_stack(-30, 20, 15, -15, 15, dz=2.5))  # ~ 22 cc
    paths, res, warns = _compare(tmp_path, [cord, par])
    st = res.stats.set_index(["set", "roi"])
    row = st.loc[("reference", "SpinalCord")]
    assert row["status"] == "ok" and row["plausibility"] == "volume_high"
    assert row["volume_cc"] == pytest.approx(110 * 110 * 112.5 / 1000, rel=1e-3)
    assert row["mean_gy"] == pytest.approx(40 + 0.2 * 5, abs=1e-3)  # dose linear in x
    assert st.loc[("reference", "Parotid_L"), "plausibility"] == ""
    assert any(str(paths["reference"]) in w and "SpinalCord" in w and "1361" in w
               and "volume" in w for w in warns)
    names = res.names.set_index(["set", "original"])
    assert names.loc[("reference", "SpinalCord"), "plausibility"] == "volume_high"
    assert names.loc[("reference", "Parotid_L"), "plausibility"] == ""
    assert any("1361" in m for m in res.messages)


def test_tiny_parotid_is_volume_low_and_override_silences_it(tmp_path):
    par = Structure("Parotid_L", 2, disc_stack(-30, 20, 3, -2.5, 2.5, dz=2.5))  # 0.2 cc
    _, res, _ = _compare(tmp_path / "a", [par])
    assert set(res.stats["plausibility"]) == {"volume_low"}  # both sets
    f = tmp_path / "vol.yaml"
    f.write_text("Parotid_L: {min_cc: 0.1, max_cc: 50, tissue: soft, source: test}\n")
    _, res, _ = _compare(tmp_path / "b", [par], settings=Settings(plausibility_volumes=str(f)))
    assert set(res.stats["plausibility"]) == {""}


# --------------------------------------------------------------- with a CT
def _ct(tmp_path, hu_fn, zs=None):
    """CT on a 1.25 mm in-plane, 2.5 mm slice grid; hu_fn(x, y, z) -> HU."""
    zs = np.arange(-30, 30.1, 2.5) if zs is None else zs
    g = Grid(shape=(len(zs), 100, 100), spacing=(2.5, 1.25, 1.25),
             origin=(-61.875, -61.875, float(zs[0])))
    k, j, i = np.meshgrid(*[np.arange(n) for n in g.shape], indexing="ij")
    xyz = g.index_to_world(np.stack([k, j, i], -1).reshape(-1, 3))
    hu = hu_fn(xyz[:, 0], xyz[:, 1], xyz[:, 2]).reshape(g.shape)
    folder = tmp_path / "ct"
    write_ct_series(hu, g, folder, patient_id="P", frame_of_reference_uid=FOR)
    return folder


def _half_space(boundary_x, left_hu, right_hu):
    return lambda x, y, z: np.where(x < boundary_x, left_hu, right_hu)


def _disc_share(cx, r, boundary_x):
    """Share of a disc of radius r at cx lying at x < boundary_x (shapely, independent)."""
    th = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    disc = Polygon(np.c_[cx + r * np.cos(th), r * np.sin(th)])
    return disc.intersection(box(-1e3, -1e3, boundary_x, 1e3)).area / disc.area


@pytest.mark.parametrize("offset,flagged", [(0.0, True), (4.0, True), (9.0, False), (-3.0, True)])
def test_parotid_partly_in_air(tmp_path, offset, flagged):
    """Air (-1000 HU) at x < b, soft tissue (40 HU) beyond; a parotid disc straddles b.

    The boundary sits on a CT voxel face (k * 1.25 mm), so the voxel occupancy share
    equals the polygon share (up to the sub-pixel sampling)."""
    b = 0.0
    cx = b + offset  # disc centre; share in air = disc area left of b
    folder = _ct(tmp_path, _half_space(b, -1000.0, 40.0))
    par = Structure("Parotid_L", 1, disc_stack(cx, 0, 12, -10, 10, dz=2.5))
    truth = _disc_share(cx, 12, b)
    ct = read_ct_series(folder)
    air, bone, inside = tissue_shares(par, ct.grid, ct.load_hu(), nominal_spacing_mm=2.5)
    assert air == pytest.approx(truth, abs=0.01)
    assert bone == 0.0 and inside == pytest.approx(1.0)
    paths, res, warns = _compare(tmp_path, [par], ct=folder)
    row = res.stats.set_index(["set", "roi"]).loc[("reference", "Parotid_L")]
    assert ("air" in row["plausibility"].split(";")) is flagged
    assert row["status"] == "ok"
    if flagged:
        assert any(str(paths["reference"]) in w and f"{100 * truth:.0f} %" in w for w in warns)


@pytest.mark.parametrize("name,hu,expect", [
    ("SpinalCord", 1000.0, "bone"),        # soft organ in bone
    ("Bone_Mandible_L", 1000.0, ""),       # bone organ in bone: expected
    ("Cavity_Oral", -1000.0, ""),          # air-holding organ in air: expected
    ("Cavity_Oral", 1000.0, "bone"),       # ... but not in bone
    ("Bone_Mandible_L", -1000.0, "air"),   # bone organ in air
    ("Glnd_Submand_L", 40.0, ""),          # soft organ in soft tissue
])
def test_tissue_rules_per_organ(tmp_path, name, hu, expect):
    folder = _ct(tmp_path, lambda x, y, z: np.where(x > 0, hu, 40.0))
    st = Structure(name, 1, disc_stack(15, 0, 6, -10, 10, dz=2.5))  # entirely at x > 0
    other = Structure("Brainstem", 2, disc_stack(-25, 0, 15, -15, 15, dz=2.5))  # 40 HU
    _, res, _ = _compare(tmp_path, [st, other], ct=folder)
    s = res.stats.set_index(["set", "roi"])
    hu_flags = set(s.loc[("reference", name), "plausibility"].split(";")) - {
        "", "volume_low", "volume_high"}  # a 2.5 cc disc is small for some organs
    assert hu_flags == ({expect} if expect else set())
    assert s.loc[("reference", "Brainstem"), "plausibility"] == ""


def test_share_threshold_is_overridable(tmp_path):
    b = 0.0
    cx = b + 4.5  # about 27 % of the disc in air
    folder = _ct(tmp_path, _half_space(b, -1000.0, 40.0))
    par = Structure("Parotid_L", 1, disc_stack(cx, 0, 12, -10, 10, dz=2.5))
    share = _disc_share(cx, 12, b)
    assert 0.2 < share < 0.3
    _, res, _ = _compare(tmp_path / "a", [par], ct=folder)
    assert res.stats["plausibility"].iloc[0] == "air"
    _, res, _ = _compare(tmp_path / "b", [par], ct=folder,
                         settings=Settings(plausibility_max_share=0.3))
    assert res.stats["plausibility"].iloc[0] == ""
    _, res, _ = _compare(tmp_path / "c", [par], ct=folder,
                         settings=Settings(plausibility_air_hu=-1500.0))
    assert res.stats["plausibility"].iloc[0] == ""


@pytest.mark.parametrize("z0,z1,below,above", [
    (-10.0, 40.0, 0.0, 40.0 - 31.25),   # CT slices -30..30: outer face at 31.25 mm
    (-45.0, 10.0, 45.0 - 31.25, 0.0),
    (-40.0, 35.0, 40.0 - 31.25, 35.0 - 31.25),
    (-30.0, 30.0, 0.0, 0.0),
])
def test_contour_beyond_the_ct(tmp_path, z0, z1, below, above):
    folder = _ct(tmp_path, lambda x, y, z: np.full_like(x, 40.0))
    cord = Structure("SpinalCord", 1, disc_stack(0, 0, 5, z0, z1, dz=2.5))
    paths, res, warns = _compare(tmp_path, [cord], ct=folder)
    row = res.stats.set_index(["set", "roi"]).loc[("reference", "SpinalCord")]
    if below or above:
        assert "beyond_ct" in row["plausibility"].split(";")
        w = [w for w in warns if "beyond" in w or "slice" in w]
        assert any(str(paths["reference"]) in x for x in w)
        if below:
            assert any(f"{below:.1f} mm before the first slice" in x for x in w)
        if above:
            assert any(f"{above:.1f} mm past the last slice" in x for x in w)
    else:
        assert row["plausibility"] == ""
    assert row["status"] == "ok"


def test_several_flags_are_joined(tmp_path):
    """A 1359 cc 'SpinalCord' in bone reaching past the CT: volume_high;beyond_ct;bone."""
    folder = _ct(tmp_path, lambda x, y, z: np.full_like(x, 1000.0))
    cord = Structure("SpinalCord", 1, _block(0, 0, 55, 55, -55, 55))
    _, res, _ = _compare(tmp_path, [cord], ct=folder)
    flags = res.stats["plausibility"].iloc[0].split(";")
    assert set(flags) == {"volume_high", "beyond_ct", "bone"}
