"""The `edgekit` command end to end on the local target: real compress, real agent, real store."""

import json
import sqlite3
import sys
from pathlib import Path

import pytest

from conftest import run_cli

FACTORY_MODULE = '''
import torch
from torch import nn

def build():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()

def broken():
    raise RuntimeError("weights server is down")
'''


def deploy(*extra):
    return run_cli("deploy", "--target", "local", "--profile", "fast", *extra)


def test_deploy_installs_the_chosen_variant(workdir):
    proc = deploy("--json", "--force")  # --force: kept for compatibility, means "measure" (the default)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["chosen"] and doc["smoke_test"]["passed"]
    assert "bundled example digits-cnn" in proc.stderr
    rows = {r["recipe"]: r for r in doc["variants"]}
    assert set(rows) == {"onnx:fp32", "onnx:int8-static"}
    for row in rows.values():
        assert row["latency"]["n"] >= 20 and row["latency"]["p90_ms"] > 0 and row["memory"]["peak_rss_mb"] > 0
        assert row["metrics"]["accuracy"] > 0.95
    chosen = next(r for r in doc["variants"] if r["status"] == "chosen")
    assert chosen["id"] == doc["chosen"]

    installed = Path(doc["deployment"]["models"]["digits-cnn"]["path"])
    assert installed.is_file() and installed.parent.name == doc["chosen"]
    assert (Path.home() / ".edgekit/deployments/digits-cnn/current").resolve() == installed.parent

    db = sqlite3.connect(workdir / ".edgekit/results.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    stored = dict(db.execute("SELECT variant_id, p90_ms FROM measurements WHERE run_id=?", (doc["run_id"],)))
    assert stored == {r["id"]: r["latency"]["p90_ms"] for r in doc["variants"]}
    decided = {r[0]: r[1:] for r in db.execute(
        "SELECT variant_id, status, reason, objective, objective_value FROM decisions WHERE run_id=? AND target=?",
        (doc["run_id"], "local"))}
    assert decided == {r["id"]: (r["status"], r["reason"], doc["objective"], r["latency"]["p90_ms"])
                       for r in doc["variants"]}, "the run records what it decided, as it printed it"


def test_table_output_rollback_and_status(workdir, monkeypatch):
    proc = deploy()
    assert proc.returncode == 0, proc.stderr
    assert "★" in proc.stdout and "chosen" in proc.stdout and "Installed onnx:" in proc.stdout
    first = json.loads(run_cli("status", "--target", "local", "--json").stdout)["models"]["digits-cnn"]["current"]

    # A second deploy optimising size picks the int8 variant; rollback returns to the first.
    (workdir / "profiles" / "small.toml").write_text(
        (workdir / "profiles" / "fast.toml").read_text().replace('objective = "p90_ms"', 'objective = "size_bytes"'))
    proc = run_cli("deploy", "--target", "local", "--profile", "small", "--reuse", "--json")
    assert proc.returncode == 0, proc.stderr
    second = json.loads(proc.stdout)
    assert second["chosen_recipe"] == "onnx:int8-static"
    # --reuse, same artifacts, device and bench settings: the first run's measurements, all of them, marked.
    first_run = second["run_id"] - 1
    assert all(r["measurement_reused"] and r["reused_from_run"] == first_run and r["cached"]
               for r in second["variants"])
    db = sqlite3.connect(workdir / ".edgekit/results.db")
    assert db.execute("SELECT COUNT(*) FROM measurements WHERE run_id=?", (second["run_id"],)).fetchone()[0] == 0
    # The terminal table and the report say where the figures came from.
    monkeypatch.setenv("COLUMNS", "1000")  # one line per row
    table = run_cli("report", "--table", "--run", str(second["run_id"]))
    assert table.returncode == 0 and f"reused from run {first_run}" in table.stdout, table.stderr
    report = json.loads(run_cli("report", "--json", "--run", str(second["run_id"])).stdout)
    assert {r["reused_from_run"] for r in report["targets"][0]["variants"]} == {first_run}
    page = run_cli("report", "--run", str(second["run_id"]), "-o", "r.html")
    assert page.returncode == 0 and f'data-reused-from="{first_run}"' in (workdir / "r.html").read_text()

    if first != second["chosen"]:
        status = json.loads(run_cli("rollback", "--target", "local", "--json").stdout)["models"]["digits-cnn"]
        assert (status["current"], status["previous"]) == (first, second["chosen"])
    proc = run_cli("status", "--target", "local")
    assert proc.returncode == 0 and "digits-cnn: current" in proc.stdout


SKEWED_RUNTIME = """
# A device whose onnxruntime returns wrong numbers (as tflite-runtime 2.14 did for dynamic-range
# int8 models): the agent is the real one; only the runtime's outputs are off.
import onnxruntime
_run = onnxruntime.InferenceSession.run
def run(self, *args, **kwargs):
    return [out + 3.0 for out in _run(self, *args, **kwargs)]
onnxruntime.InferenceSession.run = run
"""


def test_smoke_test_failure_keeps_the_previous_deployment(workdir, tmp_path):
    assert deploy().returncode == 0
    before = json.loads(run_cli("status", "--target", "local", "--json").stdout)["models"]["digits-cnn"]

    site = tmp_path / "skewed"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SKEWED_RUNTIME)
    python = site / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    (workdir / "targets").mkdir()
    (workdir / "targets" / "skewed.toml").write_text(f'transport = "local"\npython = "{python}"\n')

    # Profiling already runs evaluation samples on the device: the skew rejects every variant there.
    proc = run_cli("deploy", "--target", "skewed", "--profile", "fast")
    assert proc.returncode == 4, proc.stderr
    assert "outputs on the device differ from the host's" in proc.stderr and "abs diff" in proc.stderr
    # Without that check (parity_samples = 0) the smoke test of the installed copy still stops it.
    fast = (workdir / "profiles" / "fast.toml").read_text()
    (workdir / "profiles" / "unchecked.toml").write_text(fast.replace("[bench]\n", "[bench]\nparity_samples = 0\n"))
    proc = run_cli("deploy", "--target", "skewed", "--profile", "unchecked")
    assert proc.returncode == 3, proc.stderr
    assert "failed its smoke test (" in proc.stderr and "abs diff" in proc.stderr
    assert "previous deployment stays current" in proc.stderr
    after = json.loads(run_cli("status", "--target", "local", "--json").stdout)["models"]["digits-cnn"]
    assert after["current"] == before["current"] and after["path"] == before["path"]
    db = sqlite3.connect(workdir / ".edgekit/results.db")
    assert db.execute("SELECT ok, message FROM deployments WHERE target='skewed'").fetchone()[0] == 0


