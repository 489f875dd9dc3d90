"""The `edgekit` command against real SSH test devices (tests/devices.py): deploy, rollback,
targets, the device lock, faults. Every device is a real sshd with its own user and Python."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from conftest import run_cli


@pytest.fixture
def edgekit(built, workdir):
    """The pipeline in-process on the session's compressed example (the CLI's model work takes a while
    on a busy machine; the CLI itself is exercised by a few tests below)."""
    from edgekit import pipeline
    from edgekit.device import connect, holder_name
    from edgekit.config import load_profile, load_target

    ctx, variants = built
    cache_home = next(p for p in Path(next(iter(variants.values())).path).parents if p.name == "cache").parent

    class Runner:
        workspace = pipeline.Workspace(cache_home, workdir / ".edgekit" / "results.db")
        home_args = ("--home", str(cache_home), "--db", str(workdir / ".edgekit" / "results.db"))

        @staticmethod
        def run(command: str, name: str, profile: str = "fast", reuse: bool = False, wait_s: float = 0.0):
            target, prof = load_target(name), load_profile(profile)
            with connect(target) as device, device.locked(holder_name(command), wait_s):
                if command == "deploy":
                    return pipeline.deploy(ctx, target, prof, device, Runner.workspace, reuse).to_dict()
                return pipeline.measure(ctx, target, prof, device, Runner.workspace, "profile", reuse).to_dict()

        @staticmethod
        def fleet(names: list[str], profile: str = "fast", reuse: bool = False) -> dict:
            targets = [load_target(n) for n in names]
            return pipeline.profile_fleet(ctx, targets, load_profile(profile), Runner.workspace, reuse)

    return Runner


def _json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow  # runs the real CLI end to end (model loading included)
def test_deploy_over_ssh_installs_and_smoke_tests_then_rolls_back(ssh_devices, workdir, edgekit):
    jetson = ssh_devices("jetson-like")
    doc = _json(run_cli("deploy", "--target", "jetson-like", "--profile", "fast", "--json", *edgekit.home_args))
    assert doc["chosen"] and doc["smoke_test"]["passed"]
    installed = doc["deployment"]["models"]["digits-cnn"]
    # The path the device reports is under its own login dir; the host sees the same file in the device's home.
    assert installed["path"].startswith(jetson.persona.login_dir + "/.edgekit/deployments/digits-cnn/")
    rel = installed["path"][len(jetson.persona.login_dir) + 1:]
    assert jetson.device_path(rel).is_file()
    current = jetson.device_path(".edgekit/deployments/digits-cnn/current")
    assert os.readlink(current) == doc["chosen"]
    probe = sqlite_probe(workdir, doc["run_id"])
    assert probe["board"]["nv_tegra_release"].startswith("# R36")  # the jetson's sensor root was used
    assert probe["python"]["executable"] == jetson.python

    # Re-deploy choosing by size with --reuse: measurements and artifacts are reused; then roll back over SSH.
    (workdir / "profiles" / "small.toml").write_text(
        (workdir / "profiles" / "fast.toml").read_text().replace('objective = "p90_ms"', 'objective = "size_bytes"'))
    artifacts = sorted(p.stat().st_mtime_ns for p in jetson.device_path(".edgekit/artifacts").rglob("*.onnx"))
    second = edgekit.run("deploy", "jetson-like", "small", reuse=True)
    assert second["chosen_recipe"] == "onnx:int8-static"
    assert all(r["measurement_reused"] and r["reused_from_run"] == doc["run_id"] for r in second["variants"])
    assert sorted(p.stat().st_mtime_ns for p in jetson.device_path(".edgekit/artifacts").rglob("*.onnx")) == artifacts
    if doc["chosen"] != second["chosen"]:
        back = _json(run_cli("rollback", "--target", "jetson-like", "--json"))["models"]["digits-cnn"]
        assert (back["current"], back["previous"]) == (doc["chosen"], second["chosen"])
    status = run_cli("status", "--target", "jetson-like")
    assert status.returncode == 0 and "digits-cnn: current" in status.stdout


def stored_document(workdir: Path, variant_id: str, run_id: int) -> dict:
    import sqlite3

    db = sqlite3.connect(workdir / ".edgekit" / "results.db")
    return json.loads(db.execute("SELECT document FROM measurements WHERE run_id=? AND variant_id=?",
                                 (run_id, variant_id)).fetchone()[0])


def sqlite_probe(workdir: Path, run_id: int) -> dict:
    import sqlite3

    db = sqlite3.connect(workdir / ".edgekit" / "results.db")
    return json.loads(db.execute("SELECT document FROM probes WHERE run_id=?", (run_id,)).fetchone()[0])


def test_targets_check_show_and_trust(ssh_devices, workdir):
    pi = ssh_devices("pi-like", trust=False)
    proc = run_cli("targets", "check", "pi-like")
    assert proc.returncode == 3 and "edgekit targets trust pi-like" in proc.stderr
    assert proc.stderr.count("error:") == 1

    proc = run_cli("targets", "trust", "pi-like")  # no terminal, no --yes: shows, records nothing
    assert proc.returncode == 2 and "SHA256:" in proc.stderr and "--yes" in proc.stderr
    fingerprint = subprocess.run(["ssh-keygen", "-lf", f"{pi.host_key}.pub"], capture_output=True,
                                 text=True).stdout.split()[1]
    proc = run_cli("targets", "trust", "pi-like", "--yes")
    assert proc.returncode == 0 and fingerprint in proc.stdout
    assert (Path(os.environ["XDG_CONFIG_HOME"]) / "edgekit" / "known_hosts").is_file()
    assert "already trusted" in run_cli("targets", "trust", "pi-like", "--yes").stdout

    check = _json(run_cli("targets", "check", "pi-like", "--json"))
    assert check["probe"]["cores"]["usable"] == 1  # taskset -c 1
    assert check["probe"]["runtimes"].get("onnxruntime") is None
    text = run_cli("targets", "check", "pi-like")
    assert text.returncode == 0 and "cores      1 usable" in text.stdout
    if check["probe"]["runtimes"].get("tflite"):  # the tflite extra is installed: LiteRT only, as on a Pi
        assert "runtimes   tflite" in text.stdout and "onnxruntime" not in text.stdout.split("runtimes", 1)[1]
    else:
        assert "no inference runtime" in text.stdout

    show = _json(run_cli("targets", "show", "pi-like", "--json"))
    assert show["resolved"] == {"hostname": pi.address, "port": pi.port, "user": "ekd-pi",
                                "identity_files": [str(pi.client_key)], "proxy_jump": None}
    listed = run_cli("targets", "list")
    assert "pi-like" in listed.stdout and "jetson-orin-nano" in listed.stdout


def test_only_runnable_variants_are_pushed(ssh_devices, workdir, edgekit):
    """The pi persona has numpy but no onnxruntime: nothing ONNX is sent, each variant says why."""
    pi = ssh_devices("pi-like")
    doc = edgekit.run("profile", "pi-like")
    assert doc["chosen"] is None
    assert {r["error"]["kind"] for r in doc["variants"]} == {"runtime_missing"}
    assert not pi.device_path(".edgekit/artifacts").exists()
    assert list(pi.device_path(".edgekit/agent").glob("edgekit-agent-*.pyz"))  # the agent went, once


def test_python_too_old_and_numpy_missing_are_clear(ssh_devices, edgekit):
    from devices import pyenv_python

    if not pyenv_python("3.6") or not pyenv_python("3.8"):
        pytest.skip("needs pyenv Pythons 3.6 and 3.8")
    ssh_devices("ancient-python")
    proc = run_cli("targets", "check", "ancient-python")
    assert proc.returncode == 3
    assert "is Python 3.6" in proc.stderr and "needs Python >= 3.8" in proc.stderr
    ssh_devices("old-python")
    check = _json(run_cli("targets", "check", "old-python", "--json"))  # the agent itself runs on 3.8
    assert check["probe"]["python"]["version"].startswith("3.8")
    if check["probe"]["numpy"] is None:
        from edgekit.errors import DeviceError

        with pytest.raises(DeviceError) as info:
            edgekit.run("deploy", "old-python")
        assert info.value.kind == "numpy_missing"
        assert "numpy is not installed" in str(info.value) and "-m pip install numpy" in str(info.value)


def test_shell_metacharacters_in_workdir_and_names_do_not_inject(ssh_devices, workdir, edgekit):
    marker = Path(f"/tmp/PWNED-{uuid.uuid4().hex}")
    name = "jet;touch PWNED$(id)"
    jetson = ssh_devices("jetson-like", name=name, workdir=f"~/x; touch {marker}")
    doc = edgekit.run("deploy", name)
    assert doc["smoke_test"]["passed"]
    status = run_cli("status", "--target", name, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["models"]["digits-cnn"]["current"] == doc["chosen"]
    assert not marker.exists() and not jetson.device_path("PWNED").exists()
    # The odd workdir was used literally, as one directory name.
    assert jetson.device_path(f"x; touch {marker}/deployments/digits-cnn/current").is_symlink()


def test_artifact_corrupted_on_the_device_is_pushed_again(ssh_devices, workdir, edgekit):
    jetson = ssh_devices("jetson-like")
    edgekit.run("profile", "jetson-like")
    copies = list(jetson.device_path(".edgekit/artifacts").rglob("*.onnx"))
    assert copies
    for path in copies:
        path.write_bytes(path.read_bytes()[:-10] + b"corrupted!")
    doc = edgekit.run("profile", "jetson-like")
    assert all(r["error"] is None for r in doc["variants"])  # sha256 caught it, a fresh copy was measured
    # Over SSH too, the variants ran in interleaved rounds (A B | B A | A B), each round its own agent process.
    rounds = [r for row in doc["variants"] for r in stored_document(workdir, row["id"], doc["run_id"])["rounds"]]
    assert len(rounds) == 3 * len(doc["variants"])
    for index in range(2):
        assert (max(r["ended"] for r in rounds if r["round"] == index)
                <= min(r["started"] for r in rounds if r["round"] == index + 1))
    import hashlib

    for path in copies:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.parent.name


def test_unwritable_workdir_and_full_disk_keep_the_current_deployment(ssh_devices, workdir, edgekit):
    jetson = ssh_devices("jetson-like")
    first = edgekit.run("deploy", "jetson-like")

    proc = run_cli("status", "--target", "jetson-like")  # sanity
    assert proc.returncode == 0
    (workdir / "targets" / "ro.toml").write_text(
        (workdir / "targets" / "jetson-like.toml").read_text().replace('workdir = "~/.edgekit"',
                                                                      'workdir = "/usr/edgekit"'))
    proc = run_cli("targets", "check", "ro")  # the first write (the agent) fails, as in a deploy
    assert proc.returncode == 3 and "workdir to a writable folder" in proc.stderr
    assert "Permission denied" in proc.stderr and proc.stderr.count("error:") == 1

    # A full disk on the device: the artifacts folder becomes a 16 KiB tmpfs inside the device.
    artifacts = f"{jetson.persona.login_dir}/.edgekit/artifacts"  # sshd (exec'd by unshare) lives in the namespace
    subprocess.run(["nsenter", "-t", str(jetson.proc.pid), "-m", "sh", "-c",
                    f"mount -t tmpfs -o size=16k,mode=777 tmpfs {artifacts}"], check=True)
    (workdir / "profiles" / "other.toml").write_text(
        (workdir / "profiles" / "fast.toml").read_text().replace('"onnx:fp32", ', ""))
    from edgekit.errors import EdgekitError

    with pytest.raises(EdgekitError) as info:  # the variant cannot be pushed, so none is selectable
        edgekit.run("deploy", "jetson-like", "other")
    assert "free space" in str(info.value) or "no space" in str(info.value).lower()
    status = _json(run_cli("status", "--target", "jetson-like", "--json"))["models"]["digits-cnn"]
    assert status["current"] == first["chosen"] and status["path"]


def _slow_profile(workdir: Path) -> None:
    """`slow`: the fast profile with benchmarks of 3 s, long enough to act on the device mid-run."""
    (workdir / "profiles" / "slow.toml").write_text(
        (workdir / "profiles" / "fast.toml").read_text().replace("min_s = 0.1", "min_s = 3.0"))

def test_agent_killed_during_a_benchmark_fails_only_that_variant(ssh_devices, workdir, edgekit):
    jetson = ssh_devices("jetson-like")
    _slow_profile(workdir)
    killed: list[str] = []

    def kill_first_bench():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for proc in jetson.processes():
                try:
                    cmd = proc.cmdline()
                except psutil.Error:
                    continue
                artifact = [a for a in cmd if a.startswith("--artifact=")]  # BenchRequest.to_argv's form
                if "bench" in cmd and artifact:
                    time.sleep(0.5)  # let it get into the measuring loop
                    proc.kill()
                    killed.append(artifact[0].partition("=")[2])
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_first_bench)
    watcher.start()
    doc = edgekit.run("profile", "jetson-like", "slow")
    watcher.join(10)
    assert killed
    rows = {r["recipe"]: r for r in doc["variants"]}
    failed = [r for r in rows.values() if r["error"]]
    assert len(failed) == 1 and failed[0]["error"]["kind"] == "agent_crashed"
    assert "signal" in failed[0]["error"]["message"]
    assert any(r["latency"] for r in rows.values())  # the other variant was measured


@pytest.mark.slow  # runs the real CLI end to end (model loading included)
def test_two_runs_on_one_device_busy_then_wait(ssh_devices, workdir, edgekit):
    from edgekit.device import connect, holder_name
    from edgekit.config import load_target

    ssh_devices("jetson-like")
    with connect(load_target("jetson-like")) as device, device.locked(holder_name("test holder")):
        proc = run_cli("profile", "--target", "jetson-like", "--profile", "fast")
        assert proc.returncode == 3
        assert "busy, held by" in proc.stderr and "test holder" in proc.stderr and "--wait" in proc.stderr
        outcome: list = []
        waiting = threading.Thread(target=lambda: outcome.append(edgekit.run("profile", "jetson-like", wait_s=120)))
        waiting.start()
        time.sleep(3)
        assert waiting.is_alive() and not outcome  # still waiting for the lock
    waiting.join(300)
    assert outcome and outcome[0]["chosen"]

    # A holder that vanished without releasing (connection dropped) leaves no stale lock.
    device = connect(load_target("jetson-like"))
    with device.locked(holder_name("vanishing")):
        device.transport._client.get_transport().sock.close()  # the network goes away
    device.close()
    assert edgekit.run("profile", "jetson-like")["chosen"]


@pytest.mark.slow  # runs the real CLI end to end (model loading included)
def test_fleet_profile_runs_devices_at_once_and_survives_one_failure(ssh_devices, workdir, edgekit):
    jetson = ssh_devices("jetson-like")
    ssh_devices("phone-like")
    ssh_devices("pi-like", name="pi-offline", run=False)  # registered, but its sshd never started
    proc = run_cli("profile", "--target", "jetson-like", "--target", "phone-like", "--target", "pi-offline",
                   "--profile", "fast", "--json", *edgekit.home_args)
    assert proc.returncode == 3, proc.stderr
    doc = json.loads(proc.stdout)["targets"]
    assert set(doc) == {"jetson-like", "phone-like", "pi-offline"}
    assert "refused" in doc["pi-offline"]["error"]["message"]
    for name in ("jetson-like", "phone-like"):
        assert doc[name]["chosen"], doc[name]
        assert all(r["latency"]["n"] >= 20 for r in doc[name]["variants"])
    # Run again with --reuse: each target takes its own earlier run's measurements; by default all are measured.
    again = edgekit.fleet(["jetson-like", "phone-like"], reuse=True)
    assert all(row["reused_from_run"] == doc[name]["run_id"] for name, r in again.items()
               for row in r.to_dict()["variants"])
    fresh = edgekit.fleet(["jetson-like", "phone-like"])
    assert not any(row["measurement_reused"] for r in fresh.values() for row in r.to_dict()["variants"])
    assert jetson.running


def test_smoke_test_failing_on_the_device_keeps_the_previous_deployment(ssh_devices, workdir, edgekit):
    from test_cli import SKEWED_RUNTIME

    from edgekit.errors import DeviceError

    jetson = ssh_devices("jetson-like")
    first = edgekit.run("deploy", "jetson-like")
    # From now on the device's onnxruntime returns wrong numbers (the agent and SSH are untouched).
    site = next((jetson.base / "python" / "lib").glob("python3*/site-packages"))
    (site / "sitecustomize.py").write_text(SKEWED_RUNTIME)
    (workdir / "profiles" / "small.toml").write_text(
        (workdir / "profiles" / "fast.toml").read_text().replace('objective = "p90_ms"', 'objective = "size_bytes"'))
    with pytest.raises(DeviceError) as info:  # --reuse: the earlier (passing) parity, so only the smoke test can tell
        edgekit.run("deploy", "jetson-like", "small", reuse=True)
    assert info.value.kind == "smoke_failed" and "previous deployment stays current" in str(info.value)
    status = _json(run_cli("status", "--target", "jetson-like", "--json"))["models"]["digits-cnn"]
    assert status["current"] == first["chosen"]


def test_a_connection_lost_mid_run_ends_it_without_reconnecting_or_installing(ssh_devices, workdir, edgekit):
    """The device's end of the connection dies during a benchmark: the lock went with it, so the run
    stops there (exit 3 through the CLI's handler) instead of failing one variant, reconnecting and
    going on to install another."""
    from edgekit.errors import ConnectionLost

    jetson = ssh_devices("jetson-like")
    _slow_profile(workdir)
    cut: list[int] = []

    def cut_the_connection():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not cut:
            procs = jetson.processes()
            try:
                benching = any("bench" in p.cmdline() for p in procs)
            except psutil.Error:
                benching = False
            if benching:
                time.sleep(0.5)
                for p in procs:  # the per-connection sshd processes, not the listener
                    try:
                        if p.cmdline() and p.cmdline()[0].startswith("sshd:"):
                            p.kill()
                            cut.append(p.pid)
                    except psutil.Error:
                        pass
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=cut_the_connection)
    watcher.start()
    with pytest.raises(ConnectionLost) as info:
        edgekit.run("deploy", "jetson-like", "slow")
    watcher.join(10)
    assert cut
    message = str(info.value)
    assert info.value.exit_code == 3 and "lock went with it" in message and "Fix: " in message, message
    assert not jetson.device_path(".edgekit/deployments").exists() or \
        not list(jetson.device_path(".edgekit/deployments").rglob("current")), "nothing installed"
    time.sleep(0.5)
    assert not [c for c in jetson.live_commands() if "edgekit-agent" in c], "no reconnect, nothing left running"
