"""A target plus a transport: everything the host asks of a device goes through the agent here."""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from . import documents
from .agent_session import BOOT, REPLY_SLACK_S, AgentSession
from .bundle import agent_zipapp
from .agent.protocol import CHILD_COMMANDS, BenchRequest, Probe
from .errors import DeviceError, UsageError
from .records import Variant
from .settings import BenchSettings, Target, default_python
from .transport import Transport, remote_path

# What the user should do about each error kind an agent document can carry: every kind the agent
# documents (edgekit.agent.protocol.KINDS), then the host's own verdicts on a document.
FIXES = {
    "bad_request": "the host and the agent disagree on a command: run again (the agent is re-pushed when it "
                   "differs); if it persists, report it with the message",
    "run_failed": "the runtime on the device failed on this model's inputs; check the model runs on the host "
                  "with the same inputs",
    "busy": "wait for that run to finish, or run again with --wait",
    "timeout": "raise the profile's [bench] max_s, or check what is hogging the device",
    "internal": "a bug in the agent: run again, and report it with the device's stderr if it persists",
    "runtime_missing": "install the runtime on the device, or drop its recipes from the profile",
    "artifact_corrupt": "run again: the artifact is pushed afresh",
    "artifact_missing": "run again: the artifact is pushed afresh",
    "load_failed": "the runtime on the device cannot read this artifact; check its version against the host's",
    "out_of_memory": "choose a smaller variant or free memory on the device",
    "disk_full": "free space on the device or point the target's workdir elsewhere",
    "no_deployment": "deploy a variant first with edgekit deploy",
    "bad_document": "run again; if it persists, the agent or the runtime on the device is broken",
    "bad_output": "run again; if it persists, the runtime on the device is broken",
}


def connect(target: Target) -> Device:
    if target.transport == "local":
        from .transport.local import LocalTransport

        return Device(target, LocalTransport())
    from .transport.ssh import SSHTransport

    if not target.host:
        raise UsageError(f"target {target.name}: no host. Fix: add host = \"...\" to {target.source}")
    transport = SSHTransport(target.name, target.host, target.user, target.port, target.connect_timeout)
    try:
        transport.open()
    except BaseException:
        transport.close()
        raise
    return Device(target, transport)


def holder_name(command: str) -> str:
    """Who holds a device lock, as another run will be told: user@host pid N (command)."""
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()} ({command})"


# Runs on the device's Python (any 3.x): the agent file's sha256, or "missing". No link is followed.
_SHA256 = ("import hashlib, os, sys\n"
           "try:\n"
           "    fd = os.open(sys.argv[1], os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0))\n"
           "except OSError:\n"
           "    print('missing')\n"
           "    sys.exit(0)\n"
           "h = hashlib.sha256()\n"
           "with os.fdopen(fd, 'rb') as fh:\n"
           "    for chunk in iter(lambda: fh.read(1 << 20), b''):\n"
           "        h.update(chunk)\n"
           "print(h.hexdigest())\n")

# Removes the files named on the command line, best effort (never through a link: unlink removes the link).
_REMOVE = "import os, sys\nfor p in sys.argv[1:]:\n    try:\n        os.unlink(p)\n    except OSError:\n        pass\n"


