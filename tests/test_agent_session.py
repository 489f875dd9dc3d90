"""The agent session: one agent process per locked run, counted on the real transport; its
protocol run as the real zipapp; the per-command mode kept working beside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.bundle import write_agent


class Counting:
    """The real transport, with every exec (`run`, `spawn`) and every uploaded byte counted."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.execs: list[list[str]] = []
        self.sent = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run(self, argv, timeout):
        self.execs.append(list(argv))
        return self.inner.run(argv, timeout)

    def spawn(self, argv):
        self.execs.append(list(argv))
        return self.inner.spawn(argv)

    def put(self, local, remote, progress=None):
        self.sent += os.path.getsize(local)
        return self.inner.put(local, remote, progress)


def _deploy(built, workdir, name: str, reuse: bool, session: bool = True) -> tuple[dict, Counting]:
    from edgekit import pipeline
    from edgekit.device import connect, holder_name
    from edgekit.config import load_profile, load_target

    ctx, variants = built
    cache_home = next(p for p in Path(next(iter(variants.values())).path).parents if p.name == "cache").parent
    workspace = pipeline.Workspace(cache_home, workdir / ".edgekit" / "results.db")
    target, prof = load_target(name), load_profile("fast")
    with connect(target) as device:
        device.transport = counting = Counting(device.transport)
        device.session_mode = session
        with device.locked(holder_name("deploy")):
            return pipeline.deploy(ctx, target, prof, device, workspace, reuse).to_dict(), counting


def test_a_warm_deploy_over_ssh_is_one_exec_and_sends_no_file(ssh_devices, workdir, built):
    jetson = ssh_devices("jetson-like")
    cold, first = _deploy(built, workdir, "jetson-like", reuse=False)
    assert cold["smoke_test"]["passed"]
    assert len(first.execs) == 2  # the agent was not there: the boot answers so, then the session
    warm, second = _deploy(built, workdir, "jetson-like", reuse=True)
    assert warm["smoke_test"]["passed"] and all(r["measurement_reused"] for r in warm["variants"])
    assert len(second.execs) == 1 and second.execs[0][1] == "-c" and "session" in second.execs[0]
    assert second.sent == 0  # agent, artifacts, bench inputs and evaluation samples were all there
    # Scratch files are gone; the inputs are kept under their content hash, nothing half-uploaded.
    tmp = jetson.device_path(".edgekit/tmp")
    assert not tmp.exists() or not list(tmp.iterdir())
    inputs = sorted(p.name for p in jetson.device_path(".edgekit/inputs").iterdir())
    assert inputs and all(len(name) == 36 and name.endswith(".npz") for name in inputs)
    # The bench children and the session itself are gone with the run.
    assert not [cmd for cmd in jetson.live_commands() if "edgekit-agent" in cmd]


def test_per_command_mode_still_deploys_with_an_exec_per_command(workdir, built):
    (workdir / "targets").mkdir(exist_ok=True)
    (workdir / "targets" / "here.toml").write_text(f'transport = "local"\npython = "{sys.executable}"\n')
    _deploy(built, workdir, "here", reuse=False, session=False)
    warm, counting = _deploy(built, workdir, "here", reuse=True, session=False)
    assert warm["smoke_test"]["passed"]
    agent_calls = [argv[2:] for argv in counting.execs if len(argv) > 2 and argv[1].endswith(".pyz")]
    # bench and run go through `within`, so the device itself kills them at their timeout
    commands = [a[a.index("--") + 1] if a[0] == "within" else a[0] for a in agent_calls]
    assert {"version", "lock", "probe", "install", "run", "activate"} <= set(commands)
    assert all(a[0] == "within" for a in agent_calls if "run" in a or "bench" in a)
    assert len(counting.execs) >= 6 and counting.sent == 0
    session, counted = _deploy(built, workdir, "here", reuse=True)
    assert session["chosen"] == warm["chosen"] and len(counted.execs) == 1


# --------------------------------------------------------------------------- the protocol, as the real zipapp


