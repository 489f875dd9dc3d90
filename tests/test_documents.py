"""The host's check of agent documents: real documents from the real agent, then altered as a
broken or hostile device would send them; and one device that lies, driven through the CLI."""

from __future__ import annotations

import copy
import json
import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import run_cli
from edgekit import documents
from edgekit.bundle import write_agent
from edgekit.errors import DeviceError


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Path:
    return write_agent(tmp_path_factory.mktemp("agent") / "edgekit-agent.pyz")


def _agent(agent: Path, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(agent), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def real(agent, tmp_path_factory) -> dict:
    """What the real agent answers to probe, bench, install and status on this machine."""
    tmp = tmp_path_factory.mktemp("docs")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = tmp / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    import hashlib

    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    work = tmp / "work"
    docs = {
        "probe": _agent(agent, "probe"),
        "bench": _agent(agent, "bench", "--artifact", str(model), "--runtime", "onnxruntime", "--sha256", sha,
                        "--warmup-s", "0", "--min-runs", "30", "--min-s", "0", "--max-runs", "40",
                        "--idle-s", "0", "--power", "off"),
        "install": _agent(agent, "install", "--workdir", str(work), "--model", "m", "--variant", "v1",
                          "--artifact", str(model), "--sha256", sha, "--meta", '{"recipe": "onnx:fp32"}'),
        "activate": _agent(agent, "activate", "--workdir", str(work), "--model", "m", "--variant", "v1"),
        "version": _agent(agent, "version"),
    }
    docs["status"] = _agent(agent, "status", "--workdir", str(work))
    return docs


def check(command: str, doc: dict, max_samples: int = documents.MAX_SAMPLES) -> None:
    documents.validate(command, doc, "dev", max_samples)


def refused(command: str, doc: dict, *words: str, max_samples: int = documents.MAX_SAMPLES) -> str:
    with pytest.raises(DeviceError) as info:
        check(command, doc, max_samples)
    assert info.value.kind == "bad_document"
    message = str(info.value)
    assert "\n" not in message and message.startswith("target dev: ")
    for word in words:
        assert word in message, message
    return message


def test_the_real_agents_documents_pass(real):
    for command, doc in real.items():
        check(command, doc)
    assert real["bench"]["latency"]["n"] == len(real["bench"]["samples_ms"]) <= 40
    check("bench", real["bench"], max_samples=40)


@pytest.mark.parametrize("value, shown", [(float("-inf"), "-inf"), (float("nan"), "nan"), (-0.5, "-0.5"),
                                          ("fast", "'fast'"), (None, "None"), (True, "True"), ([1.0], "[1.0]")])
def test_a_bad_latency_figure_is_named(real, value, shown):
    doc = copy.deepcopy(real["bench"])
    doc["latency"]["p90_ms"] = value
    refused("bench", doc, "bench.latency.p90_ms is " + shown, "Fix: run again")


def test_non_finite_figures_survive_no_json_round_trip(real):
    """What a device prints (-Infinity, NaN) parses in Python's json; the check is what stops it."""
    doc = copy.deepcopy(real["bench"])
    doc["latency"]["p99_ms"] = float("inf")
    refused("bench", json.loads(json.dumps(doc)), "bench.latency.p99_ms is inf")


@pytest.mark.parametrize("where, key, value, words", [
    ("memory", "peak_rss_mb", -1.0, ["bench.memory.peak_rss_mb is -1.0"]),
    ("memory", "peak_rss_mb", "12 MB", ["bench.memory.peak_rss_mb is '12 MB', not a number"]),
    ("cold", "load_ms", float("nan"), ["bench.cold.load_ms is nan"]),
    ("latency", "ci95_median_ms", [1.0, float("inf")], ["bench.latency.ci95_median_ms[1]"]),
    ("latency", "ci95_median_ms", [1.0], ["bench.latency.ci95_median_ms", "two bounds"]),
    ("latency", "n", 1.5, ["bench.latency.n is 1.5, not an integer"]),
    ("latency", "min_ms", 1e9, ["min_ms", "out of order"]),
    ("power", "available", "yes", ["bench.power.available"]),
    ("load", "other_cpu", 1.5, ["bench.load.other_cpu is 1.5, not a fraction"]),
    ("load", "other_cpu", "busy", ["bench.load.other_cpu is 'busy'"]),
])
def test_bad_fields_of_a_bench_document(real, where, key, value, words):
    doc = copy.deepcopy(real["bench"])
    doc[where][key] = value
    refused("bench", doc, *words)


def test_power_and_energy_figures(real):
    doc = copy.deepcopy(real["bench"])
    doc["power"] = {"available": True, "sensor": "rapl", "avg_w": 3.0, "peak_w": 4.0, "idle_w": 3.5,
                    "energy_j": 1.0, "window_s": 1.0, "energy_per_inference_mj": 0.5,
                    "energy_above_idle_per_inference_mj": -0.1, "samples": 20, "rails_avg_w": {"cpu": 2.0}}
    check("bench", doc)  # below idle: noise makes that figure negative, and that is honest
    for key, value in (("energy_per_inference_mj", -0.5), ("avg_w", float("inf"))):
        bad = copy.deepcopy(doc)
        bad["power"][key] = value
        refused("bench", bad, f"bench.power.{key}")
    bad = copy.deepcopy(doc)
    bad["power"]["rails_avg_w"]["cpu"] = float("nan")
    refused("bench", bad, "bench.power.rails_avg_w.cpu is nan")


def test_samples_are_bounded_and_checked(real):
    doc = copy.deepcopy(real["bench"])
    n = len(doc["samples_ms"])
    refused("bench", doc, f"has {n} samples, more than the 10 runs", max_samples=10)
    doc["samples_ms"][3] = -1.0
    refused("bench", doc, "bench.samples_ms[3] is -1.0")
    doc = copy.deepcopy(real["bench"])
    doc["samples_ms"] = doc["samples_ms"][:-1]
    refused("bench", doc, "latency.n is")
    doc = copy.deepcopy(real["bench"])
    doc["samples_ms"][0] = "1"
    refused("bench", doc, "bench.samples_ms[0] is '1'")


def test_sizes_nesting_schema_and_command(real):
    doc = copy.deepcopy(real["bench"])
    doc["warnings"] = ["x" * (documents.MAX_STRING + 1)]
    refused("bench", doc, "bench.warnings[0] is a string of")
    doc = copy.deepcopy(real["bench"])
    doc["thermal"]["before"] = {"extra": list(range(documents.MAX_LIST + 1))}
    refused("bench", doc, "bench.thermal.before.extra has")
    deep: dict = {}
    node = deep
    for _ in range(documents.MAX_DEPTH + 2):
        node["a"] = {}
        node = node["a"]
    doc = copy.deepcopy(real["bench"])
    doc["runtime"] = deep
    refused("bench", doc, "nested deeper")
    doc = copy.deepcopy(real["bench"])
    doc["thermal"]["before"]["temps_c"] = {"cpu": float("nan")}
    refused("bench", doc, "bench.thermal.before.temps_c.cpu is nan")
    refused("bench", {**real["bench"], "schema": 2}, "bench.schema is 2, expected 1")
    refused("bench", real["probe"], "bench.command is 'probe'")
    refused("bench", [], "not a JSON object")


def test_probe_status_lock_and_error_documents(real):
    probe = copy.deepcopy(real["probe"])
    probe["cores"]["usable"] = "8"
    refused("probe", probe, "probe.cores.usable is '8'")
    probe = copy.deepcopy(real["probe"])
    probe["runtimes"]["onnxruntime"] = "1.0"
    refused("probe", probe, "probe.runtimes.onnxruntime is '1.0'")
    probe = copy.deepcopy(real["probe"])
    probe["cpu"]["isa"] = "avx2"
    refused("probe", probe, "probe.cpu.isa")
    status = copy.deepcopy(real["status"])
    status["models"]["m"]["current"] = 7
    refused("status", status, "status.models.m.current is 7")
    status = copy.deepcopy(real["activate"])
    status["models"]["m"]["deployment"]["meta"] = "onnx"
    refused("activate", status, "activate.models.m.deployment.meta")
    check("lock", {"schema": 1, "command": "lock", "acquired": True, "holder": "me", "pid": 3})
    refused("lock", {"schema": 1, "command": "lock", "acquired": "yes"}, "lock.acquired")
    check("run", {"schema": 1, "error": {"kind": "run_failed", "message": "boom"}})
    refused("run", {"schema": 1, "error": {"kind": 3}}, "run.error.kind is 3")
    refused("run", {"schema": 1, "error": "boom"}, "run.error is 'boom'")
    refused("version", {"schema": 1, "command": "version"}, "version.agent is None")


def test_a_key_the_device_chose_cannot_split_the_message_or_reach_the_terminal(real):
    probe = copy.deepcopy(real["probe"])
    probe["runtimes"]["ort\nFAKE LINE\x1b[31m"] = "1.0"
    with pytest.raises(DeviceError) as info:
        documents.validate("probe", probe, "t")
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message, message
    assert "probe.runtimes.ort\\nFAKE LINE\\x1b[31m is '1.0'" in message

# --------------------------------------------------------------------------- a device that lies

LIAR = '''#!{python}
# A device whose agent is the real one, but whose answers to `bench` are rewritten on the way out:
# {field} = {value}. Everything else (probe, lock, run, install) passes through untouched.
import json, os, subprocess, sys
args = sys.argv[1:]
if len(args) < 2 or not args[0].endswith(".pyz") or args[1] != "bench":
    os.execv(sys.executable, [sys.executable] + args)
done = subprocess.run([sys.executable] + args, stdout=subprocess.PIPE)
doc = json.loads(done.stdout.decode().strip().splitlines()[-1])
if "latency" in doc:
    section, key = "{field}".split(".")
    doc[section][key] = {value}
sys.stdout.write(json.dumps(doc) + "\\n")
sys.exit(done.returncode)
'''


def liar(workdir: Path, tmp_path: Path, field: str, value: str) -> str:
    python = tmp_path / "lying-python"
    python.write_text(LIAR.format(python=sys.executable, field=field, value=value))
    python.chmod(0o755)
    (workdir / "targets").mkdir(exist_ok=True)
    device = tmp_path / "liar-device"  # its own workdir, so its own lock beside `local`
    (workdir / "targets" / "liar.toml").write_text(f'transport = "local"\npython = "{python}"\nworkdir = "{device}"\n')
    return "liar"


def test_a_device_reporting_minus_infinity_gets_nothing_chosen(workdir, tmp_path):
    target = liar(workdir, tmp_path, "latency.p90_ms", "float('-inf')")
    proc = run_cli("profile", "--target", target, "--profile", "fast")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "bench.latency.p90_ms is -inf" in proc.stdout, proc.stdout
    db = sqlite3.connect(workdir / ".edgekit/results.db")
    rows = db.execute("SELECT status, error_kind, p90_ms FROM measurements WHERE target='liar'").fetchall()
    assert rows and all(r == ("failed", "bad_document", None) for r in rows)
    assert not any("Infinity" in d for (d,) in db.execute("SELECT document FROM measurements"))

    proc = run_cli("check", "--target", target, "--max-p90-ms", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "PASS" not in proc.stdout and "FAIL" in proc.stdout and "bad_document" in proc.stdout

    # The exit code says the same with --json, and for a fleet where any one target has nothing chosen.
    proc = run_cli("profile", "--target", target, "--profile", "fast", "--json")
    assert proc.returncode == 4 and json.loads(proc.stdout)["chosen"] is None, proc.stdout + proc.stderr
    proc = run_cli("profile", "--target", target, "--target", "local", "--profile", "fast", "--json")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    chosen = {name: t["chosen"] for name, t in json.loads(proc.stdout)["targets"].items()}
    assert chosen["liar"] is None and chosen["local"], chosen



@pytest.mark.parametrize("damage", [
    {"latency.p90_ms": "fast"}, {"latency.p50_ms": float("-inf")}, {"memory": "lots"}, {"latency": None}])
def test_a_bad_row_an_older_edgekit_stored_is_left_out_with_a_note_in_every_view(workdir, damage):
    """Rows are checked again when read: one stored before documents were checked (here: a captured
    real run, damaged as the host used to accept) is a failed measurement with the reason."""
    from edgekit.results import ResultsStore
    from report_store import captured

    db = captured(workdir / "results.db")
    con = sqlite3.connect(db)
    with con:
        mid, target, sha, key, doc = con.execute(
            "SELECT id, target, sha256, settings_key, document FROM measurements WHERE run_id=3 ORDER BY id").fetchone()
        doc = json.loads(doc)
        for path, value in damage.items():
            section, _, field = path.partition(".")
            if field:
                doc[section][field] = value
            else:
                doc[section] = value
        con.execute("UPDATE measurements SET document=? WHERE id=?", (json.dumps(doc), mid))
    con.close()
    for command in (("report", "--table"), ("report", "--json"), ("check", "--target", "local"),
                    ("compare", "--target", "local", "--target", "local2")):
        proc = run_cli(*command, "--db", str(db))
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(run_cli("report", "--json", "--db", str(db)).stdout)
    rows = [v for t in report["targets"] for v in t["variants"] if v.get("measurement_id") == mid or
            f"stored measurement {mid} is left out" in json.dumps(v)]
    assert rows, "the row's reason is shown where the row was"
    with ResultsStore(db) as store:
        m = store.measurement(mid)
        assert (m.status, m.error_kind) == ("failed", "bad_document") and "is left out" in m.error_message
        found = store.comparable_run(target, [sha], key, doc.get("parity_data"))
        assert found is None or found[0] != 3, "a row that no longer checks out is never reused"