class Device:
    def __init__(self, target: Target, transport: Transport) -> None:
        self.target = target
        self.transport = transport
        self.python = default_python(target)
        _, digest = agent_zipapp()
        self.agent_path = remote_path(target.workdir, "agent", f"edgekit-agent-{digest[:16]}.pyz")
        self._agent_ready = False
        # One agent process per locked run (agent_session.py); EDGEKIT_AGENT_SESSION=0 runs one agent
        # process per command instead (debugging, and the fallback when a session cannot start).
        self.session_mode = os.environ.get("EDGEKIT_AGENT_SESSION", "1") != "0"
        self._session: AgentSession | None = None
        # Called as (file name, bytes sent, total bytes) during uploads (the CLI's progress display).
        self.on_upload: Callable[[str, int, int], None] | None = None

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ agent calls

    def ensure_agent(self) -> None:
        """Before the first agent command of a connection: the agent file on the device must hash to
        this host's agent (its name carries the hash; its bytes must too), else it is pushed again.
        Then this Python must run it."""
        if self._agent_ready:
            return
        _, digest = agent_zipapp()
        found = self._agent_digest()
        if found != digest:
            self._push_agent()  # missing, or damaged or replaced since an earlier run
            found = self._agent_digest()
            if found != digest:
                raise DeviceError(f"target {self.target.name}: the agent at {self.agent_path} hashes to "
                                  f"{found[:16] or 'nothing'} right after it was pushed, not {digest[:16]}. Fix: "
                                  f"check the device's disk and that nothing else writes under "
                                  f"{self.target.workdir}", kind="agent_crashed")
        done = self.transport.run([self.python, self.agent_path, "version"], timeout=60)
        if done.returncode != 0:
            self._check_python(done.stderr)
            raise DeviceError(f"target {self.target.name}: the agent does not start with {self.python} "
                              f"({_last_line(done.stderr) or 'no output'})", kind="agent_crashed")
        documents.validate("version", _parse(done.stdout), self.target.name)
        self._agent_ready = True

    def _agent_digest(self) -> str:
        """sha256 of the agent file on the device ('' when there is none), by the device's Python."""
        done = self.transport.run([self.python, "-c", _SHA256, self.agent_path], timeout=60)
        if done.returncode != 0:
            self._check_python(done.stderr)
            raise DeviceError(f"target {self.target.name}: {self.python} could not read {self.agent_path} "
                              f"({_last_line(done.stderr) or 'no output'})", kind="agent_crashed")
        found = done.stdout.strip()
        return found if len(found) == 64 else ""

    def _push_agent(self) -> None:
        data, _ = agent_zipapp()
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "edgekit-agent.pyz"
            local.write_bytes(data)
            self._put(str(local), self.agent_path, "the agent")

    def _check_python(self, agent_stderr: str) -> None:
        """Raise a clear error when the device's interpreter is missing or older than the agent needs."""
        where = self.target.source or "the target file"
        probe = self.transport.run([self.python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                                   timeout=30)
        found = probe.stdout.strip()
        if probe.returncode != 0 or not found:
            raise DeviceError(f"target {self.target.name}: no Python at {self.python!r} on the device "
                              f"({_last_line(probe.stderr) or 'no output'}). Fix: install python3 there or set "
                              f"python in {where} to its path", kind="python_unsupported")
        version = tuple(int(x) for x in found.split(".")[:2])
        if version < (3, 8):
            raise DeviceError(f"target {self.target.name}: {self.python} on the device is Python {found}; the "
                              f"agent needs Python >= 3.8. Fix: install a newer Python on the device (JetPack 4 "
                              f"ships 3.6: e.g. apt install python3.8) and set python in {where} to it",
                              kind="python_unsupported")

    def check_probe(self, probe: Probe) -> None:
        """Refuse to measure on a device that cannot run models at all (no numpy for the agent)."""
        if probe.numpy is None:
            version = probe.python or "?"
            raise DeviceError(f"target {self.target.name}: numpy is not installed for {self.python} (Python "
                              f"{version}) on the device; the agent needs it to run models. Fix: on the device run "
                              f"{self.python} -m pip install numpy, or set python in "
                              f"{self.target.source or 'the target file'} to an interpreter that has it",
                              kind="numpy_missing")

    @contextmanager
    def locked(self, holder: str, wait_s: float = 0.0) -> Iterator[dict[str, Any]]:
        """Hold the device's lock for the block: one benchmark or deployment at a time per device.

        The holder is an agent process on the device tied to this connection, so the lock dies
        with this run however it ends. In session mode that process is the agent session, which
        then answers every agent command of the block (one exec for the whole run).
        """
        pinned = getattr(self.transport, "pinned", None)
        if pinned is not None:
            self.transport.pinned = True  # no silent reconnect while the lock is held
        try:
            yield from self._locked(holder, wait_s)
        finally:
            if pinned is not None:
                self.transport.pinned = False

    def _locked(self, holder: str, wait_s: float) -> Iterator[dict[str, Any]]:
        if self.session_mode:
            started = self._start_session(holder, wait_s)
            if started is not None:
                try:
                    yield started
                finally:
                    session, self._session = self._session, None
                    if session is not None:
                        session.close()
                return
        self.ensure_agent()
        session = self.transport.spawn([self.python, self.agent_path, "lock", "--workdir", self.target.workdir,
                                        "--holder", holder, "--wait-s", str(wait_s)])
        try:
            doc = self._lock_answer(session, wait_s)
        except BaseException:
            session.close()
            raise
        try:
            yield doc
        finally:
            session.close()

    def _lock_answer(self, session: Any, wait_s: float) -> dict[str, Any]:
        doc = _parse(session.readline(timeout=wait_s + 60))
        if doc is None:
            raise DeviceError(f"target {self.target.name}: could not take the device lock "
                              f"({_last_line(session.stderr()) or 'no answer'})", kind="agent_crashed")
        return self._checked_lock(doc)

    def _start_session(self, holder: str, wait_s: float) -> dict[str, Any] | None:
        """Check the agent, start it as a session and take the lock, in one exec; push the agent
        first when it is missing or not this host's. None: no session started (an interpreter
        that cannot run it, say), so the caller takes the per-command path and its diagnostics."""
        _, digest = agent_zipapp()
        for attempt in range(2):
            session = self.transport.spawn([self.python, "-c", BOOT, self.agent_path, digest, "session",
                                            "--workdir", self.target.workdir, "--holder", holder,
                                            "--wait-s", str(wait_s), "--python", self.python])
            try:
                doc = _parse(session.readline(timeout=wait_s + 60))
                if doc is not None and doc.get("command") == "boot":
                    documents.validate("boot", doc, self.target.name)
                    session.close()
                    if attempt == 1:
                        found = doc.get("found") or "nothing"
                        raise DeviceError(f"target {self.target.name}: the agent at {self.agent_path} hashes to "
                                          f"{found[:16]} right after it was pushed, not {digest[:16]}. Fix: check "
                                          f"the device's disk and that nothing else writes under "
                                          f"{self.target.workdir}", kind="agent_crashed")
                    self._push_agent()
                    continue
                if doc is None:
                    session.close()
                    return None
                doc = self._checked_lock(doc)
            except BaseException:
                session.close()
                raise
            self._session = AgentSession(session, self.target.name)
            self._agent_ready = True
            return doc
        return None

    def _checked_lock(self, doc: dict[str, Any]) -> dict[str, Any]:
        documents.validate("lock", doc, self.target.name)
        if "error" in doc:
            kind, message = doc["error"].get("kind", "internal"), doc["error"].get("message", "")
            fix = FIXES.get(kind, "see the message")
            raise DeviceError(f"target {self.target.name}: {message}. Fix: {fix}", kind=kind)
        return doc

    def agent(self, *args: str, timeout: float = 120) -> dict[str, Any]:
        """The agent's answer to one command, checked (`documents.validate`) before anyone reads it,
        whether it came from the run's session or from an agent process of its own."""
        max_samples = _option_int(args, "--max-runs", documents.MAX_SAMPLES)
        limit = max(documents.MAX_STDOUT_BYTES, 40 * max_samples)
        if self._session is not None:
            done = self._session.call(args, timeout, limit)
        else:
            self.ensure_agent()
            argv = [self.python, self.agent_path, *args]
            if args[0] in CHILD_COMMANDS:  # killed on the device at `timeout`, before the host gives up
                argv[2:2] = ["within", f"--timeout-s={timeout:g}", "--"]
                timeout += REPLY_SLACK_S
            done = self.transport.run(argv, timeout=timeout)
        if len(done.stdout or "") > limit:
            raise DeviceError(f"target {self.target.name}: the agent's {args[0]} answer is "
                              f"{len(done.stdout) / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB a document may be; "
                              f"nothing from it was kept. Fix: {FIXES['bad_document']}", kind="bad_document")
        doc = _parse(done.stdout)
        if doc is None:
            raise DeviceError(f"target {self.target.name}: the agent exited {done.returncode} without a result "
                              f"({_last_line(done.stderr) or 'no output'})", kind="agent_crashed")
        documents.validate(args[0], doc, self.target.name, max_samples)
        if "error" in doc:
            kind, message = doc["error"].get("kind", "internal"), (doc["error"].get("message") or "")[:500]
            fix = FIXES.get(kind)
            raise DeviceError(f"target {self.target.name}: {message}" + (f". Fix: {fix}" if fix else ""), kind=kind)
        return doc

    def probe(self) -> Probe:
        """The device's probe, checked (`documents.validate`) and read into a `Probe`."""
        args = ["probe"] + (["--root", self.target.sensor_root] if self.target.sensor_root else [])
        return Probe.from_dict(self.agent(*args, timeout=60))

    def push(self, variant: Variant, force: bool = False) -> str:
        """The artifact's path on the device, uploading only when it is not there yet.

        An upload goes to a temporary name and the agent renames it into place only once its
        sha256 matches. Whether a present file is still intact is checked by every agent command
        that uses it; on `artifact_corrupt` the callers below push again once (`force`).
        """
        remote = remote_path(self.target.workdir, "artifacts", variant.sha256, variant.file)
        if not force and self.transport.exists(remote):
            return remote
        for attempt in range(2):
            # named by the content, so a cut-off upload's `.part` is continued by the next run
            upload = remote_path(self.target.workdir, "artifacts", variant.sha256,
                                 f".{variant.file}.upload-{variant.sha256[:16]}")
            self._put(variant.path, upload, variant.file)
            try:
                self.agent("accept", "--source", upload, "--dest", remote, "--sha256", variant.sha256)
                return remote
            except DeviceError as exc:
                if exc.kind != "artifact_corrupt" or attempt == 1:
                    raise
        return remote

    def _with_artifact(self, variant: Variant, remote: str, call: Callable[[str], Any]) -> Any:
        """Run `call(remote)`; if the device copy turns out corrupt or gone, push it again once."""
        canonical = remote_path(self.target.workdir, "artifacts", variant.sha256, variant.file)
        try:
            return call(remote)
        except DeviceError as exc:
            # Only the pushed copy is replaced; a damaged installed copy must fail loudly instead.
            if exc.kind not in ("artifact_corrupt", "artifact_missing") or remote != canonical:
                raise
        return call(self.push(variant, force=True))

    def bench(self, variant: Variant, remote: str, settings: BenchSettings,
              inputs: str | None = None) -> dict[str, Any]:
        """`inputs`: a pushed feeds file (`push_inputs`); without it the agent generates inputs."""
        return self._with_artifact(variant, remote, lambda path: self.agent(
            *self.bench_request(variant, path, settings, inputs).to_argv(),
            timeout=2 * settings.max_s + 120 + (300 if settings.cooldown_c is not None else 0)))

    def bench_request(self, variant: Variant, path: str, settings: BenchSettings,
                      inputs: str | None = None) -> BenchRequest:
        """The profile's bench settings with this target's sensor root and power sensor."""
        return BenchRequest(
            artifact=path, runtime=variant.runtime, sha256=variant.sha256, inputs=inputs or None,
            warmup_s=settings.warmup_s, min_runs=settings.min_runs, min_s=settings.min_s, max_s=settings.max_s,
            threads=settings.threads, max_runs=settings.max_runs, root=self.target.sensor_root or "/",
            power=settings.power if settings.power != "auto" else (self.target.power or "auto"),
            cooldown_c=settings.cooldown_c, rate_hz=settings.rate_hz or None)

    def _put(self, local: str, remote: str, label: str) -> None:
        """An upload, reported to `on_upload` as it goes (a 14 MB model takes minutes at 1 Mbit/s)."""
        report = self.on_upload
        self.transport.put(local, remote, None if report is None else lambda sent, total: report(label, sent, total))

    def push_inputs(self, feeds: dict[str, np.ndarray]) -> str:
        """One call's feeds as a content-addressed .npz on the device: what `bench` times the model on."""
        return self._push_arrays({name: np.asarray(v)[None] for name, v in feeds.items()}, "bench inputs")

    def _push_arrays(self, arrays: dict[str, np.ndarray], label: str) -> str:
        """Arrays as a .npz on the device named by its sha256, pushed only when that name is not
        there yet and verified by the agent (`accept`) like an artifact: the same evaluation
        samples cross the link once per device, however many runs, variants and smoke tests use
        them. The file's bytes depend on the arrays only (`npz_bytes`), so the name is stable."""
        import hashlib

        data = npz_bytes(arrays)
        digest = hashlib.sha256(data).hexdigest()
        remote = remote_path(self.target.workdir, "inputs", f"{digest[:32]}.npz")
        if self.transport.exists(remote):
            return remote
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "inputs.npz"
            local.write_bytes(data)
            upload = remote_path(self.target.workdir, "inputs", f".upload-{digest[:16]}.npz")
            self._put(str(local), upload, label)
            self.agent("accept", "--source", upload, "--dest", remote, "--sha256", digest)
        return remote

    def run(self, variant: Variant, remote: str, batches: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        """Every output of the artifact for each call, computed on the device: one array per output,
        stacked over calls. What comes back is checked before it is used: one array per output
        index, one entry per call, numbers only. The inputs are content-addressed (pushed once per
        device); the outputs file is removed once fetched."""
        stacked = {name: np.stack([b[name] for b in batches]) for name in batches[0]}
        remote_in = self._push_arrays(stacked, "evaluation samples")
        tag = f"{variant.sha256[:12]}-{secrets.token_hex(8)}"
        remote_out = remote_path(self.target.workdir, "tmp", f"out-{tag}.npz")
        with tempfile.TemporaryDirectory() as tmp:
            local_out = Path(tmp) / "out.npz"
            try:
                self._with_artifact(variant, remote, lambda path: self.agent(
                    "run", "--artifact", path, "--runtime", variant.runtime, "--sha256", variant.sha256,
                    "--inputs", remote_in, "--outputs", remote_out, timeout=600))
                self.transport.get(remote_out, str(local_out))
            finally:
                self._remove(remote_out)
            return _device_outputs(local_out, len(batches), self.target.name)

    def _remove(self, *remote: str) -> None:
        """Delete scratch files on the device, best effort: a failure here must not hide the result
        or the error of the command they served."""
        try:
            if self._session is not None:
                self.agent("remove", "--workdir", self.target.workdir, *remote, timeout=30)
            else:
                self.transport.run([self.python, "-c", _REMOVE, *remote], timeout=30)
        except Exception:
            pass

    def install(self, model: str, variant: Variant, remote: str) -> dict[str, Any]:
        """Stage `variant` as a deployment of `model`: the name being deployed, which need not be
        the one the cached artifact was first built under (the cache is keyed by content)."""
        meta = json.dumps({"recipe": variant.recipe, "format": variant.format, "precision": variant.precision,
                           "runtime": variant.runtime, "inputs": variant.inputs})
        return self._with_artifact(variant, remote, lambda path: self.agent(
            "install", "--workdir", self.target.workdir, "--model", model, "--variant", variant.id,
            "--artifact", path, "--sha256", variant.sha256, "--meta", meta))

    def activate(self, model: str, variant_id: str) -> dict[str, Any]:
        return self.agent("activate", "--workdir", self.target.workdir, "--model", model, "--variant", variant_id)

    def rollback(self, model: str) -> dict[str, Any]:
        return self.agent("rollback", "--workdir", self.target.workdir, "--model", model)

    def gc(self, keep_days: float, dry_run: bool = False) -> dict[str, Any]:
        """The agent's `gc` (edgekit/agent/gc.py); call it holding the lock."""
        return self.agent("gc", "--workdir", self.target.workdir, f"--keep-days={keep_days:g}",
                          *(["--dry-run"] if dry_run else []), timeout=300)

    def status(self, model: str | None = None) -> dict[str, Any]:
        args = ["status", "--workdir", self.target.workdir] + (["--model", model] if model else [])
        return self.agent(*args)


def capability_warnings(target: Target, probe: Probe) -> list[str]:
    """What the device is missing compared with its target file, plus the agent's own warnings."""
    warnings = list(probe.warnings)
    arch = probe.arch
    if target.arch and arch and target.arch != arch:
        warnings.append(f"expected arch {target.arch}, the device is {arch}")
    found = probe.runtimes
    for runtime in target.runtimes:
        if runtime not in found:
            warnings.append(f"runtime {runtime} is listed in {target.source or 'the target'} but not installed: "
                            f"its recipes will be skipped")
        elif "error" in found[runtime]:
            warnings.append(f"runtime {runtime} is installed but does not import: {found[runtime]['error']}")
    if not found:
        warnings.append("no inference runtime found: install onnxruntime or ai-edge-litert for this Python")
    return warnings


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A .npz (what np.load reads) whose bytes depend on the arrays only: np.savez stamps each
    member with the current time, so the same samples would hash differently every second."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(arrays[name]), allow_pickle=False)
    return buffer.getvalue()


def _device_outputs(path: Path, calls: int, target: str) -> list[np.ndarray]:
    """The `run` command's outputs file, checked: output_0..output_K-1, each [calls, ...], numeric."""
    def bad(problem: str) -> DeviceError:
        return DeviceError(f"target {target}: the device's outputs are not usable ({problem}). Fix: run again; "
                           f"if it persists, the runtime on the device is broken", kind="bad_output")

    try:
        with np.load(path, allow_pickle=False) as out:
            arrays = {k: out[k] for k in out.files}
    except Exception as exc:
        raise bad(f"unreadable outputs file: {_last_line(str(exc))}") from None
    names = [f"output_{j}" for j in range(len(arrays))]
    if not arrays or sorted(arrays) != sorted(names):
        raise bad(f"unexpected arrays {sorted(arrays)[:5]}")
    result = []
    for name in names:
        a = arrays[name]
        if a.dtype.kind not in "biuf" or a.ndim < 1 or len(a) != calls:
            raise bad(f"{name} is {a.dtype} of shape {list(a.shape)} for {calls} calls")
        result.append(a.astype(np.float32) if a.dtype.kind == "f" else a)
    return result


def _parse(stdout: str) -> dict[str, Any] | None:
    """The last line that is an agent document (a JSON object with a schema); its schema is
    checked by `documents.validate`, so another version's answer is refused, not ignored."""
    for line in reversed((stdout or "").strip().splitlines()):
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
            continue
        if isinstance(doc, dict) and "schema" in doc:
            return doc
    return None


def _option_int(args: tuple[str, ...], option: str, default: int) -> int:
    """The integer given for `option` in an agent command line (what the host asked for), written
    `--opt N` or `--opt=N`."""
    for i, arg in enumerate(args):
        value = args[i + 1] if arg == option and i + 1 < len(args) else \
            arg[len(option) + 1:] if arg.startswith(option + "=") else None
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return default
    return default


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
