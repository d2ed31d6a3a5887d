"""device_deadline.sh on the CPU at the tiniest size: its three tasks, logs under OUT, phases.

The shell script is what the one GPU call runs; a mistake in it would cost
a whole device session, so every path it takes there (apart from
``nvidia-smi`` and the benchmark, tested in ``test_bench_training_throughput``)
is run here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from .openkbp_inputs import SCRIPTS, make_inputs  # noqa: E402

REPO = SCRIPTS.parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("device_inputs"))


def _run(tmp_path, inputs, task, extra=""):
    root, start, runs = inputs
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), DEVICE="cpu", DATA=str(root), BENCH="0",
               PY=sys.executable, TASK=task, DEADLINE_S="400", RESERVE_S="150",
               TRAIN_ARGS=f"--start {start} --runs-md {runs} --patch 16 32 32 --batch 2 "
                          f"--max-steps 1 --sync-every 1 --threads 1 {extra}")
    p = subprocess.run(["bash", str(SCRIPTS / "device_deadline.sh")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    return p, out


@pytest.mark.parametrize("task, script, files", [
    ("deadline", "train_deadline.py", ["candidate_int8.pt", "run_record.json"]),
    ("search", "search_vs_plain.py", ["candidate_plain_int8.pt", "candidate_searched_int8.pt",
                                      "comparison.json", "search_vs_plain.md"]),
    ("batch", "batch_per_patch.py", ["batch_per_patch.json", "batch_per_patch.md"]),
])
def test_each_task_runs_its_script_and_leaves_its_logs_under_out(tmp_path, inputs, task,
                                                                 script, files):
    extra = {"search": "--search-batch 2", "batch": "--batches 2 1 --patches 2 --checkpoints 1",
             "deadline": ""}[task]
    p, out = _run(tmp_path, inputs, task, extra)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    console = (out / "console.txt").read_text()
    assert f"{script} exit status 0" in console
    phases = [line.split()[1] for line in (out / "phases.txt").read_text().splitlines()]
    assert phases == ["start", "setup_done", f"{task}_done"]
    for f in files + ["train_log.jsonl"] + (["RUNS.md"] if task != "batch" else []):
        assert (out / f).is_file(), f
    last = json.loads((out / "train_log.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "done"


def test_an_unknown_task_is_refused_before_anything_runs(tmp_path, inputs):
    p, out = _run(tmp_path, inputs, "serach")
    assert p.returncode == 2
    assert "TASK must be deadline, search or batch, not serach" in (out / "console.txt").read_text()
    assert not (out / "train_log.jsonl").exists()


def test_a_failing_script_fails_the_call_and_a_bad_deadline_is_refused(tmp_path, inputs):
    p, out = _run(tmp_path, inputs, "deadline", "--no-such-option")
    assert p.returncode == 2  # argparse's status, passed through the shell script
    assert "train_deadline.py exit status 2" in (out / "console.txt").read_text()
    root, start, runs = inputs
    env = dict(os.environ, OUT=str(tmp_path / "o2"), DEVICE="cpu", DATA=str(root), BENCH="0",
               PY=sys.executable, DEADLINE_S="4.5e2")
    q = subprocess.run(["bash", str(SCRIPTS / "device_deadline.sh")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert q.returncode == 2 and "DEADLINE_S must be whole seconds" in q.stdout
