"""Runs that stop half-way: an interrupted deploy's choice is never passed by `check`, and a
rollback whose record fails after the device switched says so and is not undone by a retry.
Real agent, real local device, real SQLite; the interruptions come from a wrapper around the
device's Python (as a hostile or failing device would behave)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from conftest import run_cli
from edgekit.errors import StoreError

INTERRUPT_AT_INSTALL = '''#!{python}
# The real agent, except that the host is interrupted (Ctrl-C) when it asks to install.
import os, signal, sys
args = sys.argv[1:]
if len(args) >= 2 and args[0].endswith(".pyz") and args[1] == "install":
    os.kill(os.getppid(), signal.SIGINT)
    sys.exit(1)
os.execv(sys.executable, [sys.executable] + args)
'''


def wrapper_target(workdir: Path, tmp_path: Path, name: str, script: str) -> str:
    python = tmp_path / f"{name}-python"
    python.write_text(script)
    python.chmod(0o755)
    (workdir / "targets").mkdir(exist_ok=True)
    (workdir / "targets" / f"{name}.toml").write_text(f'transport = "local"\npython = "{python}"\n')
    return name


def test_check_fails_an_interrupted_deploys_choice(workdir, tmp_path, monkeypatch):
    # The wrapper sees each agent command as its own exec: per-command mode (a session runs
    # install inside the one agent process the wrapper started).
    monkeypatch.setenv("EDGEKIT_AGENT_SESSION", "0")
    target = wrapper_target(workdir, tmp_path, "flaky", INTERRUPT_AT_INSTALL.format(python=sys.executable))
    proc = run_cli("deploy", "--target", target, "--profile", "fast")
    assert proc.returncode == 130, proc.stdout + proc.stderr
    assert "interrupted" in proc.stderr
    proc = run_cli("check", "--target", target, "--max-p90-ms", "1000")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "PASS" not in proc.stdout and "installed nothing on flaky" in proc.stdout
    proc = run_cli("report", "--json", "--target", target)
    assert any("installed nothing" in n for n in json.loads(proc.stdout)["targets"][0]["notes"])


LOCK_AFTER_ROLLBACK = '''#!{python}
# The real agent; after its first rollback, another process takes the results store's write lock
# (and keeps it) before the host can record the switch.
import os, subprocess, sys, time
args = sys.argv[1:]
marker, db, ready = {marker!r}, {db!r}, {ready!r}
if len(args) < 2 or not args[0].endswith(".pyz") or args[1] != "rollback" or os.path.exists(marker):
    os.execv(sys.executable, [sys.executable] + args)
open(marker, "w").close()
done = subprocess.run([sys.executable] + args)
hold = ("import os, sqlite3, sys, time\\n"
        "c = sqlite3.connect(sys.argv[1]); c.execute('BEGIN IMMEDIATE')\\n"
        "open(sys.argv[2], 'w').write(str(os.getpid())); time.sleep(60)\\n")
subprocess.Popen([sys.executable, "-c", hold, db, ready], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while not os.path.exists(ready) or not open(ready).read():
    time.sleep(0.01)
sys.exit(done.returncode)
'''


def _artifact(tmp_path: Path, scale: float) -> tuple[Path, str]:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    k = helper.make_tensor("k", TensorProto.FLOAT, [1], [scale])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "k"], ["y"])], "g", [x], [y], [k])
    path = tmp_path / f"mul{scale:g}" / "model.onnx"
    path.parent.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_rollback_that_cannot_record_says_it_switched_and_a_retry_does_not_switch_back(workdir, tmp_path):
    from edgekit.device import Device
    from edgekit.pipeline import rollback
    from edgekit.results import ResultsStore
    from edgekit.config import load_target
    from edgekit.transport.local import LocalTransport

    db, marker, ready = tmp_path / "results.db", tmp_path / "rolled", tmp_path / "locked"
    name = wrapper_target(workdir, tmp_path, "sabotage", LOCK_AFTER_ROLLBACK.format(
        python=sys.executable, marker=str(marker), db=str(db), ready=str(ready)))
    device = Device(load_target(name), LocalTransport(Path(os.environ["HOME"])))
    for variant, scale in (("v1", 1.0), ("v2", 2.0)):
        path, sha = _artifact(tmp_path, scale)
        device.agent("install", "--workdir", "~/.edgekit", "--model", "m", "--variant", variant,
                     "--artifact", str(path), "--sha256", sha)
        device.activate("m", variant)
    assert device.status("m")["models"]["m"]["current"] == "v2"

    results = ResultsStore(db)
    results.db.execute("PRAGMA busy_timeout = 200")  # wait 0.2 s, not 30, for the lock the wrapper takes
    try:
        with pytest.raises(StoreError) as info:
            rollback(device, results, "m")
        message = str(info.value)
        assert "m IS rolled back, now v1 (previous v2)" in message and "do not roll back again" in message
        assert "locked" in message and "\n" not in message
    finally:
        results.close()
        os.kill(int(ready.read_text()), signal.SIGKILL)
    assert device.status("m")["models"]["m"]["current"] == "v1"

    with ResultsStore(db) as results:  # the retry records the switch instead of switching back
        doc = rollback(device, results, "m")
        assert "recorded now, nothing switched" in doc["note"]
        assert doc["models"]["m"]["current"] == "v1"
        rows = [tuple(r) for r in results.rows("SELECT variant_id, ok, message FROM deployments ORDER BY id")]
    assert rows == [("v1", 1, "v2 -> v1 (recorded by a later rollback)")]
    assert device.status("m")["models"]["m"]["current"] == "v1"

    with ResultsStore(db) as results:  # and a rollback after that is an ordinary one
        assert rollback(device, results, "m")["models"]["m"]["current"] == "v2"
        assert [r["ok"] for r in results.rows("SELECT ok FROM deployments ORDER BY id")] == [1, 1]