def _start(tmp_path: Path, python: str | None = None):
    agent = write_agent(tmp_path / "edgekit-agent.pyz")
    workdir = str(tmp_path / "wd")
    proc = subprocess.Popen([sys.executable, str(agent), "session", "--workdir", workdir, "--holder", "me"]
                            + (["--python", python] if python else []),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def ask(request) -> dict:
        proc.stdin.write((request if isinstance(request, str) else json.dumps(request)) + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    return proc, ask, json.loads(proc.stdout.readline()), agent, workdir


@pytest.fixture
def session(tmp_path):
    started = _start(tmp_path)
    yield started
    if started[0].poll() is None:
        started[0].kill()
    started[0].wait(10)


def _held(agent: Path, workdir: str) -> bool:
    alone = subprocess.run([sys.executable, str(agent), "lock-status", "--workdir", workdir], capture_output=True,
                           text=True, timeout=60)
    return json.loads(alone.stdout)["held"]


def test_a_session_holds_the_lock_and_answers_like_single_commands(session):
    proc, ask, lock, agent, workdir = session
    assert lock["acquired"] and lock["session"] and lock["holder"] == "me"
    assert _held(agent, workdir)
    reply = ask({"id": 1, "argv": ["status", "--workdir", workdir], "timeout": 30})
    assert (reply["id"], reply["exit"], reply["timed_out"]) == (1, 0, False)
    assert json.loads(reply["stdout"])["command"] == "status"
    # Errors come back as the command's own error document, with its exit code.
    reply = ask({"id": 2, "argv": ["activate", "--workdir", workdir, "--model", "m", "--variant", "v"]})
    assert reply["exit"] == 3 and json.loads(reply["stdout"])["error"]["kind"] == "no_deployment"
    reply = ask({"id": 3, "argv": ["lock", "--holder", "x"]})
    assert json.loads(reply["stdout"])["error"]["kind"] == "bad_request"
    reply = ask("this is not json")
    assert reply["id"] is None and json.loads(reply["stdout"])["error"]["kind"] == "bad_request"
    reply = ask({"id": 4, "argv": ["remove", "--workdir", workdir, "/etc/passwd"]})
    assert json.loads(reply["stdout"])["error"]["kind"] == "bad_request"  # only the workdir's own files
    # A child command: bench on a missing artifact fails in its own process, the session carries on.
    reply = ask({"id": 5, "argv": ["bench", "--artifact", "/nonexistent.onnx", "--runtime", "onnxruntime"]})
    assert reply["exit"] == 3 and json.loads(reply["stdout"])["error"]["kind"] == "artifact_missing"
    assert ask({"id": 6, "argv": ["version"]})["exit"] == 0
    proc.stdin.close()  # the host is done: the lock goes with the session
    assert proc.wait(10) == 0
    assert not _held(agent, workdir)


def test_a_stuck_child_is_killed_at_its_timeout_and_when_the_host_leaves(tmp_path):
    import time

    import psutil

    stuck = tmp_path / "stuck-python"  # the target's interpreter hangs: what a wedged runtime looks like
    stuck.write_text("#!/bin/sh\nexec sleep 60\n")
    stuck.chmod(0o755)
    proc, ask, lock, agent, workdir = _start(tmp_path, str(stuck))
    try:
        started = time.monotonic()
        reply = ask({"id": 1, "argv": ["run", "--artifact", "a", "--runtime", "onnxruntime", "--inputs", "i",
                                       "--outputs", "o"], "timeout": 1.0})
        assert reply["timed_out"] is True and reply["exit"] is None and time.monotonic() - started < 10
        assert not [p for p in psutil.Process(proc.pid).children(recursive=True) if p.status() != "zombie"]
        proc.stdin.write(json.dumps({"id": 2, "argv": ["bench", "--artifact", "a", "--runtime", "onnxruntime"],
                                     "timeout": 120}) + "\n")
        proc.stdin.flush()
        time.sleep(0.5)
        proc.stdin.close()  # the host went away mid-benchmark: the child dies, the lock is released
        assert proc.wait(10) == 0
        assert not _held(agent, workdir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


LYING_SESSION = """import json, sys
for line in sys.stdin:
    doc = {{'schema': 1, 'command': 'session', 'id': json.loads(line)['id'], 'exit': 0, 'stdout': '',
           'stderr': '', 'timed_out': False}}
    doc.update({change})
    print(json.dumps(doc), flush=True)
"""


@pytest.mark.parametrize("change, expected", [("id=99", "session.id is 99"), ("exit='zero'", "session.exit is 'zero'"),
                                              ("stdout=None", "session.stdout is not a string")])
def test_the_host_refuses_a_session_answer_that_is_not_its_own(tmp_path, change, expected):
    from edgekit.agent_session import AgentSession
    from edgekit.errors import DeviceError
    from edgekit.transport.local import LocalTransport

    liar = tmp_path / "liar.py"
    liar.write_text(LYING_SESSION.format(change=f"dict({change})"))
    session = AgentSession(LocalTransport(tmp_path).spawn([sys.executable, str(liar)]), "t")
    try:
        with pytest.raises(DeviceError) as info:
            session.call(("version",), 10, 1000)
        assert info.value.kind == "bad_document" and expected in str(info.value)
        with pytest.raises(DeviceError) as info:  # nothing more is sent to a session that lied once
            session.call(("version",), 10, 1000)
        assert info.value.kind == "connection_lost" and "ended earlier" in str(info.value)
    finally:
        session.close()


def test_uploads_print_bytes_rate_and_time_left_when_stderr_is_not_a_terminal(tmp_path, capsys):
    from edgekit.report.progress import RichEvents
    from edgekit.transport.local import LocalTransport

    model = tmp_path / "model.onnx"
    model.write_bytes(os.urandom(5 << 20))
    with RichEvents() as events:
        events.PROGRESS_EVERY_S = 0.0  # every chunk (the real interval is 10 s)
        LocalTransport(tmp_path).put(str(model), "device/model.onnx",
                                     lambda sent, total: events.transfer("model.onnx", sent, total))
    lines = capsys.readouterr().err.splitlines()
    assert (tmp_path / "device" / "model.onnx").read_bytes() == model.read_bytes()
    assert lines[0].startswith("uploading model.onnx: 1.0 MB of 5.2 MB (20 %), ") and "/s, about " in lines[0]
    assert lines[-1].startswith("uploaded model.onnx: 5.2 MB in ")
    with RichEvents(quiet=True) as events:  # --json: nothing on stderr
        events.transfer("model.onnx", 1, 2)
    assert not capsys.readouterr().err


def test_a_fleet_line_per_device_reports_its_uploads(capsys):
    from rich.progress import Progress

    from edgekit.report.output import err
    from edgekit.report.progress import FleetEvents, RichEvents

    events = FleetEvents(Progress(console=err, disable=True), "pi", quiet=False)
    old, RichEvents.PROGRESS_EVERY_S = RichEvents.PROGRESS_EVERY_S, 0.0
    try:
        for sent in (1 << 20, 2 << 20, 3 << 20):
            events.transfer("model.onnx", sent, 3 << 20)
    finally:
        RichEvents.PROGRESS_EVERY_S = old
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("pi: uploading model.onnx: ") and "/s" in line for line in lines)


@pytest.mark.parametrize("transport", ["local", "ssh"])
def test_per_command_mode_kills_a_timed_out_command_on_the_device_before_the_lock_goes(transport, workdir,
                                                                                       ssh_devices):
    """Without a session, bench and run go through `within`: at its timeout the device kills the
    command's whole process group itself, so nothing of it runs once the host releases the lock."""
    import time

    import psutil

    from edgekit.config import load_target
    from edgekit.device import connect, holder_name
    from edgekit.errors import DeviceError

    if transport == "ssh":
        device_under_test = ssh_devices("jetson-like")
        base, name = device_under_test.device_path(""), "jetson-like"
        running = device_under_test.live_commands
    else:
        base, name = Path.home(), "local"

        def running():
            return [" ".join(p.cmdline()) for p in psutil.process_iter() if p.status() != psutil.STATUS_ZOMBIE]
    model, fifo = base / "stuck.onnx", base / "stuck-inputs.npz"
    model.write_bytes(b"x")
    os.mkfifo(fifo)  # reading inputs from a pipe nobody writes: a command that hangs on the device
    os.chmod(fifo, 0o666)
    os.chmod(model, 0o644)
    with connect(load_target(name)) as device:
        device.session_mode = False
        with device.locked(holder_name("profile")):
            started = time.monotonic()
            with pytest.raises(DeviceError) as info:
                device.agent("run", "--artifact", str(model), "--runtime", "onnxruntime", "--inputs", str(fifo),
                             "--outputs", str(base / "out.npz"), timeout=2.0)
            took = time.monotonic() - started
            assert info.value.kind == "timeout" and "did not finish in 2s" in str(info.value), str(info.value)
            assert took < 15, f"the device stopped it at its timeout, not the host at timeout + slack ({took:.1f}s)"
            assert not [c for c in running() if str(fifo) in c], "killed before the lock is released"


@pytest.mark.parametrize("flag, value", [("--min-s", "nan"), ("--warmup-s", "inf"), ("--max-s", "-1"),
                                         ("--rate-hz", "0"), ("--min-runs", "-3")])
def test_bench_figures_that_would_never_end_are_refused(tmp_path, flag, value):
    """NaN compares false with every bound: `--min-s nan` would measure for ever."""
    from edgekit.agent import cli as agent_cli

    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    code, doc = agent_cli.answer(["bench", "--artifact", str(model), "--runtime", "onnxruntime", flag, value])
    assert code == 3 and doc["error"]["kind"] == "bad_request" and flag in doc["error"]["message"], doc