def test_reuse_and_force_contradict(workdir):
    proc = run_cli("profile", "--target", "local", "--reuse", "--force")
    assert proc.returncode == 2 and "--reuse and --force contradict" in proc.stderr
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr


def test_rollback_with_nothing_to_roll_back(workdir):
    proc = run_cli("rollback", "--target", "local")
    assert proc.returncode == 2 and "0 deployed models" in proc.stderr


def test_user_factory_via_flags_and_spec_file(workdir):
    (workdir / "mymodels.py").write_text(FACTORY_MODULE)
    proc = run_cli("compress", "--factory", "mymodels:build", "--input", "x:1x1x8x8", "--recipe", "onnx:fp32", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["model"] == "build" and doc["variants"][0]["status"] == "ok"
    assert doc["variants"][0]["metrics"] == {}  # no evaluation data given: no invented accuracy

    (workdir / "edgekit.toml").write_text(
        '[model]\nname = "linear"\nfactory = "mymodels:build"\n'
        'inputs = [{ name = "x", shape = [1, 1, 8, 8] }]\n'
        '[data]\nevaluation = "edgekit.examples.digits:evaluation"\n')
    proc = run_cli("compress", "--recipe", "onnx:fp32", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["variants"][0]["metrics"]["top1_agreement"] == 1.0


BAD_INPUTS = [
    ("missing model file", ["--model-path", "nope.onnx", "--input", "x:1x4"], "--model-path nope.onnx: file not found"),
    ("unimportable factory", ["--factory", "no_such_pkg.models:build", "--input", "x:1x4"], "cannot import no_such_pkg.models"),
    ("factory that raises", ["--factory", "mymodels:broken", "--input", "x:1x1x8x8"], "raised RuntimeError: weights server is down"),
    ("wrong input shape", ["--factory", "mymodels:build", "--input", "x:1x3x32x32"], "rejects the declared input x[1, 3, 32, 32]"),
    ("unknown target", ["--target", "nope"], "--target nope: unknown target"),
    ("unknown profile", ["--profile", "nope"], "--profile nope: unknown profile"),
    ("malformed TOML", ["--spec", "bad.toml"], "bad.toml: malformed TOML"),
]


@pytest.mark.parametrize("name, args, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(workdir, name, args, message):
    (workdir / "mymodels.py").write_text(FACTORY_MODULE)
    (workdir / "bad.toml").write_text("[model\nname=")
    if "--target" not in args:
        args = ["--target", "local", *args]
    proc = run_cli("deploy", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Fix:" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 1
    assert not (workdir / ".edgekit/results.db").exists(), "nothing written to the results store"
    assert not (Path.home() / ".edgekit").exists(), "nothing written to the device"


def test_targets_list_and_recipes(workdir):
    proc = run_cli("targets", "list", "--json")
    assert proc.returncode == 0
    assert any(t["name"] == "local" and t["transport"] == "local" for t in json.loads(proc.stdout))
    assert "onnx:int8-static" in run_cli("recipes").stdout


def test_fewer_evaluation_samples_than_parity_samples_runs_them_all_with_a_note(workdir):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 10)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "lin",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), "lin.onnx")
    np.savez("eval.npz", x=rng.random((3, 64), dtype=np.float32), labels=np.arange(3))
    (workdir / "profiles" / "one.toml").write_text('[build]\nrecipes = ["onnx:fp32"]\n[bench]\nwarmup_s = 0.05\n'
                                                   'min_runs = 20\nmin_s = 0.1\nmax_s = 5.0\nrounds = 1\n'
                                                   'parity_samples = 64\n')
    args = ("profile", "--target", "local", "--profile", "one", "--model-path", "lin.onnx", "--input", "x:1x64",
            "--evaluation", "eval.npz")
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "runs all 3 evaluation samples, fewer than the 64 the profile's parity_samples asks for" in \
        " ".join(proc.stderr.split())
    doc = json.loads(run_cli(*args, "--json").stdout)
    assert doc["variants"][0]["device_parity"]["samples"] == 3


def test_the_same_weights_under_another_name_deploy_under_that_name(workdir):
    """The artifact cache is keyed by content, so the second name finds the first name's build;
    the install must still go where the second name says."""
    first = json.loads(deploy("--json").stdout)
    proc = deploy("--json", "--name", "digits-b")
    assert proc.returncode == 0, proc.stderr
    second = json.loads(proc.stdout)
    assert second["model"] == "digits-b" and second["chosen"]
    models = json.loads(run_cli("status", "--target", "local", "--json").stdout)["models"]
    assert set(models) == {"digits-cnn", "digits-b"}
    assert models["digits-b"]["current"] == second["chosen"] and "/deployments/digits-b/" in models["digits-b"]["path"]
    assert models["digits-cnn"]["current"] == first["chosen"]
    assert Path(models["digits-b"]["path"]).is_file()
