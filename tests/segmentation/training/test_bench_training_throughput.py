"""The throughput benchmark runs every lever at a tiny size on the CPU."""

import importlib.util
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_training_throughput.py"


def test_every_lever_row_is_measured(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_training_throughput", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    levers = [k for k in bench.LEVERS if "compile" not in k and k != "batch64"]  # CPU time
    out = tmp_path / "t.json"
    assert bench.main(["--synthetic", "2", "--synthetic-shape", "20,28,28", "--patch",
                       "18,24,24", "--widths", "4,8,8,8,8", "--warmup", "1", "--steps", "1",
                       "--threads", "1", "--levers", ",".join(levers), "--json",
                       str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["lever"] for r in rows] == levers
    assert all("error" not in r and r["patches_per_s"] > 0 for r in rows), rows
    by = {r["lever"]: r for r in rows}
    assert by["baseline"]["batch"] == 4 and by["all"]["batch"] == 32
    assert by["batch16"]["lr"] == pytest.approx(2 * by["baseline"]["lr"])  # sqrt rule
    assert "speedup" in by["all"]
    assert all(r["host_syncs_per_step"] is None for r in rows)  # counted on CUDA only
    assert "prepared 2 volumes" in capsys.readouterr().out


def test_host_syncs_are_counted_from_the_sync_debug_warnings(monkeypatch):
    import types
    import warnings

    spec = importlib.util.spec_from_file_location("bench_training_throughput", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    class Trainer:  # a step that synchronises twice, as a .item() and a .cpu() would
        dev = types.SimpleNamespace(type="cuda")
        cfg = types.SimpleNamespace(peak_lr=lambda: 0.01)

        def step(self, lr, balance):
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=2)
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=2)
            warnings.warn("an unrelated warning", UserWarning, stacklevel=2)

    assert bench.count_host_syncs(Trainer(), 3) == 2.0
    assert modes == ["warn", "default"]  # the mode is restored
    cpu = Trainer()
    cpu.dev = types.SimpleNamespace(type="cpu")
    assert bench.count_host_syncs(cpu, 3) is None
