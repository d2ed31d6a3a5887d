"""Model files: round trip, and refusal of foreign, unsafe and wrong-version files."""

import os
import pickle
import shlex

import pytest

torch = pytest.importorskip("torch")

from soars_dose.errors import OutputExistsError, SoarsDoseError  # noqa: E402
from soars_dose.segmentation import nas  # noqa: E402
from soars_dose.segmentation.modelfile import (  # noqa: E402
    FORMAT_VERSION,
    ModelFileError,
    ModelVersionError,
    NotAModelFileError,
    UnsafeModelFileError,
    load_model,
    save_model,
)
from soars_dose.segmentation.preprocess import Preprocessing  # noqa: E402

OARS = ["Brainstem", "Parotid_L", "Parotid_R"]


class Thing:
    """An arbitrary (harmless) object."""

    def __init__(self):
        self.value = 42


class Evil:
    """Unpickling this runs a shell command (creates a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


@pytest.fixture
def network():
    torch.manual_seed(1)
    search = nas.SearchableUNet(1, len(OARS) + 1, base_width=4)
    return nas.build_fixed(search.derive())


@pytest.fixture
def saved(tmp_path, network):
    path = tmp_path / "net.soars.pt"
    save_model(path, network, oar_names=OARS,
               preprocessing=Preprocessing(target_spacing_mm=(2.0, 1.0, 1.0)),
               provenance={"dataset": "synthetic", "epochs": 0, "seed": 1})
    return path


def test_round_trip(saved, network):
    mf = load_model(saved)
    assert mf.format_version == FORMAT_VERSION and mf.path == saved
    assert mf.oar_names == OARS and mf.label_map() == {"Brainstem": 1, "Parotid_L": 2, "Parotid_R": 3}
    assert mf.preprocessing == Preprocessing(target_spacing_mm=(2.0, 1.0, 1.0))
    assert mf.provenance == {"dataset": "synthetic", "epochs": 0, "seed": 1}
    assert mf.architecture == network.architecture()
    net = mf.build()
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), network.eval()(x))


def test_searchable_network_round_trip(tmp_path):
    torch.manual_seed(2)
    search = nas.SearchableUNet(1, 2, base_width=4)
    path = save_model(tmp_path / "search.pt", search, oar_names=["SpinalCord"])
    net = load_model(path).build()
    assert isinstance(net, nas.SearchableUNet)
    assert net.derive() == search.derive()
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), search.eval()(x))


def test_random_file_is_not_a_model(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(NotAModelFileError, match="random.pt"):
        load_model(path)
    with pytest.raises(NotAModelFileError, match="no such"):
        load_model(tmp_path / "absent.pt")


def test_pickled_objects_are_refused(tmp_path):
    raw = tmp_path / "thing.pkl"
    raw.write_bytes(pickle.dumps(Thing()))
    with pytest.raises(NotAModelFileError, match="thing.pkl"):
        load_model(raw)
    saved = tmp_path / "thing.pt"
    torch.save(Thing(), saved)
    with pytest.raises(UnsafeModelFileError, match=r"thing\.pt.*Thing"):
        load_model(saved)


def test_torch_file_that_is_not_a_model(tmp_path, saved):
    plain = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(3)}, plain)
    with pytest.raises(NotAModelFileError, match="weights.pt"):
        load_model(plain)
    data = torch.load(saved, weights_only=True)
    del data["state_dict"]
    torch.save(data, tmp_path / "nokey.pt")
    with pytest.raises(NotAModelFileError, match="nokey.pt.*state_dict"):
        load_model(tmp_path / "nokey.pt")


def test_wrong_version(tmp_path, saved):
    data = torch.load(saved, weights_only=True)
    data["format_version"] = FORMAT_VERSION + 1
    torch.save(data, tmp_path / "future.pt")
    with pytest.raises(ModelVersionError, match=r"future\.pt.*version 2.*upgrade"):
        load_model(tmp_path / "future.pt")
    assert issubclass(ModelVersionError, ModelFileError) and issubclass(ModelFileError, SoarsDoseError)


def test_weights_that_do_not_fit(tmp_path, network):
    other = nas.plain_3d(network)
    path = save_model(tmp_path / "mix.pt", architecture=network.architecture(),
                      state_dict=other.state_dict(), oar_names=OARS)
    with pytest.raises(NotAModelFileError, match="do not fit"):
        load_model(path).build()


def test_malicious_pickle_is_not_executed(tmp_path, network):
    marker = tmp_path / "PWNED"
    for name, write in [
        ("evil.pt", lambda p: torch.save(Evil(marker), p)),
        ("evil_in_model.pt", lambda p: torch.save({"format": "soars-dose-model",
                                                  "format_version": FORMAT_VERSION,
                                                  "provenance": Evil(marker)}, p)),
        ("evil.pkl", lambda p: p.write_bytes(pickle.dumps(Evil(marker)))),
    ]:
        path = tmp_path / name
        write(path)
        with pytest.raises(ModelFileError, match=name.replace(".", r"\.")) as info:
            load_model(path)
        if name.endswith(".pt"):
            assert isinstance(info.value, UnsafeModelFileError)
            assert "system" in str(info.value)
        assert not marker.exists(), f"{name}: the pickle ran code"


def test_save_checks(tmp_path, network, saved):
    with pytest.raises(OutputExistsError):
        save_model(saved, network, oar_names=OARS)
    save_model(saved, network, oar_names=OARS, overwrite=True)
    with pytest.raises(SoarsDoseError, match="output channels"):
        save_model(tmp_path / "x.pt", network, oar_names=OARS[:2])
    with pytest.raises(SoarsDoseError, match="not one of the 42"):
        save_model(tmp_path / "x.pt", network, oar_names=["Brainstem", "Parotid", "Lens_L"])
    assert not (tmp_path / "x.pt").exists()
